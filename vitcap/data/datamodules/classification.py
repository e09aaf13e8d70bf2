"""`ClassificationDataModule`: built-in shapes, MNIST/Fashion-MNIST (IDX files), CIFAR-10, an image-folder tree or
tar shards."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.data import DataLoader, Dataset

from vitcap.data.captions import format_problems, manifest_error
from vitcap.data.classification import (
    CIFAR10_CLASSES,
    FASHION_MNIST_CLASSES,
    MNIST_CLASSES,
    find_idx_pair,
    load_cifar10,
    load_idx_pair,
    load_mnist_like,
    read_idx,
    scan_image_folder,
    split_indices,
)
from vitcap.data.collate import classification_collate
from vitcap.data.datamodules.loaders import make_loader
from vitcap.data.datamodules.shards import LabelDecode, ShardData, ShardOptions
from vitcap.data.datasets import FileClassificationDataset, ShapesClassificationDataset, TensorClassificationDataset
from vitcap.data.shapes import CLASS_NAMES as SHAPES_CLASS_NAMES
from vitcap.data.shapes import LABEL_SCHEMES
from vitcap.data.shards.index import is_shard_spec
from vitcap.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    build_eval_transform,
    build_train_transform,
    make_preprocessing,
)
from vitcap.errors import ConfigError, DataError

__all__ = ["ClassificationDataModule"]


_BUILTIN = {
    # name: (default img_size, mean, std, class names, hflip by default)
    "shapes": (64, IMAGENET_MEAN, IMAGENET_STD, SHAPES_CLASS_NAMES, True),
    "mnist": (28, (0.1307,), (0.3081,), MNIST_CLASSES, False),  # digits are chiral
    "fashion_mnist": (28, (0.2860,), (0.3530,), FASHION_MNIST_CLASSES, True),
    "cifar10": (32, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), CIFAR10_CLASSES, True),
    "idx": (28, (0.5,), (0.5,), None, False),
}


class ClassificationDataModule(L.LightningDataModule):
    """Classification data: built-in shapes, MNIST/Fashion-MNIST (IDX files), CIFAR-10, or an image-folder tree.

    In-memory data sets (MNIST, Fashion-MNIST, raw IDX, CIFAR-10) stay one uint8 tensor and are transformed as
    tensors, without PIL. Without a test split on disk the test loaders use the validation split (with a
    warning).

    Args:
        data: ``"shapes"``, ``"mnist"``, ``"fashion_mnist"``, ``"cifar10"``, ``"idx"`` (raw IDX files in
            ``root``), a path to an image-folder tree, or WebDataset tar shards with ``KEY.cls`` class indices
            (``"shards/{00000..00127}.tar"``, a glob, or a folder from ``vitcap data shards``).
        root: Directory of the MNIST/Fashion-MNIST/IDX files or of torchvision's data sets.
        test_root: Directory with the ``t10k-*`` IDX files when not in ``root``.
        img_size: Model input side (default: the data's native size; 224 for image folders).
        in_chans: Model input channels, 3 (grey replicated) or 1.
        batch_size: Training batch size.
        eval_batch_size: Validation/test batch size (default ``batch_size``).
        num_workers: DataLoader worker processes (persistent when > 0).
        val_fraction: Fraction of the training data held out for validation (when there is no val split).
        seed: Seed of the validation split and of the shapes data.
        num_train: Shapes: training images.
        num_val: Shapes: validation images.
        num_test: Shapes: test images.
        max_objects: Shapes: most objects per scene (1-4). With more than one, the label is the object the caption
            names first (the left or upper one), so horizontal flips are off by default and refused when asked for.
        label_scheme: Shapes: what a class names, ``"size_shape"`` (10 classes, ``vitcap.data.shapes.CLASS_NAMES``)
            or ``"size_color_shape"`` (60, ``COLOR_CLASS_NAMES``). Two-object scenes with the 60 classes teach an
            encoder most of what a shapes caption says (configs/demo/shapes_classify_vit_scenes.yaml).
        download: Allow torchvision to download MNIST/Fashion-MNIST/CIFAR-10 into ``root``.
        class_names: Override the class names (e.g. for ``"idx"``).
        augment: Training augmentation on/off.
        crop: ``"pad"`` (pad + random crop), ``"rrc"`` (RandomResizedCrop) or ``"none"``.
        hflip: Random horizontal flips (default: on except for MNIST and raw IDX).
        randaugment: Add RandAugment.
        auto_augment: Add AutoAugment with this policy (``"imagenet"``, ``"cifar10"``, ``"svhn"``).
        skip_bad: Skip bad image-folder entries with a warning instead of raising ``ManifestError``.
        mean: Normalisation mean (default per data set).
        std: Normalisation std (default per data set).
        interpolation: Resize interpolation.
        crop_pct: Evaluation centre-crop fraction.
        shards: Tar shards: validation/test patterns, shuffle buffer, resampling (``ShardOptions``).
    """

    def __init__(
        self,
        data: str = "shapes",
        root: str | None = None,
        test_root: str | None = None,
        img_size: int | None = None,
        in_chans: int = 3,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        val_fraction: float = 0.1,
        seed: int = 0,
        num_train: int = 5000,
        num_val: int = 500,
        num_test: int = 500,
        max_objects: int = 1,
        label_scheme: Literal["size_shape", "size_color_shape"] = "size_shape",
        download: bool = False,
        class_names: list[str] | None = None,
        augment: bool = True,
        crop: Literal["pad", "rrc", "none"] = "pad",
        hflip: bool | None = None,
        randaugment: bool = False,
        auto_augment: str | None = None,
        skip_bad: bool = False,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        interpolation: str = "bicubic",
        crop_pct: float = 1.0,
        shards: ShardOptions | None = None,
    ) -> None:
        super().__init__()
        builtin = _BUILTIN.get(data)
        self._shards = ShardData(data, shards) if builtin is None and is_shard_spec(data) else None
        if builtin is None and self._shards is None and not Path(data).is_dir():
            raise ConfigError(f"data must be one of {sorted(_BUILTIN)} or an image-folder directory; got {data!r}")
        if data in ("mnist", "fashion_mnist", "cifar10", "idx") and root is None:
            raise ConfigError(f"data={data!r} needs root= (the directory holding the files)")
        native, default_mean, default_std, names, default_flip = builtin or (
            224,
            IMAGENET_MEAN,
            IMAGENET_STD,
            None,
            True,
        )
        self.data, self.root, self.test_root = data, root, test_root
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.val_fraction, self.seed = val_fraction, seed
        self.num_train, self.num_val, self.num_test = num_train, num_val, num_test
        self.download = download
        self.augment, self.crop = augment, crop
        self.max_objects, self.label_scheme = max_objects, label_scheme
        if data != "shapes" and (max_objects != 1 or label_scheme != "size_shape"):
            key = "data.max_objects" if max_objects != 1 else "data.label_scheme"
            raise ConfigError(f"{key} applies to the built-in shapes only, not data={data!r}", key=key)
        if data == "shapes":
            if not 1 <= max_objects <= 4:
                raise ConfigError(f"data.max_objects must be 1-4, got {max_objects}", key="data.max_objects")
            if label_scheme not in LABEL_SCHEMES:
                raise ConfigError(f"data.label_scheme must be one of {sorted(LABEL_SCHEMES)}, got {label_scheme!r}",
                                  key="data.label_scheme")  # fmt: skip
            names = LABEL_SCHEMES[label_scheme]
            if max_objects > 1:  # the label names the left (or upper) object: a mirrored scene names another
                if hflip:
                    raise ConfigError("data.hflip must be false when data.max_objects > 1: a flip swaps the left and "
                                      "right objects, and the label names the left one", key="data.hflip")  # fmt: skip
                default_flip = False
        self.hflip = default_flip if hflip is None else hflip
        self.randaugment, self.auto_augment = randaugment, auto_augment
        self.skip_bad = skip_bad
        self._class_names = list(class_names) if class_names is not None else (list(names) if names else None)
        self._preprocessing = make_preprocessing(
            img_size or native, mean or default_mean, std or default_std, interpolation, crop_pct, in_chans
        )
        # Validate augmentation options now rather than at the first training batch.
        build_train_transform("classify", self._preprocessing, crop, self.hflip, randaugment, auto_augment)
        self._splits: dict[str, Dataset] | None = None

    @property
    def img_size(self) -> int:
        """Image size: the side in pixels of the square images the model receives.

        Every batch's ``images`` is (B, in_chans, img_size, img_size); the default is the data's native size
        (28 for MNIST-like, 32 for CIFAR-10, 64 for shapes, 224 for image folders).
        """
        return self._preprocessing["img_size"]

    @property
    def in_chans(self) -> int:
        """Channels of ``images`` in every batch: 3 (grey images replicated) or 1 (colour images to luma)."""
        return self._preprocessing["in_chans"]

    @property
    def preprocessing(self) -> dict:
        """Evaluation preprocessing (``img_size, mean, std, interpolation, crop_pct, in_chans``), a copy.

        What inference must apply to a new image to match the evaluation loaders (stored with the model).
        """
        return dict(self._preprocessing)

    @property
    def class_names(self) -> list[str]:
        """Class names; ``class_names[label]`` names the class of ``labels`` value ``label``."""
        if self._class_names is None and self._shards is not None:
            _ = self._shards.splits  # reads the index, which may name the classes
            names = self._shards.class_names
            self._class_names = list(names) if names else [str(i) for i in range(self._shards.num_classes_seen())]
        if self._class_names is None:
            if self.data == "idx":
                pair = find_idx_pair(self.root, "train")
                if pair is None:
                    raise FileNotFoundError(_idx_missing(self.root, "train"))
                self._class_names = [str(i) for i in range(int(read_idx(pair[1]).max()) + 1)]
            else:
                _, self._class_names, _ = scan_image_folder(self.data, self.val_fraction, self.seed)
        return list(self._class_names)

    @property
    def num_classes(self) -> int:
        """Number of classes: every ``labels`` value is below it (the classifier's output width)."""
        return len(self.class_names)

    def prepare_data(self) -> None:
        """Download torchvision data sets when ``download=True`` (once, on rank 0)."""
        if not self.download:
            return
        if self.data in ("mnist", "fashion_mnist"):
            for train in (True, False):
                load_mnist_like(self.data, self.root, train, download=True)
        elif self.data == "cifar10":
            for train in (True, False):
                load_cifar10(self.root, train, download=True)

    def setup(self, stage: str | None = None) -> None:
        """Load the data (idempotent)."""
        if self._shards is not None:
            _ = self._shards.splits, self.class_names
            self._shards.attach(self.trainer)
            return
        if self._splits is None:
            self._splits = self._build()

    def dataset(self, split: Literal["train", "val", "test"]) -> Dataset:
        """The data set of one split (training augmentation on ``train``; not for shards, which are streamed)."""
        if self._shards is not None:
            raise ConfigError(f"{self.data}: tar shards are streamed; they have no map-style data set", key="data.data")
        self.setup()
        return self._splits[split]

    def _transforms(self):
        eval_tf = build_eval_transform(self._preprocessing)
        if not self.augment:
            return eval_tf, eval_tf
        train_tf = build_train_transform(
            "classify", self._preprocessing, self.crop, self.hflip, self.randaugment, self.auto_augment
        )
        return train_tf, eval_tf

    def _build(self) -> dict[str, Dataset]:
        train_tf, eval_tf = self._transforms()
        if self.data == "shapes":
            return {
                split: ShapesClassificationDataset(
                    self.seed, split, num, self.img_size, tf, self.max_objects, self.label_scheme
                )
                for split, num, tf in (
                    ("train", self.num_train, train_tf),
                    ("val", self.num_val, eval_tf),
                    ("test", self.num_test, eval_tf),
                )
            }
        if self.data in ("mnist", "fashion_mnist", "idx", "cifar10"):
            return self._build_tensor(train_tf, eval_tf)
        return self._build_folder(train_tf, eval_tf)

    def _build_tensor(self, train_tf, eval_tf) -> dict[str, Dataset]:
        if self.data == "cifar10":
            train = load_cifar10(self.root, True, self.download)
            try:
                test = load_cifar10(self.root, False, self.download)
            except FileNotFoundError:
                test = None
        else:
            train = self._load_idx(self.root, True)
            if train is None:
                raise FileNotFoundError(_idx_missing(self.root, "train", self.data != "idx"))
            test = self._load_idx(self.test_root, False) if self.test_root else None
            if test is None:
                test = self._load_idx(self.root, False)
        images, labels = train
        if int(labels.max()) >= self.num_classes or int(labels.min()) < 0:
            raise DataError(f"{self.root}: labels span {int(labels.min())}..{int(labels.max())}, "
                            f"but there are {self.num_classes} class names", path=self.root)  # fmt: skip
        tr, va = split_indices(len(labels), self.val_fraction, self.seed)
        tr_t, va_t = torch.from_numpy(tr), torch.from_numpy(va)
        out = {
            "train": TensorClassificationDataset(images[tr_t], labels[tr_t], [f"train_{i:05d}" for i in tr], train_tf),
            "val": TensorClassificationDataset(images[va_t], labels[va_t], [f"train_{i:05d}" for i in va], eval_tf),
        }
        if test is not None:
            out["test"] = TensorClassificationDataset(
                test[0], test[1], [f"test_{i:05d}" for i in range(len(test[1]))], eval_tf
            )
        else:
            rank_zero_warn(f"{self.root}: no test split found (t10k-* files); the test loaders use the val split")
            out["test"] = out["val"]
        return out

    def _load_idx(self, root: str | None, train: bool):
        if root is None:
            return None
        if self.data == "idx":
            pair = find_idx_pair(root, "train" if train else "t10k")
            return None if pair is None else load_idx_pair(*pair)
        return load_mnist_like(self.data, root, train, self.download)

    def _build_folder(self, train_tf, eval_tf) -> dict[str, Dataset]:
        splits, names, problems = scan_image_folder(self.data, self.val_fraction, self.seed)
        if self._class_names is not None and len(self._class_names) != len(names):
            raise ConfigError(
                f"{self.data}: {len(names)} class directories but {len(self._class_names)} class_names",
                key="data.class_names",
            )
        if problems:
            if not self.skip_bad:
                raise manifest_error(self.data, problems)
            rank_zero_warn(format_problems(self.data, problems, "skipped because skip_bad=True"))
        if not splits["val"] and splits["test"]:
            splits["val"] = splits["test"]
        if not splits["test"]:
            rank_zero_warn(f"{self.data}: no test split; the test loaders use the val split")
            splits["test"] = splits["val"]

        def make(items, tf):
            return FileClassificationDataset(
                [p for p, _, _ in items], [y for _, y, _ in items], [i for _, _, i in items], tf
            )

        return {
            "train": make(splits["train"], train_tf),
            "val": make(splits["val"], eval_tf),
            "test": make(splits["test"], eval_tf),
        }

    def _trainer(self):
        return self.trainer

    def _shard_loader(self, split: str) -> DataLoader:
        train_tf, eval_tf = self._transforms()
        if split == "train":
            decode = LabelDecode(train_tf, self.num_classes)
            return self._shards.train_loader(
                decode, classification_collate, self.batch_size, self.num_workers, self._trainer
            )
        decode = LabelDecode(eval_tf, self.num_classes)
        return self._shards.eval_loader(split, decode, classification_collate, self.eval_batch_size, self.num_workers)

    def train_dataloader(self) -> DataLoader:
        if self._shards is not None:
            return self._shard_loader("train")
        return make_loader(self.dataset("train"), self.batch_size, True, self.num_workers, classification_collate)

    def val_dataloader(self) -> DataLoader:
        if self._shards is not None:
            return self._shard_loader("val")
        return make_loader(self.dataset("val"), self.eval_batch_size, False, self.num_workers, classification_collate)

    def test_dataloader(self) -> DataLoader:
        if self._shards is not None:
            return self._shard_loader("test")
        return make_loader(self.dataset("test"), self.eval_batch_size, False, self.num_workers, classification_collate)

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()


def _idx_missing(root: str | os.PathLike | None, prefix: str, download_hint: bool = False) -> str:
    msg = f"{root}: no {prefix}-images-idx3-ubyte[.gz] + {prefix}-labels-idx1-ubyte[.gz] found (also looked in */raw/)"
    return msg + ("; pass download=True to fetch them" if download_hint else "")
