"""Evaluation preprocessing in numpy and Pillow: `vitcap.data.transforms.build_eval_transform` without torch.

Same steps, same `preprocessing` dict: replicate grey to RGB (or RGB to luma for 1-channel models), resize the
shorter side to `int(img_size / crop_pct)` (longer side `int(new_short * long / short)`, as torchvision computes
it), centre-crop `img_size` (offsets rounded as torchvision's `CenterCrop`), scale to [0, 1], normalise. The
resize is Pillow's antialiased filter of the same name, which torchvision's antialiased resize reproduces to within
rounding of the 8-bit result; images already `img_size` square with `crop_pct = 1` (the usual case) are not
resized at all and preprocess bit for bit as in PyTorch.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

__all__ = ["Preprocessor"]

_FILTERS = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
}


class Preprocessor:
    """Turn PIL images into the `(B, in_chans, img_size, img_size)` float32 batch the encoder takes.

    Args:
        preprocessing: A checkpoint's `preprocessing` dict (`img_size`, `mean`, `std`, `interpolation`,
            `crop_pct`, `in_chans`).
    """

    def __init__(self, preprocessing: dict[str, Any]) -> None:
        self.size = int(preprocessing["img_size"])
        self.crop_pct = float(preprocessing.get("crop_pct", 1.0))
        self.in_chans = int(preprocessing.get("in_chans", 3))
        self.filter = _FILTERS[preprocessing.get("interpolation", "bicubic")]
        self.mean = np.asarray(preprocessing["mean"], dtype=np.float32).reshape(-1, 1, 1)  # (C, 1, 1)
        self.std = np.asarray(preprocessing["std"], dtype=np.float32).reshape(-1, 1, 1)  # (C, 1, 1)

    def __call__(self, images: list[Image.Image]) -> np.ndarray:
        """Preprocess RGB images into a `(B, C, H, W)` float32 batch."""
        return np.stack([self.one(image) for image in images])

    def one(self, image: Image.Image) -> np.ndarray:
        """One RGB image -> `(C, img_size, img_size)` float32."""
        image = image.convert("RGB")
        if self.in_chans == 1:  # torchvision's rgb_to_grayscale on uint8: float weights, truncated back to uint8
            r, g, b = np.asarray(image, dtype=np.uint8).transpose(2, 0, 1)  # (3, H, W)
            luma = r * np.float32(0.2989) + g * np.float32(0.587) + b * np.float32(0.114)
            image = Image.fromarray(luma.astype(np.uint8))  # mode L
        x = np.asarray(self._resize_crop(image), dtype=np.uint8)
        x = x[None] if x.ndim == 2 else x.transpose(2, 0, 1)  # (H, W[, 3]) -> (C, H, W)
        return (x.astype(np.float32) / np.float32(255.0) - self.mean) / self.std

    def _resize_crop(self, image: Image.Image) -> Image.Image:
        w, h = image.size
        if self.crop_pct == 1.0 and (w, h) == (self.size, self.size):
            return image
        short_side = int(self.size / self.crop_pct)
        short, long = (w, h) if w <= h else (h, w)
        new_short, new_long = short_side, int(short_side * long / short)
        new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
        if (new_w, new_h) != (w, h):
            image = image.resize((new_w, new_h), self.filter)
        top = int(round((new_h - self.size) / 2.0))
        left = int(round((new_w - self.size) / 2.0))
        return image.crop((left, top, left + self.size, top + self.size))
