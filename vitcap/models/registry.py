"""Named model presets and the factories that build captioners and classifiers from them.

A preset pairs an ``EncoderConfig`` with a ``DecoderConfig``. Factories take a preset name plus overrides: a dict
replaces single fields of the preset's config, a config object replaces it whole. No preset downloads weights;
pass ``encoder={"pretrained": True}`` (online) or ``{"checkpoint_path": ...}`` for that.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from torch import nn

from vitcap.errors import ConfigError
from vitcap.layers.cross_attention import CrossAttentionKind
from vitcap.layers.mlp import Act
from vitcap.models.captioner import Captioner
from vitcap.models.classifier import Classifier
from vitcap.models.decoder import PosEmbedKind, TextDecoder
from vitcap.models.encoders import CNNEncoder, Encoder, ViTEncoder
from vitcap.models.joint import JointModel
from vitcap.overrides import apply_overrides, overrides_of

__all__ = [
    "PRESETS",
    "DecoderConfig",
    "DecoderOverrides",
    "EncoderConfig",
    "EncoderOverrides",
    "ModelSpec",
    "Preset",
    "create_captioner",
    "create_classifier",
    "resolve_configs",
]


@dataclass
class EncoderConfig:
    """What ``ViTEncoder`` / ``CNNEncoder`` take; None keeps the timm model's own default.

    ``patch_size``, ``depth``, ``num_heads``, ``drop_path_rate``, ``stem``, ``stem_depth`` and ``pos_embed`` are
    ViT-only; ``source`` and ``out_index`` are CNN-only. For a CNN, ``embed_dim`` is the token projection width and
    None means the decoder's width. ``model_kwargs`` are further constructor arguments of the timm (or torchvision)
    model, e.g. ``{"layers": [1, 1, 1, 1]}`` for a ResNet with one block per stage; checkpoints store them.
    """

    kind: Literal["vit", "cnn"] = "vit"
    model_name: str = "vit_tiny_patch16_224"
    img_size: int | None = None
    patch_size: int | None = None
    embed_dim: int | None = None
    depth: int | None = None
    num_heads: int | None = None
    in_chans: int = 3
    pretrained: bool = False
    checkpoint_path: str | None = None
    drop_path_rate: float = 0.0
    source: Literal["timm", "torchvision"] = "timm"
    out_index: int = -1
    stem: Literal["patch", "conv"] = "patch"
    stem_depth: int = 1
    pos_embed: Literal["learned", "sincos"] = "learned"
    model_kwargs: dict[str, Any] | None = None

    def build(self, default_embed_dim: int = 256) -> Encoder:
        """Build the encoder; ``default_embed_dim`` is the CNN token width when ``embed_dim`` is None."""
        if self.kind == "vit":
            return ViTEncoder(
                model_name=self.model_name,
                img_size=self.img_size,
                patch_size=self.patch_size,
                embed_dim=self.embed_dim,
                depth=self.depth,
                num_heads=self.num_heads,
                in_chans=self.in_chans,
                pretrained=self.pretrained,
                checkpoint_path=self.checkpoint_path,
                drop_path_rate=self.drop_path_rate,
                stem=self.stem,
                stem_depth=self.stem_depth,
                pos_embed=self.pos_embed,
                model_kwargs=self.model_kwargs,
            )
        if self.kind == "cnn":
            vit_only = {"patch_size": self.patch_size, "depth": self.depth, "num_heads": self.num_heads}
            if (
                any(v is not None for v in vit_only.values())
                or self.drop_path_rate
                or self.stem != "patch"
                or self.stem_depth != 1
                or self.pos_embed != "learned"
            ):
                raise ValueError(f"encoder kind 'cnn' does not take the ViT-only settings {vit_only}")
            return CNNEncoder(
                model_name=self.model_name,
                embed_dim=self.embed_dim or default_embed_dim,
                pretrained=self.pretrained,
                checkpoint_path=self.checkpoint_path,
                in_chans=self.in_chans,
                source=self.source,
                out_index=self.out_index,
                img_size=self.img_size,
                model_kwargs=self.model_kwargs,
            )
        raise ValueError(f"unknown encoder kind {self.kind!r}; expected 'vit' or 'cnn'")


@dataclass
class DecoderConfig:
    """What ``TextDecoder`` takes, apart from the vocabulary (which comes from the tokenizer)."""

    embed_dim: int = 256
    depth: int = 4
    num_heads: int = 4
    mlp_ratio: float = 4.0
    max_len: int = 64
    pos_embed: PosEmbedKind = "sinusoidal"
    norm_first: bool = True
    dropout: float = 0.0  # embeddings, residual branches and MLP (see TextDecoder)
    attn_drop: float = 0.0  # attention probabilities
    cross_attn: CrossAttentionKind = "scaled_dot"
    tie_weights: bool = True
    act: Act = "gelu"

    def build(self, vocab_size: int, pad_id: int = 0) -> TextDecoder:
        """Build the decoder for a vocabulary of ``vocab_size`` tokens."""
        return TextDecoder(vocab_size=vocab_size, pad_id=pad_id, **dataclasses.asdict(self))


@dataclass
class Preset:
    """A named encoder + decoder pair."""

    encoder: EncoderConfig
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    description: str = ""


PRESETS: dict[str, Preset] = {
    "toy": Preset(
        EncoderConfig(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2),
        DecoderConfig(embed_dim=32, depth=2, num_heads=2, max_len=32),
        "tests: 32-px images, width 32, depth 2",
    ),
    "tiny": Preset(
        EncoderConfig(img_size=64, patch_size=8, embed_dim=128, depth=3, num_heads=4),
        DecoderConfig(embed_dim=128, depth=2, num_heads=4, max_len=40),
        "CPU demo: ViT on 64-px images (8 x 8 patches of 8 px), width 128",
    ),
    "cnn-tiny": Preset(
        # Stage 3 of resnet18 (stride 16) gives a 4 x 4 grid at 64 px; the last stage would give 2 x 2.
        EncoderConfig(kind="cnn", model_name="resnet18", img_size=64, embed_dim=128, out_index=3),
        DecoderConfig(embed_dim=128, depth=2, num_heads=4, max_len=40),
        "CPU demo: resnet18 up to layer3 on 64-px images, width 128",
    ),
    "vit-t16": Preset(
        EncoderConfig(model_name="vit_tiny_patch16_224"),
        DecoderConfig(embed_dim=192, depth=4, num_heads=3),
        "timm ViT-Ti/16 at 224 px",
    ),
    "vit-s16": Preset(
        EncoderConfig(model_name="vit_small_patch16_224"),
        DecoderConfig(embed_dim=384, depth=4, num_heads=6),
        "timm ViT-S/16 at 224 px",
    ),
    "vit-b16": Preset(
        EncoderConfig(model_name="vit_base_patch16_224"),
        DecoderConfig(embed_dim=512, depth=6, num_heads=8),
        "timm ViT-B/16 at 224 px",
    ),
    "resnet50": Preset(
        EncoderConfig(kind="cnn", model_name="resnet50", img_size=224),
        DecoderConfig(embed_dim=512, depth=4, num_heads=8),
        "timm ResNet-50, 7 x 7 grid at 224 px",
    ),
}


EncoderOverrides = overrides_of(
    EncoderConfig,
    "EncoderOverrides",
    "Encoder settings that replace the preset's; every field is an `EncoderConfig` field, None keeps the preset's.",
    __name__,
)
DecoderOverrides = overrides_of(
    DecoderConfig,
    "DecoderOverrides",
    "Decoder settings that replace the preset's; every field is a `DecoderConfig` field, None keeps the preset's.",
    __name__,
)


def _preset(name: str | None) -> Preset:
    if name is None:
        return Preset(EncoderConfig(), DecoderConfig())
    if name not in PRESETS:
        raise ConfigError(f"unknown model preset {name!r}; known presets: {', '.join(PRESETS)}", key="model.preset")
    return PRESETS[name]


def resolve_configs(
    preset: str | None, encoder: Any = None, decoder: Any = None
) -> tuple[EncoderConfig, DecoderConfig]:
    """The preset's encoder and decoder configs with `encoder` / `decoder` overrides applied.

    Overrides are `EncoderOverrides` / `DecoderOverrides`, a dict of fields, or a whole config.
    """
    base = _preset(preset)
    return apply_overrides(base.encoder, encoder, "model.encoder"), apply_overrides(
        base.decoder, decoder, "model.decoder"
    )


@dataclass
class ModelSpec:
    """A model with every setting resolved: what checkpoints store and `build` turns into a fresh model.

    Attributes:
        kind: "captioner", "classifier" or "joint" (a captioner with a classification head on its encoder).
        encoder: The encoder settings.
        decoder: The decoder settings (captioners, joint).
        vocab_size: Vocabulary size V (captioners, joint; from the tokenizer).
        pad_id: Padding id (captioners, joint; from the tokenizer).
        num_classes: Number of classes (classifiers, joint).
        pool: "token" or "mean" (classifiers, joint).
        drop_rate: Dropout before the classification head.
    """

    kind: Literal["captioner", "classifier", "joint"]
    encoder: EncoderConfig
    decoder: DecoderConfig | None = None
    vocab_size: int = 0
    pad_id: int = 0
    num_classes: int = 0
    pool: Literal["token", "mean"] = "token"
    drop_rate: float = 0.0

    def build(self, weights_from_source: bool = True) -> nn.Module:
        """A new `Captioner` / `Classifier` / `JointModel`, randomly initialised (or with the encoder's pretrained weights).

        Args:
            weights_from_source: Load `encoder.pretrained` / `encoder.checkpoint_path` weights. Off when the
                weights come from a vitcap checkpoint anyway (nothing is downloaded or read for nothing).
        """
        encoder = self.encoder
        if not weights_from_source:
            encoder = dataclasses.replace(encoder, pretrained=False, checkpoint_path=None)
        if self.kind in ("captioner", "joint"):
            decoder = self.decoder or DecoderConfig()
            if self.vocab_size <= 0:
                raise ConfigError("a captioner needs a positive vocabulary size (link a caption data module)")
            enc, dec = encoder.build(default_embed_dim=decoder.embed_dim), decoder.build(self.vocab_size, self.pad_id)
            if self.kind == "captioner":
                return Captioner(enc, dec)
            if self.num_classes < 2:
                raise ConfigError("a joint model needs at least 2 classes (a data module with class labels)")
            return JointModel(enc, dec, self.num_classes, self.pool, self.drop_rate)
        if self.kind == "classifier":
            if self.num_classes < 2:
                raise ConfigError("a classifier needs at least 2 classes (link a classification data module)")
            default = (self.decoder or DecoderConfig()).embed_dim
            return Classifier(encoder.build(default_embed_dim=default), self.num_classes, self.pool, self.drop_rate)
        raise ConfigError(f"unknown model kind {self.kind!r}; expected 'captioner', 'classifier' or 'joint'")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpec:
        data = dict(data)
        encoder = EncoderConfig(**data.pop("encoder"))
        decoder = data.pop("decoder", None)
        return cls(encoder=encoder, decoder=DecoderConfig(**decoder) if decoder else None, **data)


def create_captioner(
    preset: str | None = None,
    *,
    vocab_size: int,
    encoder: Any = None,
    decoder: Any = None,
    pad_id: int = 0,
) -> Captioner:
    """Build a ``Captioner`` from a preset (None: the config defaults) and overrides.

    Args:
        preset: A key of ``PRESETS`` or None.
        vocab_size: Vocabulary size V.
        encoder: Field overrides (``EncoderOverrides`` or dict) or a whole ``EncoderConfig``.
        decoder: Field overrides (``DecoderOverrides`` or dict) or a whole ``DecoderConfig``.
        pad_id: Padding token id.
    """
    enc_cfg, dec_cfg = resolve_configs(preset, encoder, decoder)
    return ModelSpec("captioner", enc_cfg, dec_cfg, vocab_size=vocab_size, pad_id=pad_id).build()


def create_classifier(
    preset: str | None = None,
    *,
    num_classes: int,
    encoder: Any = None,
    pool: Literal["token", "mean"] = "token",
    drop_rate: float = 0.0,
) -> Classifier:
    """Build a ``Classifier`` from a preset's encoder (None: the config defaults) and overrides.

    Args:
        preset: A key of ``PRESETS`` or None.
        num_classes: Number of classes.
        encoder: Field overrides (``EncoderOverrides`` or dict) or a whole ``EncoderConfig``.
        pool: ``"token"`` (class token) or ``"mean"``.
        drop_rate: Dropout before the head.
    """
    enc_cfg, dec_cfg = resolve_configs(preset, encoder)
    return ModelSpec("classifier", enc_cfg, dec_cfg, num_classes=num_classes, pool=pool, drop_rate=drop_rate).build()
