"""Image loading: the one place in vitcap where image files are opened.

``load_image`` returns an 8-bit RGB ``PIL.Image`` for every file Pillow can decode, or raises ``ImageLoadError``
(from `vitcap.errors`, a ``ValueError``) whose one-line message names the file and the reason. Mode conversion
rules:

- EXIF orientation is applied (``ImageOps.exif_transpose``), so width/height are as a viewer shows them.
- ``L`` and ``1`` (1-bit) are replicated to RGB; ``CMYK`` and ``YCbCr`` use Pillow's conversion (ICC profiles
  are ignored).
- Transparency (``RGBA``, ``LA``, ``PA``, ``P`` with a ``transparency`` entry) is composited over a white
  background, the way a browser shows the image on a white page.
- 16-bit integer images (``I;16*``) are scaled to 8 bits by ``>> 8`` (65535 -> 255, 32768 -> 128), not clipped.
  32-bit ``I`` images whose values fit in 0..255 are kept, in 0..65535 are shifted by 8 bits, otherwise
  min-max scaled. Float ``F`` images in [0, 1] are multiplied by 255, otherwise min-max scaled.
- Images with more than ``max_pixels`` pixels are refused as possible decompression bombs. The default is the
  environment variable ``VITCAP_MAX_IMAGE_PIXELS`` when set (it reaches every entry point, DataLoader workers
  included; a value above Pillow's own limit raises ``PIL.Image.MAX_IMAGE_PIXELS`` to match), else
  ``PIL.Image.MAX_IMAGE_PIXELS`` (about 89 million). A lower limit can also be passed per call.
- Truncated, corrupt, zero-byte, missing and non-image files raise ``ImageLoadError``. The pixel data is
  decoded inside ``load_image`` so truncation is found here and not later in a transform.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from vitcap.errors import ConfigError, ImageLoadError

__all__ = [
    "IMAGE_EXTENSIONS",
    "MAX_PIXELS_ENV",
    "ImageLoadError",
    "decode_image",
    "image_file_bytes",
    "load_image",
    "max_image_pixels",
    "to_rgb",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
_TRANSPARENT_MODES = ("RGBA", "RGBa", "LA", "La", "PA")
MAX_PIXELS_ENV = "VITCAP_MAX_IMAGE_PIXELS"


def max_image_pixels() -> int | None:
    """The decompression-bomb limit ``load_image`` applies by default (``VITCAP_MAX_IMAGE_PIXELS`` or Pillow's).

    Raises:
        ConfigError: ``VITCAP_MAX_IMAGE_PIXELS`` is set but not a positive integer.
    """
    value = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not value:
        return Image.MAX_IMAGE_PIXELS
    try:
        limit = int(value)
    except ValueError:
        limit = 0
    if limit <= 0:
        raise ConfigError(f"{MAX_PIXELS_ENV}={value!r}: expected a positive number of pixels")
    if Image.MAX_IMAGE_PIXELS is not None and limit > Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = limit  # Pillow refuses images over twice its own limit before vitcap's check
    return limit


def load_image(path: str | os.PathLike, max_pixels: int | None = None) -> Image.Image:
    """Open an image file and return it as an 8-bit RGB image with EXIF orientation applied.

    Args:
        path: Image file.
        max_pixels: Refuse images with more pixels than this (decompression-bomb guard). ``None`` uses
            ``max_image_pixels()``: ``VITCAP_MAX_IMAGE_PIXELS`` when set, else ``PIL.Image.MAX_IMAGE_PIXELS``.

    Returns:
        A fully decoded ``PIL.Image`` in mode ``RGB``, detached from the file.

    Raises:
        ImageLoadError: The file is missing, empty, not an image, truncated, corrupt, too large, or in a mode
            that cannot be converted to RGB.
    """
    path = Path(path)
    if not path.exists():
        raise ImageLoadError(path, "file not found")
    if path.is_dir():
        raise ImageLoadError(path, "is a directory, expected an image file")
    if path.stat().st_size == 0:
        raise ImageLoadError(path, "empty file (0 bytes)")
    return _decode(path, path, max_image_pixels() if max_pixels is None else max_pixels)


def image_file_bytes(path: str | os.PathLike, verify: bool = True) -> bytes:
    """The encoded bytes of an image file, to copy it into a tar shard unchanged.

    Raises:
        ImageLoadError: With ``verify``, the file does not pass ``load_image``.
    """
    if verify:
        load_image(path)
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise ImageLoadError(path, f"cannot read the file ({e})") from e


def decode_image(data: bytes, name: str, max_pixels: int | None = None) -> Image.Image:
    """Decode an image held in memory (a tar shard member) with the rules of ``load_image``.

    Args:
        data: The encoded image file (JPEG, PNG, WebP, ...).
        name: What error messages call it, e.g. ``shard-00003.tar:000123.jpg``.
        max_pixels: As for ``load_image``.

    Raises:
        ImageLoadError: Empty, not an image, truncated, corrupt or too large.
    """
    if not data:
        raise ImageLoadError(name, "empty file (0 bytes)")
    return _decode(io.BytesIO(data), name, max_image_pixels() if max_pixels is None else max_pixels)


def _decode(source: Path | io.BytesIO, name: str | Path, limit: int | None) -> Image.Image:
    try:
        # Pillow warns between 1x and 2x its global limit; turn that warning into an error for this call only.
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source) as img:
                if limit is not None and img.width * img.height > limit:
                    raise ImageLoadError(
                        name, f"{img.width}x{img.height} = {img.width * img.height} pixels exceeds the limit {limit}"
                    )
                img.load()
                rgb = to_rgb(_exif_transpose(img))
    except ImageLoadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageLoadError(name, f"possible decompression bomb ({e})") from e
    except UnidentifiedImageError as e:
        raise ImageLoadError(name, "not a recognised image format") from e
    except Exception as e:  # noqa: BLE001 - Pillow's decoders raise many exception types on corrupt input
        raise ImageLoadError(name, f"truncated or corrupt image data ({type(e).__name__}: {e})") from e
    return rgb


def _exif_transpose(img: Image.Image) -> Image.Image:
    try:
        out = ImageOps.exif_transpose(img)
    except (ValueError, TypeError, KeyError, OSError, SyntaxError):
        # Broken EXIF metadata should not make good pixels unusable; keep the stored orientation.
        return img
    return img if out is None else out


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert a decoded image of any Pillow mode to 8-bit RGB (see the module docstring for the rules).

    Args:
        img: A loaded image.

    Returns:
        The image in mode ``RGB``.

    Raises:
        ValueError: The mode has no conversion to RGB.
    """
    mode = img.mode
    if mode == "RGB":
        return img
    if mode == "P" and "transparency" in img.info:
        img, mode = img.convert("RGBA"), "RGBA"
    if mode in _TRANSPARENT_MODES:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if mode.startswith("I;16"):
        arr = np.asarray(img).astype(np.uint16)
        return Image.fromarray((arr >> 8).astype(np.uint8)).convert("RGB")
    if mode == "I":
        arr = np.asarray(img).astype(np.int64)
        if arr.size and arr.min() >= 0 and arr.max() <= 255:
            out = arr
        elif arr.size and arr.min() >= 0 and arr.max() <= 65535:
            out = arr >> 8
        else:
            out = _min_max(arr)
        return Image.fromarray(out.astype(np.uint8)).convert("RGB")
    if mode == "F":
        arr = np.asarray(img).astype(np.float64)
        if not np.isfinite(arr).all():
            raise ValueError("float image contains NaN or infinity")
        out = np.rint(arr * 255.0) if arr.size and arr.min() >= 0.0 and arr.max() <= 1.0 else _min_max(arr)
        return Image.fromarray(out.astype(np.uint8)).convert("RGB")
    try:
        return img.convert("RGB")
    except ValueError as e:
        raise ValueError(f"image mode {mode!r} cannot be converted to RGB") from e


def _min_max(arr: np.ndarray) -> np.ndarray:
    lo, hi = float(arr.min()), float(arr.max())
    if hi <= lo:
        return np.zeros(arr.shape, dtype=np.float64)
    return np.rint((arr - lo) * (255.0 / (hi - lo)))
