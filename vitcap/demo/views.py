"""What the demo page shows, computed from a loaded pipeline without Gradio (so it is tested directly).

- `read_upload`: the image behind an upload (a path, or Gradio's file payload), loaded by
  `vitcap.data.images.load_image` with the demo's pixel limit; a bad file raises `ImageLoadError` naming the file
  as the user called it, never the server's cache path.
- `decoding_options`: the page's decoding controls as `GenerationConfig` fields.
- `caption_view` / `CaptionView`: n-best captions and, for the best one, each word's cross-attention map drawn
  over the part of the image the model saw (`model_view`: its evaluation transform's centred square crop).
- `classify_view` / `ClassifyView`: top-k labels and the ViT attention-rollout overlay.
"""

from __future__ import annotations

import base64
import binascii
import functools
import math
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from vitcap.data.images import load_image
from vitcap.errors import ConfigError, DataError, ImageLoadError
from vitcap.inference import CaptionPipeline, ClassifyPipeline
from vitcap.viz import upsample_map

__all__ = [
    "DECODING_MODES",
    "DEFAULT_MAX_PIXELS",
    "DISPLAY_SIZE",
    "CaptionView",
    "ClassifyView",
    "caption_view",
    "centre_square",
    "classify_view",
    "decoding_options",
    "model_view",
    "overlay",
    "read_upload",
    "rollout_unavailable",
    "warm_up",
]

DECODING_MODES = ("greedy", "beam search", "sampling")
# Uploads above this many pixels are refused before decoding (a 50-megapixel photo decodes to 150 MB of RGB).
DEFAULT_MAX_PIXELS = 50_000_000
DISPLAY_SIZE = 320  # side of the square overlays, in pixels
HEAT_ALPHA = 0.5  # weight of the heat map over the image, as `vitcap.viz` draws it


# ------------------------------------------------------------------------------------------------------- uploads
def read_upload(upload: Any, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> tuple[Image.Image, str]:
    """Load the image of an upload as RGB, with the name to show for it.

    Args:
        upload: A path, a PIL image, or Gradio's file payload (a dict with ``path`` and ``orig_name``, what an
            event with ``preprocess=False`` receives; a ``data:`` URL stands for a webcam snapshot).
        max_pixels: Refuse larger images (decompression bombs, huge photos); None keeps ``load_image``'s default.

    Returns:
        The image (RGB) and its display name.

    Raises:
        DataError: No image was given.
        ImageLoadError: The file is not a usable image; the message names it and says why.
    """
    if upload is None or upload == "" or upload == {}:
        raise DataError("no image: upload one or pick an example")
    if isinstance(upload, Image.Image):
        return upload.convert("RGB"), "image"
    name = ""
    if isinstance(upload, dict):
        path, name = upload.get("path"), upload.get("orig_name") or ""
        url = upload.get("url") or ""
        if not path and url.startswith("data:"):
            return _read_data_url(url, max_pixels), name or "webcam snapshot"
        if not path:
            raise DataError("no image: the upload carried no file")
        upload = path
    path = Path(upload)
    name = name or path.name
    try:
        return load_image(path, max_pixels=max_pixels), name
    except ImageLoadError as e:
        raise ImageLoadError(f"{name}: {e.reason}") from None


def _read_data_url(url: str, max_pixels: int | None) -> Image.Image:
    header, _, data = url.partition(",")
    try:
        raw = base64.b64decode(data, validate=True) if ";base64" in header else data.encode()
    except (binascii.Error, ValueError):
        raise ImageLoadError("webcam snapshot: not valid base64 image data") from None
    fd, name = tempfile.mkstemp(prefix="vitcap-demo-", suffix=".img")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
        return read_upload(name, max_pixels)[0]
    except ImageLoadError as e:
        raise ImageLoadError(f"webcam snapshot: {e.reason}") from None
    finally:
        os.unlink(name)


# ------------------------------------------------------------------------------------------------------ decoding
def decoding_options(
    mode: str, beams: float, temperature: float, top_p: float, max_length: float, num_captions: float
) -> tuple[dict[str, Any], str]:
    """The `GenerationConfig` fields of the page's decoding controls, and a note when one had to be adjusted.

    Gradio sliders deliver floats; counts are rounded to ints here. Beam search returns the n best of at least n
    beams; greedy decoding returns one caption.

    Raises:
        ConfigError: ``mode`` is not one of `DECODING_MODES`.
    """
    n, k = int(round(num_captions)), int(round(beams))
    options: dict[str, Any] = {"max_length": int(round(max_length))}
    note = ""
    if mode == "greedy":
        options.update(num_beams=1, do_sample=False, num_return_sequences=1)
        if n > 1:
            note = "greedy decoding gives one caption; choose beam search or sampling for more"
    elif mode == "beam search":
        if n > k:
            note = f"beam width raised from {k} to {n} to return {n} captions"
        options.update(num_beams=max(k, n), do_sample=False, num_return_sequences=n)
    elif mode == "sampling":
        options.update(
            num_beams=1, do_sample=True, temperature=float(temperature), top_p=float(top_p), num_return_sequences=n
        )
    else:
        raise ConfigError(f"decoding: expected one of {list(DECODING_MODES)}, got {mode!r}", key="decoding")
    return options, note


# ------------------------------------------------------------------------------------------------------ pictures
def model_view(image: Image.Image, preprocessing: dict[str, Any]) -> Image.Image:
    """The part of ``image`` the model sees: the centred square its evaluation transform keeps (``crop_pct``)."""
    crop_pct = float(preprocessing.get("crop_pct") or 1.0)
    w, h = image.size
    side = max(1, min(w, h, round(min(w, h) * crop_pct)))
    left, top = (w - side) // 2, (h - side) // 2
    return image.crop((left, top, left + side, top + side))


def centre_square(image: Image.Image) -> Image.Image:
    """The largest centred square of ``image``: all that the evaluation transform (shorter side, centre crop) keeps.

    Passing it instead of the whole image gives the model the same input, and keeps a long thin upload (1 x 40000
    pixels) from being enlarged to thousands of times the model's size before the crop.
    """
    w, h = image.size
    if w == h:
        return image
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    return image.crop((left, top, left + side, top + side))


def _display(image: Image.Image) -> Image.Image:
    # Small images (the 32-64 px shapes) are enlarged without smoothing, so their pixels stay sharp.
    side = image.width
    resample = Image.Resampling.NEAREST if side * 2 <= DISPLAY_SIZE else Image.Resampling.BICUBIC
    return image.resize((DISPLAY_SIZE, DISPLAY_SIZE), resample)


@functools.lru_cache(maxsize=1)
def _jet() -> np.ndarray:
    from matplotlib import colormaps

    return (colormaps["jet"](np.linspace(0.0, 1.0, 256))[:, :3] * 255).round().astype(np.uint8)  # (256, 3)


def overlay(image: Image.Image, grid: torch.Tensor | np.ndarray) -> Image.Image:
    """``image`` with an attention grid (h, w) drawn over it as a heat map (bilinear, scaled to its own range)."""
    heat = upsample_map(torch.as_tensor(np.asarray(grid, dtype=np.float32)), image.size)  # (H, W) in [0, 1]
    colours = Image.fromarray(_jet()[np.clip(heat * 255, 0, 255).astype(np.uint8)])
    return Image.blend(image.convert("RGB"), colours, HEAT_ALPHA)


# ------------------------------------------------------------------------------------------------------ captions
@dataclass
class CaptionView:
    """A captioned image as the page shows it.

    Attributes:
        image: The model's view of the image (`model_view`), resized to `DISPLAY_SIZE` for display.
        captions: The n-best list, ``(caption, mean token log-probability)``, best first.
        words: The best caption's tokens, decoded one by one.
        word_probs: The probability the model gave each of them.
        maps: ``(words, h, w)`` cross-attention of each word over the image grid (see `card.attention_note`).
        seconds: Wall time of the model call.
    """

    image: Image.Image
    captions: list[tuple[str, float]]
    words: list[str]
    word_probs: list[float]
    maps: np.ndarray
    seconds: float

    @property
    def caption(self) -> str:
        return self.captions[0][0] if self.captions else ""

    def word_choices(self) -> list[tuple[str, int]]:
        """``(label, index)`` per word: its position, the word and its probability."""
        return [(f"{i + 1}. {w or '·'} ({p:.0%})", i) for i, (w, p) in enumerate(zip(self.words, self.word_probs))]

    def grid_share(self, index: int) -> float:
        """Share of word ``index``'s attention on the image grid (the rest went to class/register tokens)."""
        return float(self.maps[index].sum())

    def word_overlay(self, index: int) -> Image.Image:
        """The heat map of word ``index`` over the image.

        Raises:
            IndexError: No such word.
        """
        if not 0 <= index < len(self.words):
            raise IndexError(f"word {index} of a caption with {len(self.words)} words")
        return overlay(self.image, self.maps[index])


def caption_view(pipeline: CaptionPipeline, image: Image.Image, decoding: dict[str, Any]) -> CaptionView:
    """Caption one image with ``decoding`` (`decoding_options`) and keep its per-word attention.

    Raises:
        ConfigError: The decoding settings are invalid (e.g. a max length of 0).
    """
    start = time.perf_counter()
    image = centre_square(image)
    result = pipeline.caption([image], return_attention=True, **decoding)[0]
    seconds = time.perf_counter() - start
    words = list(result.words)
    maps = np.zeros((0, 1, 1), np.float32) if result.attention is None else result.attention.float().cpu().numpy()
    captions = [(result.caption, result.score)] + [(a["caption"], float(a["score"])) for a in result.alternatives]
    return CaptionView(
        image=_display(model_view(image, pipeline.preprocessing)),
        captions=captions,
        words=words,
        word_probs=[math.exp(lp) for lp in result.token_logprobs[: len(words)]],
        maps=maps[: len(words)],
        seconds=seconds,
    )


# ------------------------------------------------------------------------------------------------ classification
@dataclass
class ClassifyView:
    """A classified image as the page shows it.

    Attributes:
        labels: Top-k ``{class name: probability}``, most likely first.
        rollout: The attention-rollout heat map over the model's view of the image, or None (see ``note``).
        note: Why there is no rollout, or "".
        seconds: Wall time of the model calls (classification and rollout).
    """

    labels: dict[str, float]
    rollout: Image.Image | None
    note: str
    seconds: float


def rollout_unavailable(pipeline: ClassifyPipeline) -> str:
    """Why `ClassifyPipeline.rollout` cannot run on this classifier, or "" when it can."""
    encoder = pipeline.model.encoder
    vit = getattr(encoder, "vit", None) or getattr(encoder, "model", None)
    if vit is None or not hasattr(vit, "blocks"):
        return "attention rollout needs a ViT encoder; this classifier has a CNN encoder"
    if getattr(vit, "cls_token", None) is None:
        return "attention rollout follows the class token; this ViT has none"
    return ""


def classify_view(pipeline: ClassifyPipeline, image: Image.Image, top_k: int) -> ClassifyView:
    """Top-k labels of one image and, for a ViT with a class token, its attention-rollout overlay."""
    start = time.perf_counter()
    image = centre_square(image)
    labels = dict(pipeline.classify([image], top_k=max(1, int(top_k)))[0])
    note = rollout_unavailable(pipeline)
    rollout = None
    if not note:
        grid = pipeline.rollout([image])[0]  # (h, w)
        rollout = overlay(_display(model_view(image, pipeline.preprocessing)), grid.float().cpu())
    return ClassifyView(labels=labels, rollout=rollout, note=note, seconds=time.perf_counter() - start)


def warm_up(pipeline: CaptionPipeline | ClassifyPipeline, image: Image.Image) -> None:
    """Run the model once, so the first visitor's click does not pay for one-time set-up (kernels, lazy init)."""
    if isinstance(pipeline, CaptionPipeline):
        caption_view(pipeline, image, {})
    else:
        classify_view(pipeline, image, top_k=1)
