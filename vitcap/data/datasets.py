"""Map-style datasets. Samples are dicts; ``vitcap.data.collate`` turns lists of them into batches.

Captioning data is split in two layers: a *source* holds images and their captions (files on disk, or the
built-in shapes rendered on demand), and two views over a source give the samples:

- ``CaptionTrainDataset``: one sample per (image, caption) pair, ``{"image", "caption", "id"}``;
- ``CaptionEvalDataset``: one sample per image with all its references, ``{"image", "captions", "id"}``.

Classification samples are ``{"image", "label", "id"}``. Everything here is picklable, so ``num_workers > 0``
works with any start method.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from vitcap.data.images import load_image
from vitcap.data.shapes import Scene, make_scene, render_scene, scene_label

__all__ = [
    "CaptionEvalDataset",
    "CaptionTrainDataset",
    "FileCaptionSource",
    "FileClassificationDataset",
    "RenderCache",
    "ShapesCaptionSource",
    "ShapesClassificationDataset",
    "TensorClassificationDataset",
]

Transform = Callable[[Image.Image | torch.Tensor], torch.Tensor]


class FileCaptionSource:
    """Captioned image files.

    Args:
        paths: Image files.
        captions: Captions per image (at least one each).
        ids: Stable image ids (e.g. path relative to the data root).
        max_pixels: Decompression-bomb limit passed to ``load_image``.
    """

    def __init__(
        self,
        paths: Sequence[Path],
        captions: Sequence[Sequence[str]],
        ids: Sequence[str],
        max_pixels: int | None = None,
    ) -> None:
        if not len(paths) == len(captions) == len(ids):
            raise ValueError(f"paths/captions/ids lengths differ: {len(paths)}, {len(captions)}, {len(ids)}")
        self.paths = [Path(p) for p in paths]
        self.captions = [list(c) for c in captions]
        self.ids = list(ids)
        self.max_pixels = max_pixels
        self.labels: list[int] | None = None  # caption files carry no class labels

    def __len__(self) -> int:
        return len(self.paths)

    def image(self, i: int) -> Image.Image:
        """RGB PIL image of item ``i``."""
        return load_image(self.paths[i], max_pixels=self.max_pixels)


class ShapesCaptionSource:
    """Built-in shapes scenes of one split, rendered on demand (layouts and captions generated up front).

    Args:
        seed: Data-set seed.
        split: ``"train"``, ``"val"`` or ``"test"``.
        num: Number of images.
        img_size: Image side in pixels.
        min_objects: Fewest objects per scene.
        max_objects: Most objects per scene.
    """

    def __init__(
        self, seed: int, split: str, num: int, img_size: int = 64, min_objects: int = 1, max_objects: int = 2
    ) -> None:
        self.seed, self.split, self.img_size = seed, split, img_size
        self.scenes: list[Scene] = [make_scene(seed, i, split, img_size, min_objects, max_objects) for i in range(num)]
        self.captions = [list(s.captions) for s in self.scenes]
        self.labels: list[int] | None = [s.label for s in self.scenes]  # see `vitcap.data.shapes`: CLASS_NAMES
        self.ids = [f"{split}_{i:06d}" for i in range(num)]
        self._rendered = RenderCache(self.scenes)

    def __len__(self) -> int:
        return len(self.scenes)

    def image(self, i: int) -> torch.Tensor:
        """uint8 tensor (3, H, W) of item ``i`` (rendered once, then kept: see `RenderCache`)."""
        return self._rendered[i]


CaptionSource = FileCaptionSource | ShapesCaptionSource

RENDER_CACHE_BYTES = 256 * 2**20  # rendered shapes kept per split; larger splits render every visit


class RenderCache:
    """Rendered shapes scenes kept as uint8 tensors, so each is drawn once, not once per caption and epoch.

    A caption scene is visited five times an epoch (once per caption): rendering it each time cost about a fifth of
    the demo's training time on 2 cores. Scenes are a pure function of their layout, so the cache changes no pixel.
    Each DataLoader worker fills its own copy. Splits over `max_bytes` are not cached.

    Args:
        scenes: The split's scenes.
        max_bytes: Cache only when all rendered scenes fit in this many bytes.
    """

    def __init__(self, scenes: list[Scene], max_bytes: int = RENDER_CACHE_BYTES) -> None:
        self.scenes = scenes
        size = scenes[0].img_size if scenes else 0
        self._images: dict[int, torch.Tensor] | None = {} if len(scenes) * 3 * size * size <= max_bytes else None

    def __getitem__(self, i: int) -> torch.Tensor:
        """uint8 tensor (3, H, W) of scene ``i`` (shared with the cache: transforms must not write into it)."""
        cached = self._images.get(i) if self._images is not None else None
        if cached is None:
            cached = torch.from_numpy(render_scene(self.scenes[i])).permute(2, 0, 1).contiguous()  # (3, H, W)
            if self._images is not None:
                self._images[i] = cached
        return cached


class CaptionTrainDataset(Dataset):
    """One sample per (image, caption) pair: ``{"image": (C, H, W) float, "caption": str, "id": str}``, plus the
    image's ``"label"`` when the source has class labels."""

    def __init__(self, source: CaptionSource, transform: Transform) -> None:
        self.source = source
        self.transform = transform
        # Flat index: pair k -> (image i, caption j); int32 arrays keep this small for COCO-sized data.
        counts = np.array([len(c) for c in source.captions], dtype=np.int64)
        self._image = np.repeat(np.arange(len(counts), dtype=np.int32), counts)
        self._caption = (np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)).astype(np.int32)

    def __len__(self) -> int:
        return len(self._image)

    def __getitem__(self, k: int) -> dict:
        i, j = int(self._image[k]), int(self._caption[k])
        sample = {
            "image": self.transform(self.source.image(i)),
            "caption": self.source.captions[i][j],
            "id": self.source.ids[i],
        }
        return _with_label(sample, self.source, i)


class CaptionEvalDataset(Dataset):
    """One sample per image with all references: ``{"image", "captions": list[str], "id"}`` (and ``"label"``)."""

    def __init__(self, source: CaptionSource, transform: Transform) -> None:
        self.source = source
        self.transform = transform

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int) -> dict:
        sample = {
            "image": self.transform(self.source.image(i)),
            "captions": self.source.captions[i],
            "id": self.source.ids[i],
        }
        return _with_label(sample, self.source, i)


def _with_label(sample: dict, source: CaptionSource, i: int) -> dict:
    """Add the image's class ``label`` when the source has labels (shapes; joint classification + captioning)."""
    labels = getattr(source, "labels", None)
    if labels is not None:
        sample["label"] = labels[i]
    return sample


class TensorClassificationDataset(Dataset):
    """In-memory uint8 images (MNIST-style IDX, torchvision MNIST/CIFAR), transformed as tensors (no PIL).

    Args:
        images: uint8 (N, H, W) or (N, C, H, W).
        labels: (N,) integer labels.
        ids: Stable id per image.
        transform: Tensor transform to the model input.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, ids: Sequence[str], transform: Transform) -> None:
        if images.dtype != torch.uint8:
            raise ValueError(f"images must be uint8, got {images.dtype}")
        if images.ndim == 3:
            images = images.unsqueeze(1)  # (N, 1, H, W)
        if images.ndim != 4 or len(images) != len(labels) or len(ids) != len(labels):
            raise ValueError(f"images {tuple(images.shape)}, labels {tuple(labels.shape)} and {len(ids)} ids disagree")
        self.images, self.labels, self.ids, self.transform = images, labels.long(), list(ids), transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.transform(self.images[i]), "label": int(self.labels[i]), "id": self.ids[i]}


class FileClassificationDataset(Dataset):
    """Image files with labels, loaded with ``load_image``."""

    def __init__(
        self,
        paths: Sequence[Path],
        labels: Sequence[int],
        ids: Sequence[str],
        transform: Transform,
        max_pixels: int | None = None,
    ) -> None:
        if not len(paths) == len(labels) == len(ids):
            raise ValueError(f"paths/labels/ids lengths differ: {len(paths)}, {len(labels)}, {len(ids)}")
        self.paths, self.labels, self.ids = [Path(p) for p in paths], [int(x) for x in labels], list(ids)
        self.transform, self.max_pixels = transform, max_pixels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict:
        image = load_image(self.paths[i], max_pixels=self.max_pixels)
        return {"image": self.transform(image), "label": self.labels[i], "id": self.ids[i]}


class ShapesClassificationDataset(Dataset):
    """Shapes scenes of 1 to ``max_objects`` objects, rendered on demand, labelled by ``scene_label``.

    The default (single objects, scheme ``"size_shape"``) is the 10-class ``CLASS_NAMES`` task; with
    ``"size_color_shape"`` the 60 ``COLOR_CLASS_NAMES`` name the colour too, and with ``max_objects`` > 1 the label
    is the object the caption names first (the left or upper one), so a horizontal flip would change it.
    """

    def __init__(
        self,
        seed: int,
        split: str,
        num: int,
        img_size: int,
        transform: Transform,
        max_objects: int = 1,
        label_scheme: str = "size_shape",
    ) -> None:
        self.scenes = [make_scene(seed, i, split, img_size, 1, max_objects) for i in range(num)]
        self.labels = [scene_label(s, label_scheme) for s in self.scenes]
        self.ids = [f"{split}_{i:06d}" for i in range(num)]
        self.transform = transform
        self._rendered = RenderCache(self.scenes)

    def __len__(self) -> int:
        return len(self.scenes)

    def __getitem__(self, i: int) -> dict:
        image = self._rendered[i]  # (3, H, W) uint8
        return {"image": self.transform(image), "label": self.labels[i], "id": self.ids[i]}
