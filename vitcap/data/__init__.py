"""Data: image loading, transforms, caption readers, the built-in shapes, datasets, collate, the resumable sampler
and DataModules."""

from vitcap.data.captions import (
    FORMATS,
    CaptionFormatError,
    CaptionSet,
    ManifestError,
    Problem,
    detect_format,
    hash_split,
    read_captions,
)
from vitcap.data.classification import (
    CIFAR10_CLASSES,
    FASHION_MNIST_CLASSES,
    MNIST_CLASSES,
    find_idx_pair,
    load_idx_pair,
    read_idx,
    scan_image_folder,
)
from vitcap.data.collate import CaptionEvalCollate, CaptionTrainCollate, classification_collate
from vitcap.data.images import ImageLoadError, load_image
from vitcap.data.shapes import make_scene, render_scene, scene_image, shapes_main, write_shapes
from vitcap.data.transforms import build_eval_transform, build_train_transform, make_preprocessing


def __getattr__(name: str):
    # The DataModules import Lightning; load them on first use so image/caption utilities stay light to import.
    if name in ("CaptionDataModule", "ClassificationDataModule"):
        from vitcap.data import datamodules

        return getattr(datamodules, name)
    raise AttributeError(f"module 'vitcap.data' has no attribute {name!r}")


__all__ = [
    "CIFAR10_CLASSES",
    "FASHION_MNIST_CLASSES",
    "FORMATS",
    "MNIST_CLASSES",
    "CaptionDataModule",
    "CaptionEvalCollate",
    "CaptionFormatError",
    "CaptionSet",
    "CaptionTrainCollate",
    "ClassificationDataModule",
    "ImageLoadError",
    "ManifestError",
    "Problem",
    "build_eval_transform",
    "build_train_transform",
    "classification_collate",
    "detect_format",
    "find_idx_pair",
    "hash_split",
    "load_idx_pair",
    "load_image",
    "make_preprocessing",
    "make_scene",
    "read_captions",
    "read_idx",
    "render_scene",
    "scan_image_folder",
    "scene_image",
    "shapes_main",
    "write_shapes",
]
