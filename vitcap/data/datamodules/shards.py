"""Tar shards as the data of `CaptionDataModule` / `ClassificationDataModule` (`data: 'shards/{00000..00127}.tar'`).

`ShardData` holds a data module's shard splits and builds its loaders: the resumable, rank- and worker-sharded
training `ShardLoader` and the evaluation loaders (see `vitcap.data.shards`). Splits: a folder written by
`vitcap data shards` brings its own (`index.json`); a pattern is the training split and `ShardOptions.val` /
`.test` name the others; with neither, the last training shard is held out for validation and test. Samples
skipped for bad data are logged as `data/skipped` (summed over processes) at the end of every training epoch.
"""

from __future__ import annotations

import os
import random
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import lightning as L
from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.data import DataLoader

from vitcap.data.shards.index import Shard, shard_set
from vitcap.data.shards.loader import ShardLoader
from vitcap.data.shards.reader import SkipSample, iter_shard, sample_captions, sample_image, sample_label
from vitcap.data.shards.stream import EvalStream, StreamPlan, TrainStream, world
from vitcap.errors import ConfigError

__all__ = ["CaptionDecode", "LabelDecode", "ShardData", "ShardOptions", "ShardSkips"]


@dataclass
class ShardOptions:
    """How tar shards are read (`data.shards` in a config).

    Attributes:
        val: Shards of the validation split (pattern); default: the folder's index, else the last training shard.
        test: Shards of the test split; default: as `val`.
        shuffle_buffer: Samples in the training shuffle buffer (per worker; raw bytes, before decoding). 1 = none.
        resample: Draw training shards with replacement, per reader, instead of requiring a shard per reader.
    """

    val: str | None = None
    test: str | None = None
    shuffle_buffer: int = 1000
    resample: bool = False


class CaptionDecode:
    """Raw shard sample -> captioning sample: one caption (drawn per sample) or all of them (`all_captions`)."""

    def __init__(self, transform: Callable, all_captions: bool) -> None:
        self.transform, self.all_captions = transform, all_captions

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        captions = sample_captions(sample)  # before the image: a sample without caption costs no decode
        image = self.transform(sample_image(sample))
        if self.all_captions:
            return {"image": image, "captions": captions, "id": sample["__key__"]}
        return {"image": image, "caption": random.choice(captions), "id": sample["__key__"]}


class LabelDecode:
    """Raw shard sample -> classification sample (`KEY.cls`)."""

    def __init__(self, transform: Callable, num_classes: int) -> None:
        self.transform, self.num_classes = transform, num_classes

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        label = sample_label(sample, self.num_classes)
        return {"image": self.transform(sample_image(sample)), "label": label, "id": sample["__key__"]}


class ShardSkips(L.Callback):
    """Logs `data/skipped`: training samples skipped this epoch for bad data, summed over all processes."""

    def __init__(self, data: ShardData) -> None:
        self.data = data

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.data.loader is not None:
            pl_module.log("data/skipped", float(self.data.loader.skipped), reduce_fx="sum", sync_dist=True)


class ShardData:
    """The shard splits of one data module and their loaders.

    Args:
        spec: Training shards: a pattern, glob, URL list or a folder written by `vitcap data shards`.
        options: Split patterns and stream settings.
    """

    def __init__(self, spec: str, options: ShardOptions | dict | None = None) -> None:
        if isinstance(options, dict):  # from Python: `shards={"val": ...}`
            options = ShardOptions(**options)
        self.spec, self.options = spec, options or ShardOptions()
        if self.options.shuffle_buffer < 1:
            raise ConfigError(f"expected >= 1, got {self.options.shuffle_buffer}", key="data.shards.shuffle_buffer")
        self._splits: dict[str, list[Shard]] | None = None
        self.class_names: list[str] | None = None
        self.loader: ShardLoader | None = None

    @property
    def splits(self) -> dict[str, list[Shard]]:
        """Shards per split (`train`, `val`, `test`), counted on first access."""
        if self._splits is None:
            found = shard_set(self.spec)
            self.class_names = found.class_names
            splits = {"train": found.shards, **{k: v for k, v in found.splits.items() if k != "train"}}
            for split in ("val", "test"):
                pattern = getattr(self.options, split)
                if pattern:
                    splits[split] = shard_set(pattern).shards
            if not splits.get("val") and not splits.get("test"):
                if len(splits["train"]) < 2:
                    raise ConfigError(
                        f"{self.spec}: one shard and no validation shards; name them with data.shards.val",
                        key="data.shards.val",
                    )
                rank_zero_warn(f"{self.spec}: no validation shards; the last training shard is held out instead")
                splits["val"] = splits["train"][-1:]
                splits["train"] = splits["train"][:-1]
            splits["val"] = splits.get("val") or splits["test"]
            splits["test"] = splits.get("test") or splits["val"]
            self._splits = splits
        return self._splits

    def captions(self) -> Iterator[str]:
        """Every training caption, streamed from the shards' text members (the vocabulary's one pass)."""
        for shard in self.splits["train"]:
            for sample in iter_shard(shard.url, text_only=True):
                try:
                    yield from sample_captions(sample)
                except SkipSample:
                    continue

    def num_classes_seen(self) -> int:
        """1 + the largest class index of the training shards (a text-only pass), for shards without names."""
        top = -1
        for shard in self.splits["train"]:
            for sample in iter_shard(shard.url, text_only=True):
                try:
                    top = max(top, sample_label(sample))
                except SkipSample:
                    continue
        if top < 0:
            raise ConfigError(f"{self.spec}: no class labels (KEY.cls) in the training shards", key="data.data")
        return top + 1

    def train_loader(
        self,
        decode: Callable,
        collate: Callable,
        batch_size: int,
        num_workers: int,
        trainer: Callable[[], Any],
    ) -> ShardLoader:
        """The resumable training loader of this process (rank and world size from the process group)."""
        world_size, rank = world()
        plan = StreamPlan(
            tuple(self.splits["train"]), batch_size, max(1, num_workers), world_size,
            seed=int(os.environ.get("PL_GLOBAL_SEED", 0)), shuffle_buffer=self.options.shuffle_buffer,
            resample=self.options.resample,
        )  # fmt: skip

        def epoch() -> int | None:  # the epoch Lightning is about to run (it sets no epoch on iterable loaders)
            t = trainer()
            return None if t is None else t.fit_loop.epoch_progress.current.processed

        # Lightning warns that an iterable data set's length may be wrong with workers; this one's is exact.
        warnings.filterwarnings("ignore", message=r"Your `IterableDataset` has `__len__` defined")
        self.loader = ShardLoader(TrainStream(plan, rank, decode, collate), num_workers, epoch)
        return self.loader

    def eval_loader(
        self, split: str, decode: Callable, collate: Callable, batch_size: int, num_workers: int
    ) -> DataLoader:
        """Each sample of `split` once, split over processes and workers."""
        world_size, rank = world()
        stream = EvalStream([s.url for s in self.splits[split]], decode, rank, world_size)
        return DataLoader(stream, batch_size=batch_size, num_workers=num_workers, collate_fn=collate)

    def attach(self, trainer: Any) -> None:
        """Add the `data/skipped` logging callback to a trainer (once)."""
        if trainer is not None and not any(isinstance(c, ShardSkips) for c in trainer.callbacks):
            trainer.callbacks.append(ShardSkips(self))
