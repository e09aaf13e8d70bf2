"""Image encoders behind one contract: images ``(B, C, H, W)`` -> tokens ``(B, N, D)``.

``ViTEncoder`` wraps a timm vision transformer; ``CNNEncoder`` turns the last feature map of a timm or torchvision
CNN into tokens. Both expose ``embed_dim``, ``num_prefix_tokens`` (class/register tokens at the front of the
sequence; 0 for a CNN) and ``grid_size`` (h, w of the spatial tokens, for attention maps).
"""

from __future__ import annotations

import math
import os
from collections import OrderedDict
from typing import Any, Literal

import timm
import torch
from timm.layers import resample_abs_pos_embed
from timm.models import adapt_input_conv
from timm.models import load_state_dict as timm_load_state_dict
from torch import Tensor, nn

from vitcap.layers.pos_embed import build_2d_sincos

__all__ = ["CNNEncoder", "Encoder", "ViTEncoder", "build_encoder", "load_checkpoint_state"]

# Classifier parameter prefixes of timm / torchvision models; a headless encoder drops them from checkpoints.
_HEAD_PREFIXES = ("head.", "head_dist.", "fc.", "classifier.", "last_linear.")


class Encoder(nn.Module):
    """The encoder contract; subclasses set the attributes and implement ``forward_features``.

    Attributes:
        embed_dim: Token width D.
        num_prefix_tokens: Non-spatial tokens (class, register) at the front of the sequence.
        grid_size: ``(h, w)`` of the spatial tokens, in row-major order after the prefix tokens.
    """

    embed_dim: int
    num_prefix_tokens: int
    grid_size: tuple[int, int]

    def forward_features(self, images: Tensor) -> Tensor:
        """Map images ``(B, C, H, W)`` to tokens ``(B, N, D)``."""
        raise NotImplementedError

    def forward(self, images: Tensor) -> Tensor:
        """Same as ``forward_features``."""
        return self.forward_features(images)


def _merge_model_kwargs(fixed: dict[str, Any], model_kwargs: dict[str, Any] | None) -> dict[str, Any]:
    """``fixed`` (what the encoder sets itself) plus the user's extra constructor arguments, which may not overlap."""
    extra = dict(model_kwargs or {})
    clash = sorted(set(extra) & set(fixed))
    if clash:
        raise ValueError(
            f"encoder model_kwargs may not set {clash}: the encoder sets them itself "
            "(use the encoder's own settings, e.g. encoder.img_size, encoder.in_chans)"
        )
    return {**fixed, **extra}


def _create_timm_model(model_name: str, **kwargs: Any) -> nn.Module:
    if not timm.is_model(model_name):
        raise ValueError(f"timm does not know the model {model_name!r}; list candidates with timm.list_models('vit*')")
    try:
        return timm.create_model(model_name, **kwargs)
    except TypeError as e:  # an override the architecture does not take, e.g. patch_size on a ResNet
        raise ValueError(f"timm model {model_name!r} does not accept the arguments {sorted(kwargs)}: {e}") from e
    except (OSError, RuntimeError) as e:  # download failures when pretrained=True, e.g. offline
        if kwargs.get("pretrained"):
            raise RuntimeError(
                f"could not get pretrained weights for {model_name!r} ({e}); "
                "download them while online, or pass checkpoint_path to a local file"
            ) from e
        raise


def load_checkpoint_state(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """Read a state dict from a ``.pth``/``.pt``/``.bin`` or ``.safetensors`` file.

    Training checkpoints holding ``state_dict`` or ``model`` are unwrapped and a DataParallel ``module.`` prefix is
    stripped (timm's loader).

    Raises:
        FileNotFoundError: If ``path`` is not a file.
        ValueError: If the file cannot be read as a state dict.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    try:
        # use_ema=False: load the weights that were trained, not an EMA copy that may sit beside them.
        state = timm_load_state_dict(path, use_ema=False)
    except Exception as e:  # pickle, zip and safetensors raise unrelated exception types for a bad file
        raise ValueError(f"could not read checkpoint {path}: {e}") from e
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"checkpoint {path} does not hold a state dict of tensors")
    return state


def _fit_state_dict(model: nn.Module, state: dict[str, Tensor], path: str, model_name: str) -> None:
    own = model.state_dict()
    # A whole ``ViTEncoder``/``CNNEncoder`` saved with ``state_dict()`` carries the wrapper's ``model.`` prefix.
    if state and all(k.startswith("model.") for k in state) and not any(k in own for k in state):
        state = {k.removeprefix("model."): v for k, v in state.items()}
    state = {k: v for k, v in state.items() if k in own or not k.startswith(_HEAD_PREFIXES)}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ValueError(f"checkpoint {path} does not fit the model {model_name!r}: {e}") from e


class ViTEncoder(Encoder):
    """A timm vision transformer returning its whole token sequence (prefix tokens included).

    Arguments left None keep the preset of ``model_name``. A new ``img_size`` resamples pretrained position
    embeddings (timm does this for downloads; this class for ``checkpoint_path``).

    Args:
        model_name: timm model name, e.g. ``"vit_tiny_patch16_224"``.
        img_size: Input resolution.
        patch_size: Patch size.
        embed_dim: Token width D.
        depth: Number of blocks.
        num_heads: Attention heads.
        in_chans: Input channels.
        pretrained: Download timm's pretrained weights by name (needs network) unless ``checkpoint_path`` is set.
        checkpoint_path: Local weights file (timm checkpoint, with or without its classifier head).
        drop_path_rate: Stochastic depth rate.
        stem: ``"patch"`` (the standard linear patch embedding) or ``"conv"``: stride-2 3x3 convolutions down to the
            patch grid, then a 1x1 projection (Xiao et al. 2021, "Early convolutions help transformers see
            better"): the same tokens, but faster and steadier optimisation from scratch on small data. Replaces
            only ``patch_embed.proj``; pretrained patch-embedding weights do not apply to it.
        stem_depth: 3x3 convolutions per stage of the conv stem: 1 is Xiao et al.'s stem; more add stride-1
            convolutions (see ``conv_stem``): local features that a ViT from scratch on small data learns slowly.
        pos_embed: ``"learned"`` (timm's position embedding, a parameter) or ``"sincos"``: fixed 2-D sin-cos
            positions of the patch grid (MAE; Beyer et al. 2022, "Better plain ViT baselines"), a buffer that no
            optimiser or unfreezing touches; prefix tokens get zeros. From scratch on small data, tokens then
            know where they are from the first step, which captions that name positions need.
        model_kwargs: More keyword arguments for ``timm.create_model`` (e.g. ``{"qk_norm": True}``,
            ``{"reg_tokens": 4}``); the arguments above may not be repeated here.
    """

    def __init__(
        self,
        model_name: str = "vit_tiny_patch16_224",
        img_size: int | tuple[int, int] | None = None,
        patch_size: int | None = None,
        embed_dim: int | None = None,
        depth: int | None = None,
        num_heads: int | None = None,
        in_chans: int = 3,
        pretrained: bool = False,
        checkpoint_path: str | None = None,
        drop_path_rate: float = 0.0,
        stem: Literal["patch", "conv"] = "patch",
        stem_depth: int = 1,
        pos_embed: Literal["learned", "sincos"] = "learned",
        model_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if pos_embed not in ("learned", "sincos"):
            raise ValueError(f"encoder pos_embed must be 'learned' or 'sincos', got {pos_embed!r}")
        if stem not in ("patch", "conv"):
            raise ValueError(f"encoder stem must be 'patch' or 'conv', got {stem!r}")
        if stem_depth != 1 and stem != "conv":
            raise ValueError(f"encoder stem_depth={stem_depth} needs stem='conv'")
        overrides = {
            "img_size": img_size,
            "patch_size": patch_size,
            "embed_dim": embed_dim,
            "depth": depth,
            "num_heads": num_heads,
        }
        self.model_name = model_name
        fixed = {
            "pretrained": pretrained and checkpoint_path is None,
            "num_classes": 0,
            "in_chans": in_chans,
            "drop_path_rate": drop_path_rate,
            **{k: v for k, v in overrides.items() if v is not None},
        }
        self.model = _create_timm_model(model_name, **_merge_model_kwargs(fixed, model_kwargs))
        if not hasattr(self.model, "patch_embed") or not hasattr(self.model, "num_prefix_tokens"):
            raise ValueError(f"timm model {model_name!r} is not a vision transformer; use CNNEncoder for CNNs")
        if stem == "conv":
            patch = self.model.patch_embed.patch_size
            if patch[0] != patch[1]:
                raise ValueError(f"the conv stem needs square patches, got {tuple(patch)}")
            self.model.patch_embed.proj = conv_stem(in_chans, self.model.embed_dim, patch[0], stem_depth)
            # Channels-last, the layout oneDNN's CPU convolutions prefer; the tokens are the same.
            self.model.patch_embed.proj.to(memory_format=torch.channels_last)
        self.stem = stem
        if pos_embed == "sincos":
            self._fix_sincos_positions()
        if checkpoint_path is not None:
            self.load_checkpoint(checkpoint_path)
        self.embed_dim = self.model.embed_dim
        self.num_prefix_tokens = self.model.num_prefix_tokens
        self.grid_size = tuple(self.model.patch_embed.grid_size)

    def _fix_sincos_positions(self) -> None:
        """Replace timm's learned ``pos_embed`` parameter by a buffer of 2-D sin-cos positions (same key, same shape)."""
        learned = getattr(self.model, "pos_embed", None)
        if learned is None:
            raise ValueError(f"timm model {self.model_name!r} has no absolute position embedding to fix")
        h, w = self.model.patch_embed.grid_size
        grid = build_2d_sincos(h, w, self.model.embed_dim).to(learned.dtype)  # (h * w, D)
        prefix = learned.shape[1] - h * w  # class/register tokens inside pos_embed (0 with no_embed_class)
        fixed = torch.cat([grid.new_zeros(prefix, grid.shape[1]), grid]).unsqueeze(0)
        del self.model.pos_embed
        self.model.register_buffer("pos_embed", fixed)

    def load_checkpoint(self, path: str | os.PathLike[str]) -> None:
        """Load timm ViT weights from a local file, resampling ``pos_embed`` to this model's patch grid."""
        state = load_checkpoint_state(path)
        pos_embed = state.get("pos_embed")
        own_pos_embed = getattr(self.model, "pos_embed", None)
        if pos_embed is not None and own_pos_embed is not None and pos_embed.shape != own_pos_embed.shape:
            # Models with no_embed_class keep the class token out of pos_embed.
            num_prefix = 0 if getattr(self.model, "no_embed_class", False) else self.model.num_prefix_tokens
            state["pos_embed"] = resample_abs_pos_embed(
                pos_embed, new_size=list(self.model.patch_embed.grid_size), num_prefix_tokens=num_prefix
            )
        _fit_state_dict(self.model, state, os.fspath(path), self.model_name)

    def forward_features(self, images: Tensor) -> Tensor:
        """Map images ``(B, C, H, W)`` to tokens ``(B, num_prefix_tokens + h * w, D)`` after the final norm."""
        if self.stem == "conv":
            images = images.contiguous(memory_format=torch.channels_last)  # the conv stem's weight layout
        return self.model.forward_features(images)


def conv_stem(in_chans: int, embed_dim: int, patch_size: int, depth: int = 1) -> nn.Sequential:
    """Convolutional patch embedding: 3x3 conv + BN + ReLU stages down to the patch grid, then a 1x1 conv to ``embed_dim``.

    There are log2(patch) stages, each opening with a stride-2 conv, with widths doubling from
    ``embed_dim / 2**(n-1)`` (at least 16) up to ``embed_dim`` (Xiao et al. 2021). ``depth`` > 1 adds ``depth - 1``
    stride-1 3x3 convs to each stage, after its halving, and one stride-1 conv on the image itself (half the first
    stage's width) before the first halving. The output grid equals the ``patch_size`` patch grid:
    ``(B, C, H, W) -> (B, embed_dim, H / patch, W / patch)``.
    """
    n = int(math.log2(patch_size))
    if 2**n != patch_size or n < 1:
        raise ValueError(f"the conv stem needs a power-of-two patch size, got {patch_size}")
    if depth < 1:
        raise ValueError(f"the conv stem needs stem_depth >= 1, got {depth}")

    def conv_bn_relu(width_in: int, width: int, stride: int) -> list[nn.Module]:
        conv = nn.Conv2d(width_in, width, 3, stride=stride, padding=1, bias=False)
        return [conv, nn.BatchNorm2d(width), nn.ReLU(inplace=True)]

    widths = [max(16, embed_dim // 2 ** (n - 1 - i)) for i in range(n)]
    layers: list[nn.Module] = []
    width_in = in_chans
    if depth > 1:
        layers += conv_bn_relu(width_in, max(8, widths[0] // 2), 1)
        width_in = max(8, widths[0] // 2)
    for width in widths:
        layers += conv_bn_relu(width_in, width, 2)
        for _ in range(depth - 1):
            layers += conv_bn_relu(width, width, 1)
        width_in = width
    layers.append(nn.Conv2d(width_in, embed_dim, 1))
    return nn.Sequential(*layers)


# Feature taps of the torchvision ResNet family, numbered like timm's ``feature_info`` (stem, layer1 .. layer4).
_TORCHVISION_RESNET_STAGES = (("conv1", "bn1", "relu"), ("maxpool", "layer1"), ("layer2",), ("layer3",), ("layer4",))
_TORCHVISION_RESNET_REDUCTIONS = (2, 4, 8, 16, 32)


class CNNEncoder(Encoder):
    """A CNN's feature map as tokens: ``(B, C, h, w)`` -> ``h * w`` tokens -> ``proj`` to D + 2-D sin-cos positions.

    Positions are computed for the actual ``h, w`` of each batch, so any image size works; ``grid_size`` reports
    the grid of the latest forward (``img_size // reduction`` before the first one, if ``img_size`` is given).

    Args:
        model_name: timm (``"resnet18"``, ``"convnext_nano"``, ...) or torchvision (``"resnet50"``) model name.
        embed_dim: Token width D; must be divisible by 4 (2-D sin-cos positions).
        pretrained: Download pretrained weights by name (needs network) unless ``checkpoint_path`` is set.
        checkpoint_path: Local weights file for the whole CNN (classifier keys are dropped).
        in_chans: Input channels.
        source: ``"timm"`` or ``"torchvision"`` (the ResNet family).
        out_index: Which feature stage to tokenise, numbered like timm's ``feature_info`` (for ResNets 0 = stem,
            stride 2; 1..4 = layer1..layer4, strides 4..32); -1 = the last. An earlier stage gives a finer grid
            on small images (resnet18 at 64 px: 2 x 2 tokens from stage 4, 4 x 4 from stage 3), and the later
            stages are pruned away.
        img_size: Expected input size, used only to report ``grid_size`` before the first forward.
        model_kwargs: More keyword arguments for the model's constructor (``timm.create_model`` or
            ``torchvision.models.get_model``), e.g. ``{"layers": [1, 1, 1, 1]}``: a ResNet-18 with one block per
            stage (ResNet-10), which the demo uses.
    """

    def __init__(
        self,
        model_name: str = "resnet18",
        embed_dim: int = 256,
        pretrained: bool = False,
        checkpoint_path: str | None = None,
        in_chans: int = 3,
        source: Literal["timm", "torchvision"] = "timm",
        out_index: int = -1,
        img_size: int | None = None,
        model_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if embed_dim % 4:
            raise ValueError(f"CNNEncoder embed_dim must be divisible by 4 (2-D sin-cos positions), got {embed_dim}")
        self.model_name = model_name
        self.source = source
        self.embed_dim = embed_dim
        self.num_prefix_tokens = 0
        if source == "timm":
            channels, self.reduction = self._build_timm(
                model_name, pretrained, checkpoint_path, in_chans, out_index, model_kwargs
            )
        elif source == "torchvision":
            channels, self.reduction = self._build_torchvision(
                model_name, pretrained, checkpoint_path, in_chans, out_index, model_kwargs
            )
        else:
            raise ValueError(f"unknown CNN source {source!r}; expected 'timm' or 'torchvision'")
        # Channels-last convolutions are oneDNN's (and cuDNN's tensor cores') native layout, and with it the
        # (B, h*w, C) tokens below are a view instead of a copy.
        self.model.to(memory_format=torch.channels_last)
        self._stem = next(m for m in self.model.modules() if isinstance(m, nn.Conv2d))
        self.proj = nn.Linear(channels, embed_dim)
        self.norm = nn.LayerNorm(embed_dim)
        side = 0 if img_size is None else math.ceil(img_size / self.reduction)
        self.grid_size = (side, side)

    def _build_timm(
        self,
        model_name: str,
        pretrained: bool,
        checkpoint_path: str | None,
        in_chans: int,
        out_index: int,
        model_kwargs: dict[str, Any] | None,
    ) -> tuple[int, int]:
        # The whole classifier-less model, not ``features_only``: its parameter names match timm checkpoints.
        fixed = {
            "pretrained": pretrained and checkpoint_path is None,
            "num_classes": 0,
            "global_pool": "",
            "in_chans": in_chans,
        }
        self.model = _create_timm_model(model_name, **_merge_model_kwargs(fixed, model_kwargs))
        if checkpoint_path is not None:
            _fit_state_dict(self.model, load_checkpoint_state(checkpoint_path), checkpoint_path, model_name)
        info = list(self.model.feature_info)
        stage = _stage_index(out_index, len(info), model_name)
        self._tap: int | None = None
        if stage != len(info) - 1:
            if not hasattr(self.model, "forward_intermediates"):
                raise ValueError(f"timm model {model_name!r} cannot return intermediate stages; use out_index=-1")
            self.model.prune_intermediate_layers([stage], prune_head=True)
            self._tap = stage
        return info[stage]["num_chs"], info[stage]["reduction"]

    def _build_torchvision(
        self,
        model_name: str,
        pretrained: bool,
        checkpoint_path: str | None,
        in_chans: int,
        out_index: int,
        model_kwargs: dict[str, Any] | None,
    ) -> tuple[int, int]:
        import torchvision

        weights = "DEFAULT" if pretrained and checkpoint_path is None else None
        try:
            net = torchvision.models.get_model(model_name, **_merge_model_kwargs({"weights": weights}, model_kwargs))
        except ValueError as e:
            raise ValueError(f"torchvision does not know the model {model_name!r}: {e}") from e
        except TypeError as e:  # a constructor argument the model does not take
            raise ValueError(
                f"torchvision model {model_name!r} does not accept the arguments {sorted(model_kwargs or {})}: {e}"
            ) from e
        if not all(hasattr(net, name) for stage in _TORCHVISION_RESNET_STAGES for name in stage):
            raise ValueError(f"source='torchvision' supports the ResNet family; {model_name!r} is not a ResNet")
        net.fc = nn.Identity()  # headless, so a checkpoint's classifier keys are dropped whatever its class count
        if checkpoint_path is not None:
            _fit_state_dict(net, load_checkpoint_state(checkpoint_path), checkpoint_path, model_name)
        if in_chans != 3:
            conv = net.conv1
            new_conv = nn.Conv2d(in_chans, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, bias=False)
            new_conv.weight.data = adapt_input_conv(in_chans, conv.weight.data)  # sums/repeats RGB filters
            net.conv1 = new_conv
        stage = _stage_index(out_index, len(_TORCHVISION_RESNET_STAGES), model_name)
        names = [name for group in _TORCHVISION_RESNET_STAGES[: stage + 1] for name in group]
        # Keep torchvision's child names so the trunk's state dict matches torchvision's (minus avgpool/fc).
        self.model = nn.Sequential(OrderedDict((name, getattr(net, name)) for name in names))
        self._tap = None
        channels = [m for m in self.model.modules() if isinstance(m, nn.Conv2d)][-1].out_channels
        return channels, _TORCHVISION_RESNET_REDUCTIONS[stage]

    def _feature_map(self, images: Tensor) -> Tensor:
        if self._stem.weight.is_contiguous(memory_format=torch.channels_last):
            images = images.contiguous(memory_format=torch.channels_last)  # the layout the weights are in
        if self.source == "torchvision":
            return self.model(images)
        if self._tap is not None:
            return self.model.forward_intermediates(images, indices=[self._tap], intermediates_only=True)[0]
        return self.model.forward_features(images)

    def forward_features(self, images: Tensor) -> Tensor:
        """Map images ``(B, C, H, W)`` to tokens ``(B, h * w, D)``, row-major over the feature grid."""
        feat = self._feature_map(images)
        if feat.ndim != 4:
            raise ValueError(f"{self.model_name!r} returns {feat.ndim}-d features, not a (B, C, h, w) feature map")
        B, C, h, w = feat.shape
        self.grid_size = (h, w)
        x = self.proj(feat.flatten(2).transpose(1, 2))  # (B, C, h*w) -> (B, h*w, C) -> (B, N, D)
        x = x + build_2d_sincos(h, w, self.embed_dim, device=x.device).to(x.dtype)  # (N, D) broadcast over B
        return self.norm(x)


def _stage_index(out_index: int, num_stages: int, model_name: str) -> int:
    if not -num_stages <= out_index < num_stages:
        raise ValueError(f"out_index={out_index} is out of range for {model_name!r}, which has {num_stages} stages")
    return out_index % num_stages


def build_encoder(kind: Literal["vit", "cnn"], **kwargs: Any) -> Encoder:
    """Build a ``ViTEncoder`` (``kind="vit"``) or ``CNNEncoder`` (``kind="cnn"``) from its keyword arguments."""
    if kind == "vit":
        return ViTEncoder(**kwargs)
    if kind == "cnn":
        return CNNEncoder(**kwargs)
    raise ValueError(f"unknown encoder kind {kind!r}; expected 'vit' or 'cnn'")
