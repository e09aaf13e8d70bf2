"""`CaptionDataModule`: the built-in shapes, any caption file/folder or tar shards, with a tokenizer trained on its
train split."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import lightning as L
from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.data import DataLoader

from vitcap.data.captions import SPLITS, read_captions
from vitcap.data.collate import CaptionEvalCollate, CaptionTrainCollate
from vitcap.data.datamodules.loaders import make_loader
from vitcap.data.datamodules.shards import CaptionDecode, ShardData, ShardOptions
from vitcap.data.datasets import CaptionEvalDataset, CaptionTrainDataset, FileCaptionSource, ShapesCaptionSource
from vitcap.data.shapes import CLASS_NAMES
from vitcap.data.shards.index import is_shard_spec
from vitcap.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    build_eval_transform,
    build_train_transform,
    make_preprocessing,
)
from vitcap.errors import ConfigError, DataError
from vitcap.tokenizer import BOS_ID, EOS_ID, PAD_ID, CaptionTokenizer

__all__ = ["CaptionDataModule"]


class CaptionDataModule(L.LightningDataModule):
    """Captioning data: the built-in shapes, any caption file/folder ``read_captions`` reads, or tar shards.

    Training batches hold one (image, caption) pair per row; validation/test batches hold each image once with
    all its references (see ``vitcap.data.collate``). The tokenizer is trained on the training split's captions
    only.

    Args:
        data: ``"shapes"``, a caption file / folder, or WebDataset tar shards (``"shards/{00000..00127}.tar"``, a
            glob, or a folder from ``vitcap data shards``; see ``vitcap.data.datamodules.shards``).
        format: Caption format for files (``"auto"`` detects it).
        images_dir: Root of the image paths in the caption file (default: see ``read_captions``).
        img_size: Model input side in pixels.
        batch_size: Training batch size (pairs).
        eval_batch_size: Validation/test/predict batch size in images (default ``batch_size``).
        num_workers: DataLoader worker processes (persistent when > 0).
        max_length: Longest token row T including ``[BOS]``/``[EOS]``; longer captions are truncated.
        tokenizer: ``"word"``, ``"bpe"``, or a serialised tokenizer (``CaptionTokenizer.to_json()`` output, or a
            path to a file holding it) to reuse a fixed vocabulary.
        min_freq: Minimum count of a training word to enter the vocabulary.
        bpe_vocab_size: Vocabulary size for ``tokenizer="bpe"``.
        num_train: Shapes: training images.
        num_val: Shapes: validation images.
        num_test: Shapes: test images.
        max_objects: Shapes: most objects per scene (1-4).
        seed: Shapes data seed.
        val_fraction: Files without splits: fraction of images (by hash of the name) for validation.
        test_fraction: Files without splits: fraction for test.
        skip_bad: Skip bad manifest entries with a warning instead of raising ``ManifestError``.
        verify_images: Decode every image once up front (finds corrupt files before training).
        augment: Mild zoom augmentation for training (no flips or colour changes, see ``transforms``).
        group_captions: Training batches hold ``batch_size`` images, each once with all its captions, so an image
            is encoded once for all of them (less encoder work per caption). Every
            (image, caption) pair is still seen once per epoch; only which pairs share a batch changes.
        mean: Normalisation mean per channel.
        std: Normalisation std per channel.
        interpolation: Resize interpolation.
        crop_pct: Evaluation centre-crop fraction.
        shards: Tar shards: validation/test patterns, shuffle buffer, resampling (``ShardOptions``).

    Attributes:
        max_length: Caption length: the most token ids in one row of ``tokens``, counting ``[BOS]`` and ``[EOS]``
            (so at most ``max_length - 2`` caption tokens; longer captions are cut before ``[EOS]``). A batch's
            T is its longest row, at most ``max_length``.
    """

    def __init__(
        self,
        data: str = "shapes",
        format: str = "auto",
        images_dir: str | None = None,
        img_size: int = 64,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        max_length: int = 32,
        tokenizer: str = "word",
        min_freq: int = 1,
        bpe_vocab_size: int = 1000,
        num_train: int = 5000,
        num_val: int = 250,
        num_test: int = 250,
        max_objects: int = 2,
        seed: int = 0,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        skip_bad: bool = False,
        verify_images: bool = False,
        augment: bool = True,
        group_captions: bool = False,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        interpolation: str = "bicubic",
        crop_pct: float = 1.0,
        shards: ShardOptions | None = None,
    ) -> None:
        super().__init__()
        if max_length < 2:
            raise ConfigError(f"max_length must be >= 2, got {max_length}")
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        self.data = data
        self.format = format
        self.images_dir = images_dir
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.max_length = max_length
        self.tokenizer_spec = tokenizer
        self.min_freq = min_freq
        self.bpe_vocab_size = bpe_vocab_size
        self.num_train, self.num_val, self.num_test = num_train, num_val, num_test
        self.max_objects = max_objects
        self.seed = seed
        self.val_fraction, self.test_fraction = val_fraction, test_fraction
        self.skip_bad = skip_bad
        self.verify_images = verify_images
        self.augment = augment
        self.group_captions = group_captions
        self._preprocessing = make_preprocessing(img_size, mean, std, interpolation, crop_pct, 3)
        if tokenizer not in ("word", "bpe"):
            self._tokenizer: CaptionTokenizer | None = _load_tokenizer(tokenizer)
        else:
            self._tokenizer = None
        self._sources: dict[str, FileCaptionSource | ShapesCaptionSource] | None = None
        self._shards = ShardData(data, shards) if is_shard_spec(data) else None

    # -- what the model needs before it is built ------------------------------------------------------------

    @property
    def img_size(self) -> int:
        """Image size: the side in pixels of the square images the model receives.

        Every batch's ``images`` is (B, 3, img_size, img_size), training and evaluation alike; it is the encoder's
        input size.
        """
        return self._preprocessing["img_size"]

    @property
    def in_chans(self) -> int:
        """Channels of ``images`` in every batch (always 3: captioning images are RGB)."""
        return 3

    @property
    def preprocessing(self) -> dict:
        """Evaluation preprocessing (``img_size, mean, std, interpolation, crop_pct, in_chans``), a copy.

        What inference must apply to a new image to match the evaluation loaders (stored with the model).
        """
        return dict(self._preprocessing)

    @property
    def tokenizer(self) -> CaptionTokenizer:
        """The caption tokenizer that makes ``tokens``.

        The one passed as ``tokenizer`` or restored from a checkpoint, else trained on the training split's
        captions on first access.
        """
        if self._tokenizer is None:
            if self._shards is not None:  # one streaming pass over the caption members; no image is read
                captions = self._shards.captions()
            else:
                captions = (c for caps in self.sources["train"].captions for c in caps)
            kind = self.tokenizer_spec
            vocab_size = self.bpe_vocab_size if kind == "bpe" else None
            self._tokenizer = CaptionTokenizer.train(captions, kind=kind, min_freq=self.min_freq, vocab_size=vocab_size)
        return self._tokenizer

    @property
    def tokenizer_json(self) -> str:
        """The tokenizer serialised with ``CaptionTokenizer.to_json`` (stored in checkpoints)."""
        return self.tokenizer.to_json()

    @property
    def class_names(self) -> list[str] | None:
        """Class names of the ``labels`` the batches carry (the built-in shapes: ``vitcap.data.shapes.CLASS_NAMES``,
        for joint classification + captioning), or None: caption files and shards carry no class labels."""
        return list(CLASS_NAMES) if self.data == "shapes" else None

    @property
    def vocab_size(self) -> int:
        """Number of token ids V, special tokens included: every id in ``tokens`` is below it."""
        return self.tokenizer.vocab_size

    pad_id = PAD_ID  # id that right-pads ``tokens`` rows; the loss ignores it
    bos_id = BOS_ID  # id that starts every ``tokens`` row
    eos_id = EOS_ID  # id that ends every caption in ``tokens`` (before any padding)

    # -- data -----------------------------------------------------------------------------------------------

    @property
    def sources(self) -> dict[str, FileCaptionSource | ShapesCaptionSource]:
        """Images and captions per split (``train``/``val``/``test``), read on first access (not for shards)."""
        if self._shards is not None:
            raise ConfigError(
                f"{self.data}: tar shards are streamed, so their captions are not held in memory (needed by SCST "
                "rewards and the map-style datasets); use a caption file",
                key="data.data",
            )
        if self._sources is None:
            self._sources = self._read_sources()
        return self._sources

    def _read_sources(self) -> dict[str, FileCaptionSource | ShapesCaptionSource]:
        if self.data == "shapes":
            counts = {"train": self.num_train, "val": self.num_val, "test": self.num_test}
            return {
                s: ShapesCaptionSource(self.seed, s, n, self.img_size, 1, self.max_objects) for s, n in counts.items()
            }
        cs = read_captions(
            self.data, self.format, self.images_dir, skip_bad=self.skip_bad, verify_images=self.verify_images
        )
        parts = cs.split_images(self.val_fraction, self.test_fraction)
        if not parts["train"]:
            raise DataError(
                f"{self.data}: no training images (splits: { {s: len(p) for s, p in parts.items()} })", path=self.data
            )
        for missing, other in (("test", "val"), ("val", "test")):
            if not parts[missing] and parts[other]:
                rank_zero_warn(f"{self.data}: no {missing} split; the {missing} loaders use the {other} split")
                parts[missing] = parts[other]
        return {
            s: FileCaptionSource(paths, [cs[p] for p in paths], [cs.image_id(p) for p in paths])
            for s, paths in parts.items()
        }

    def setup(self, stage: str | None = None) -> None:
        """Read the data and build the tokenizer (idempotent)."""
        if self._shards is not None:
            _ = self._shards.splits, self.tokenizer
            self._shards.attach(self.trainer)
            return
        _ = self.sources, self.tokenizer

    def _train_transform(self):
        if not self.augment:
            return build_eval_transform(self._preprocessing)
        return build_train_transform("caption", self._preprocessing)

    def train_dataset(self) -> CaptionTrainDataset:
        """(image, caption) pairs of the training split."""
        return CaptionTrainDataset(self.sources["train"], self._train_transform())

    def eval_dataset(self, split: Literal["train", "val", "test"]) -> CaptionEvalDataset:
        """Images of a split, each once with all references, with the evaluation transform."""
        if split not in SPLITS:
            raise ConfigError(f"split must be one of {SPLITS}, got {split!r}")
        return CaptionEvalDataset(self.sources[split], build_eval_transform(self._preprocessing))

    def _trainer(self):
        return self.trainer

    def _shard_eval_loader(self, split: str, with_tokens: bool = True) -> DataLoader:
        collate = CaptionEvalCollate(self.tokenizer, self.max_length, with_tokens=with_tokens)
        decode = CaptionDecode(build_eval_transform(self._preprocessing), all_captions=True)
        return self._shards.eval_loader(split, decode, collate, self.eval_batch_size, self.num_workers)

    def train_dataloader(self) -> DataLoader:
        if self._shards is not None:
            decode = CaptionDecode(self._train_transform(), all_captions=self.group_captions)
            collate = (CaptionEvalCollate if self.group_captions else CaptionTrainCollate)(
                self.tokenizer, self.max_length
            )
            return self._shards.train_loader(decode, collate, self.batch_size, self.num_workers, self._trainer)
        if self.group_captions:
            dataset = CaptionEvalDataset(self.sources["train"], self._train_transform())
            collate = CaptionEvalCollate(self.tokenizer, self.max_length)
            return make_loader(dataset, self.batch_size, True, self.num_workers, collate)
        collate = CaptionTrainCollate(self.tokenizer, self.max_length)
        return make_loader(self.train_dataset(), self.batch_size, True, self.num_workers, collate)

    def val_dataloader(self) -> DataLoader:
        if self._shards is not None:
            return self._shard_eval_loader("val")
        collate = CaptionEvalCollate(self.tokenizer, self.max_length)
        return make_loader(self.eval_dataset("val"), self.eval_batch_size, False, self.num_workers, collate)

    def test_dataloader(self) -> DataLoader:
        if self._shards is not None:
            return self._shard_eval_loader("test")
        collate = CaptionEvalCollate(self.tokenizer, self.max_length)
        return make_loader(self.eval_dataset("test"), self.eval_batch_size, False, self.num_workers, collate)

    def predict_dataloader(self) -> DataLoader:
        """Test-split images with ``ids`` and ``references`` (no tokens)."""
        if self._shards is not None:
            return self._shard_eval_loader("test", with_tokens=False)
        collate = CaptionEvalCollate(self.tokenizer, self.max_length, with_tokens=False)
        return make_loader(self.eval_dataset("test"), self.eval_batch_size, False, self.num_workers, collate)

    # The tokenizer travels in the checkpoint, so a resumed run keeps its vocabulary even if the data changed.
    def state_dict(self) -> dict:
        return {"tokenizer_json": self.tokenizer_json}

    def load_state_dict(self, state_dict: dict) -> None:
        if "tokenizer_json" in state_dict:
            self._tokenizer = CaptionTokenizer.from_json(state_dict["tokenizer_json"])


def _load_tokenizer(spec: str) -> CaptionTokenizer:
    text = spec
    if not spec.lstrip().startswith("{"):
        path = Path(spec)
        if not path.is_file():
            raise ConfigError(
                f"tokenizer must be 'word', 'bpe', a serialised tokenizer or a file holding one; got {spec!r}"
            )
        text = path.read_text(encoding="utf-8")
    return CaptionTokenizer.from_json(text)
