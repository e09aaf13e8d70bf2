"""Named model presets and the factories that build captioners and classifiers from them.

A preset pairs an ``EncoderConfig`` with a ``DecoderConfig``. Factories take a preset name plus overrides: a dict
replaces single fields of the preset's config, a config object replaces it whole. No preset downloads weights;
pass ``encoder={"pretrained": True}`` (online) or ``{"checkpoint_path": ...}`` for that.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from vitcap.layers.attention import CrossAttentionKind
from vitcap.layers.mlp import Act
from vitcap.models.captioner import Captioner
from vitcap.models.classifier import Classifier
from vitcap.models.decoder import PosEmbedKind, TextDecoder
from vitcap.models.encoders import CNNEncoder, Encoder, ViTEncoder

__all__ = ["PRESETS", "DecoderConfig", "EncoderConfig", "Preset", "create_captioner", "create_classifier"]


@dataclass
class EncoderConfig:
    """What ``ViTEncoder`` / ``CNNEncoder`` take; None keeps the timm model's own default.

    ``patch_size``, ``depth``, ``num_heads``, ``drop_path_rate``, ``stem`` and ``stem_depth`` are ViT-only; ``source`` and ``out_index`` are
    CNN-only. For a CNN, ``embed_dim`` is the token projection width and None means the decoder's width.
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
            )
        if self.kind == "cnn":
            vit_only = {"patch_size": self.patch_size, "depth": self.depth, "num_heads": self.num_heads}
            if (
                any(v is not None for v in vit_only.values())
                or self.drop_path_rate
                or self.stem != "patch"
                or self.stem_depth != 1
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
    dropout: float = 0.0
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

_Config = TypeVar("_Config", EncoderConfig, DecoderConfig)


def _preset(name: str | None) -> Preset:
    if name is None:
        return Preset(EncoderConfig(), DecoderConfig())
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; known presets: {', '.join(PRESETS)}")
    return PRESETS[name]


def _override(base: _Config, overrides: _Config | dict[str, Any] | None, what: str) -> _Config:
    if overrides is None:
        return base
    if isinstance(overrides, type(base)):
        return overrides
    if not isinstance(overrides, dict):
        raise ValueError(f"{what} overrides must be a dict or {type(base).__name__}, got {type(overrides).__name__}")
    known = {f.name for f in dataclasses.fields(base)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"unknown {what} settings {unknown}; expected some of {sorted(known)}")
    return dataclasses.replace(base, **overrides)


def create_captioner(
    preset: str | None = None,
    *,
    vocab_size: int,
    encoder: EncoderConfig | dict[str, Any] | None = None,
    decoder: DecoderConfig | dict[str, Any] | None = None,
    pad_id: int = 0,
) -> Captioner:
    """Build a ``Captioner`` from a preset (None: the config defaults) and overrides.

    Args:
        preset: A key of ``PRESETS`` or None.
        vocab_size: Vocabulary size V.
        encoder: Field overrides (dict) or a whole ``EncoderConfig``.
        decoder: Field overrides (dict) or a whole ``DecoderConfig``.
        pad_id: Padding token id.
    """
    base = _preset(preset)
    enc_cfg = _override(base.encoder, encoder, "encoder")
    dec_cfg = _override(base.decoder, decoder, "decoder")
    return Captioner(enc_cfg.build(default_embed_dim=dec_cfg.embed_dim), dec_cfg.build(vocab_size, pad_id))


def create_classifier(
    preset: str | None = None,
    *,
    num_classes: int,
    encoder: EncoderConfig | dict[str, Any] | None = None,
    pool: Literal["token", "mean"] = "token",
    drop_rate: float = 0.0,
) -> Classifier:
    """Build a ``Classifier`` from a preset's encoder (None: the config defaults) and overrides.

    Args:
        preset: A key of ``PRESETS`` or None.
        num_classes: Number of classes.
        encoder: Field overrides (dict) or a whole ``EncoderConfig``.
        pool: ``"token"`` (class token) or ``"mean"``.
        drop_rate: Dropout before the head.
    """
    base = _preset(preset)
    enc_cfg = _override(base.encoder, encoder, "encoder")
    return Classifier(enc_cfg.build(default_embed_dim=base.decoder.embed_dim), num_classes, pool, drop_rate)
