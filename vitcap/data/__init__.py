"""Data: image loading, transforms, caption readers, the built-in shapes, datasets, collate, the resumable sampler
and DataModules.

The names below load on first use (PEP 562), so importing one light module of the package, such as
`vitcap.data.images` (numpy and Pillow only), does not import torch, torchvision or Lightning with it: the ONNX
runtime (`vitcap.deploy.runtime`) reads images on machines without torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vitcap.lazy import lazy_exports

if TYPE_CHECKING:  # for type checkers and the architecture check; at run time the names load in __getattr__
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
    from vitcap.data.datamodules import CaptionDataModule, ClassificationDataModule
    from vitcap.data.images import ImageLoadError, load_image
    from vitcap.data.shapes import make_scene, render_scene, scene_image, shapes_main, write_shapes
    from vitcap.data.transforms import build_eval_transform, build_train_transform, make_preprocessing

# name -> submodule that defines it
_EXPORTS = {
    "FORMATS": "captions",
    "CaptionFormatError": "captions",
    "CaptionSet": "captions",
    "ManifestError": "captions",
    "Problem": "captions",
    "detect_format": "captions",
    "hash_split": "captions",
    "read_captions": "captions",
    "CIFAR10_CLASSES": "classification",
    "FASHION_MNIST_CLASSES": "classification",
    "MNIST_CLASSES": "classification",
    "find_idx_pair": "classification",
    "load_idx_pair": "classification",
    "read_idx": "classification",
    "scan_image_folder": "classification",
    "CaptionEvalCollate": "collate",
    "CaptionTrainCollate": "collate",
    "classification_collate": "collate",
    "ImageLoadError": "images",
    "load_image": "images",
    "make_scene": "shapes",
    "render_scene": "shapes",
    "scene_image": "shapes",
    "shapes_main": "shapes",
    "write_shapes": "shapes",
    "build_eval_transform": "transforms",
    "build_train_transform": "transforms",
    "make_preprocessing": "transforms",
    "CaptionDataModule": "datamodules",  # imports Lightning
    "ClassificationDataModule": "datamodules",
}

__all__ = [
    "CIFAR10_CLASSES",
    "CaptionDataModule",
    "CaptionEvalCollate",
    "CaptionFormatError",
    "CaptionSet",
    "CaptionTrainCollate",
    "ClassificationDataModule",
    "FASHION_MNIST_CLASSES",
    "FORMATS",
    "ImageLoadError",
    "MNIST_CLASSES",
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


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
