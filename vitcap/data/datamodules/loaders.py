"""The DataLoaders both data modules build: resumable and shuffled for training, plain in file order otherwise."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch.utils.data import DataLoader, Dataset

from vitcap.data.sampler import resumable_loader

__all__ = ["make_loader"]


def make_loader(
    dataset: Dataset, batch_size: int, shuffle: bool, num_workers: int, collate_fn: Callable[[list], Any]
) -> DataLoader:
    """A loader over ``dataset``; worker processes are persistent when ``num_workers > 0``.

    Args:
        dataset: Map-style data set.
        batch_size: Samples per batch.
        shuffle: Training order: a seeded per-epoch shuffle that resumes mid-epoch (`vitcap.data.sampler`);
            otherwise file order.
        num_workers: DataLoader worker processes.
        collate_fn: Builds a batch dict from a list of samples.
    """
    if shuffle:
        # Training order is a function of (seed, epoch) and the loader's position is checkpointed, so a
        # mid-epoch `--ckpt_path last` continues with the next batch (vitcap.data.sampler).
        return resumable_loader(dataset, batch_size, num_workers, collate_fn)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=num_workers,
        collate_fn=collate_fn,
        persistent_workers=num_workers > 0,
    )
