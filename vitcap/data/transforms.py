"""Image transforms (torchvision ``transforms.v2``), described by a ``preprocessing`` dict.

``preprocessing`` is what a checkpoint stores to rebuild the evaluation transform: ``img_size`` (int),
``mean``/``std`` (one value per model input channel), ``interpolation`` (``"bicubic"``, ``"bilinear"`` or
``"nearest"``), ``crop_pct`` (resize the shorter side to ``img_size / crop_pct``, then centre-crop ``img_size``)
and ``in_chans`` (1 or 3; grey inputs are replicated to 3 channels, RGB inputs averaged to 1).

Every transform accepts a PIL image or a uint8 tensor (C, H, W) and returns a normalised float tensor
(in_chans, img_size, img_size).

Training augmentation depends on the task:

- captioning (``build_train_transform("caption", ...)``): only a mild random zoom/shift
  (``RandomResizedCrop`` with scale (0.8, 1) and aspect ratio (0.9, 1.1)). No flips (captions say "left of")
  and no colour changes (captions name colours).
- classification (``"classify"``): ``crop="pad"`` (random crop of an image zero-padded (black) by img_size/8, as in
  the usual CIFAR/MNIST recipes, for small images such as MNIST/CIFAR/shapes; keeps the object's scale) or ``"rrc"`` (``RandomResizedCrop`` scale (0.08, 1), for photos),
  optional horizontal flip, optional ``RandAugment`` or ``AutoAugment`` (policy ``"imagenet"``, ``"cifar10"`` or
  ``"svhn"``). Mixup/CutMix act on whole batches and belong to the classification task.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import torch
import torchvision.transforms.v2 as v2
from torchvision import tv_tensors
from torchvision.transforms import InterpolationMode

from vitcap.errors import ConfigError

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ResizeCenterCrop",
    "ToChannels",
    "ToFloatNormalize",
    "build_eval_transform",
    "build_train_transform",
    "make_preprocessing",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_INTERPOLATIONS = ("bicubic", "bilinear", "nearest")
_AUTO_AUGMENT = {p.value: p for p in v2.AutoAugmentPolicy}


class ToChannels:
    """Make an image tensor (C, H, W) have ``in_chans`` channels: grey -> replicated RGB, RGB -> luma."""

    def __init__(self, in_chans: int) -> None:
        if in_chans not in (1, 3):
            raise ConfigError(f"in_chans must be 1 or 3, got {in_chans}")
        self.in_chans = in_chans

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        C = img.shape[-3]
        if C == self.in_chans:
            return img
        if C == 1 and self.in_chans == 3:
            return tv_tensors.Image(img.expand(*img.shape[:-3], 3, *img.shape[-2:]).clone())  # (3, H, W)
        if C == 3 and self.in_chans == 1:
            return tv_tensors.Image(v2.functional.rgb_to_grayscale(img))  # (1, H, W)
        raise ValueError(f"cannot convert a {C}-channel image to {self.in_chans} channels")

    def __repr__(self) -> str:
        return f"ToChannels(in_chans={self.in_chans})"


class ResizeCenterCrop:
    """Resize the shorter side to ``int(size / crop_pct)`` and centre-crop ``size``; a no-op on images that already
    are ``size`` x ``size`` with ``crop_pct == 1`` (the common case for in-memory data sets, and the fast path)."""

    def __init__(self, size: int, crop_pct: float = 1.0, interpolation: str = "bicubic") -> None:
        self.size, self.crop_pct, self.interpolation = size, crop_pct, interpolation
        self._resize = v2.Resize(int(size / crop_pct), interpolation=InterpolationMode(interpolation), antialias=True)
        self._crop = v2.CenterCrop(size)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        if self.crop_pct == 1.0 and tuple(img.shape[-2:]) == (self.size, self.size):
            return img
        return self._crop(self._resize(img))

    def __repr__(self) -> str:
        return f"ResizeCenterCrop(size={self.size}, crop_pct={self.crop_pct}, interpolation={self.interpolation!r})"


class ToFloatNormalize:
    """uint8 image (C, H, W) -> float32 ``(x / 255 - mean) / std`` (one fused step instead of two v2 transforms)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)  # (C, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)  # (C, 1, 1)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        x = img.as_subclass(torch.Tensor)
        x = x.float().div_(255.0) if x.dtype == torch.uint8 else x.to(torch.float32, copy=True)
        return x.sub_(self.mean).div_(self.std)

    def __repr__(self) -> str:
        return f"ToFloatNormalize(mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()})"


def make_preprocessing(
    img_size: int,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    interpolation: str = "bicubic",
    crop_pct: float = 1.0,
    in_chans: int = 3,
) -> dict:
    """Validated ``preprocessing`` dict; a single mean/std value is repeated for every channel.

    Raises:
        ConfigError: A value is out of range; the message names the key.
    """
    if img_size < 1:
        raise ConfigError(f"preprocessing 'img_size' must be >= 1, got {img_size}")
    if interpolation not in _INTERPOLATIONS:
        raise ConfigError(f"preprocessing 'interpolation' must be one of {_INTERPOLATIONS}, got {interpolation!r}")
    if not 0.0 < crop_pct <= 1.0:
        raise ConfigError(f"preprocessing 'crop_pct' must be in (0, 1], got {crop_pct}")
    if in_chans not in (1, 3):
        raise ConfigError(f"preprocessing 'in_chans' must be 1 or 3, got {in_chans}")
    mean, std = _per_channel("mean", mean, in_chans), _per_channel("std", std, in_chans)
    if any(s <= 0 for s in std):
        raise ConfigError(f"preprocessing 'std' must be positive, got {std}")
    return {
        "img_size": int(img_size),
        "mean": mean,
        "std": std,
        "interpolation": interpolation,
        "crop_pct": float(crop_pct),
        "in_chans": int(in_chans),
    }


def _per_channel(key: str, values: Sequence[float], in_chans: int) -> list[float]:
    values = [float(v) for v in values]
    if len(values) == 1:
        values = values * in_chans
    if len(values) != in_chans:
        raise ConfigError(f"preprocessing '{key}' needs 1 or {in_chans} values, got {len(values)}")
    return values


def _parse(preprocessing: dict) -> dict:
    missing = [k for k in ("img_size", "mean", "std") if k not in preprocessing]
    if missing:
        raise ConfigError(
            f"preprocessing dict is missing {missing}; expected img_size, mean, std[, interpolation, crop_pct]"
        )
    return make_preprocessing(
        preprocessing["img_size"],
        preprocessing["mean"],
        preprocessing["std"],
        preprocessing.get("interpolation", "bicubic"),
        preprocessing.get("crop_pct", 1.0),
        preprocessing.get("in_chans", 3),
    )


def _finish(p: dict) -> list:
    return [ToFloatNormalize(p["mean"], p["std"])]


def build_eval_transform(preprocessing: dict) -> v2.Compose:
    """Evaluation transform: resize the shorter side to ``img_size / crop_pct``, centre-crop, normalise.

    Args:
        preprocessing: Dict with ``img_size``, ``mean``, ``std`` and optionally ``interpolation``, ``crop_pct``,
            ``in_chans`` (see the module docstring).
    """
    p = _parse(preprocessing)
    size = p["img_size"]
    return v2.Compose(
        [
            v2.ToImage(),
            ToChannels(p["in_chans"]),
            ResizeCenterCrop(size, p["crop_pct"], p["interpolation"]),
            *_finish(p),
        ]
    )


def build_train_transform(
    task: Literal["caption", "classify"],
    preprocessing: dict,
    crop: Literal["pad", "rrc", "none"] = "pad",
    hflip: bool = True,
    randaugment: bool = False,
    auto_augment: str | None = None,
) -> v2.Compose:
    """Training transform with augmentation suited to the task (see the module docstring).

    Args:
        task: ``"caption"`` (mild zoom only; ``crop``/``hflip``/augment options are refused) or ``"classify"``.
        preprocessing: As for ``build_eval_transform``.
        crop: Classification crop: ``"pad"`` (pad by img_size/8, random crop), ``"rrc"``, or ``"none"``.
        hflip: Classification: random horizontal flips.
        randaugment: Classification: ``RandAugment(num_ops=2, magnitude=9)``.
        auto_augment: Classification: an ``AutoAugment`` policy (``"imagenet"``, ``"cifar10"``, ``"svhn"``).
    """
    p = _parse(preprocessing)
    size, interp = p["img_size"], InterpolationMode(p["interpolation"])
    steps: list[Callable] = [v2.ToImage(), ToChannels(p["in_chans"])]
    if task == "caption":
        if randaugment or auto_augment:
            raise ConfigError("captioning augmentation cannot use randaugment/auto_augment: they change colours")
        steps += [
            ResizeCenterCrop(size, p["crop_pct"], p["interpolation"]),
            v2.RandomResizedCrop(size, scale=(0.8, 1.0), ratio=(0.9, 1.1), interpolation=interp, antialias=True),
        ]
    elif task == "classify":
        if crop == "rrc":
            steps.append(v2.RandomResizedCrop(size, interpolation=interp, antialias=True))
        elif crop in ("pad", "none"):
            steps.append(ResizeCenterCrop(size, p["crop_pct"], p["interpolation"]))
            if crop == "pad":
                # Pads the uint8 image with black, before normalisation. Padding with the mean colour (zeros after
                # normalisation) draws grey borders around MNIST-like images with black backgrounds.
                steps.append(v2.RandomCrop(size, padding=max(1, size // 8), fill=0))
        else:
            raise ConfigError(f"crop must be 'pad', 'rrc' or 'none', got {crop!r}")
        if hflip:
            steps.append(v2.RandomHorizontalFlip())
        if randaugment and auto_augment:
            raise ConfigError("choose one of randaugment and auto_augment")
        if randaugment:
            steps.append(v2.RandAugment(num_ops=2, magnitude=9, interpolation=InterpolationMode.BILINEAR))
        if auto_augment:
            if auto_augment not in _AUTO_AUGMENT:
                raise ConfigError(f"auto_augment must be one of {sorted(_AUTO_AUGMENT)} or None, got {auto_augment!r}")
            steps.append(v2.AutoAugment(_AUTO_AUGMENT[auto_augment], interpolation=InterpolationMode.BILINEAR))
    else:
        raise ConfigError(f"task must be 'caption' or 'classify', got {task!r}")
    return v2.Compose(steps + _finish(p))
