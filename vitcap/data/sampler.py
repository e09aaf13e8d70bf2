"""Resumable training order: a seeded per-epoch shuffle whose position in the epoch is saved in checkpoints.

`ResumableSampler` + `ResumableDataLoader` (the training loaders of both data modules, built by
`resumable_loader`): the shuffle is a function of (seed, epoch) only and the loader's position is part of the
checkpoint, so `--ckpt_path last` from a mid-epoch checkpoint continues with the very next batch instead of
restarting the epoch. Lightning saves the loader's `state_dict()`; the training callbacks restore it. This module
imports no Lightning, so the data stays usable in plain PyTorch.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

__all__ = ["ResumableDataLoader", "ResumableSampler", "resumable_loader"]


def _is_rank_zero() -> bool:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank() == 0
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", 0))) == 0


class ResumableSampler(DistributedSampler):
    """`DistributedSampler`'s seeded shuffle (a permutation of `seed + epoch`) that can start part-way.

    Being a `DistributedSampler`, Lightning keeps it under DDP instead of injecting its own; it shards over the
    initialised process group, or is a plain seeded shuffle in one process. `start` (samples of this replica to
    skip) applies to the next pass only.

    Args:
        dataset: The map-style data set.
        shuffle: Shuffle per epoch.
        seed: Shuffle seed; default `PL_GLOBAL_SEED` (what `seed_everything` set) or 0.
    """

    def __init__(self, dataset: Dataset, shuffle: bool = True, seed: int | None = None) -> None:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            replicas, rank = torch.distributed.get_world_size(), torch.distributed.get_rank()
        else:
            replicas, rank = 1, 0
        seed = int(os.environ.get("PL_GLOBAL_SEED", 0)) if seed is None else seed
        super().__init__(dataset, num_replicas=replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=False)
        self.start = 0

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        start, self.start = self.start, 0
        return iter(indices[start:])


class ResumableDataLoader(DataLoader):
    """A `DataLoader` whose place in the epoch is saved in checkpoints (Lightning stores `state_dict()`).

    After `load_state_dict` (called by `ResumeState`, and by Lightning when it sets the loader up after the
    restore) the next pass skips the batches the interrupted run had consumed, at the sampler, so no image is
    loaded for nothing. The skip applies only when the epoch Lightning sets on the sampler (`set_epoch`, before
    the first batch) is the interrupted one, so an end-of-epoch checkpoint starts the next epoch normally. Use
    with a `ResumableSampler`.
    """

    _pending: dict[str, int] | None = None
    _epoch: int = 0
    _batches: int = 0

    def __iter__(self) -> Iterator[Any]:
        # A generator: the sampler is read at the first batch, after Lightning's set_epoch for the epoch.
        sampler = self.sampler
        pending, self._pending = self._pending, None
        epoch = getattr(sampler, "epoch", 0)
        skip = 0
        if pending is not None and pending["epoch"] == epoch and isinstance(sampler, ResumableSampler):
            skip = pending["batches"]
            sampler.start = skip * (self.batch_size or 1)
        # The worker base seed comes from the loader's generator: tie it to the epoch, not to the global RNG.
        if self.generator is not None:
            self.generator.manual_seed(getattr(sampler, "seed", 0) * 1_000_003 + epoch)
        self._epoch, self._batches = epoch, skip
        for batch in super().__iter__():
            self._batches += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        return {
            "epoch": int(self._epoch),
            "batches": int(self._batches),
            "batch_size": int(self.batch_size or 1),
            "num_samples": len(self.sampler),  # type: ignore[arg-type]
        }

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        same = state_dict.get("batch_size") == (self.batch_size or 1) and state_dict.get("num_samples") == len(
            self.sampler  # type: ignore[arg-type]
        )
        if not same:
            if _is_rank_zero():  # one warning per run, not one per process
                warnings.warn(
                    "the training data or batch size changed since the checkpoint was written: the interrupted "
                    "epoch restarts from its first batch",
                    stacklevel=2,
                )
            return
        if 0 < state_dict["batches"] < len(self):
            self._pending = {"epoch": int(state_dict["epoch"]), "batches": int(state_dict["batches"])}


def resumable_loader(
    dataset: Dataset, batch_size: int, num_workers: int, collate_fn: Any, seed: int | None = None
) -> ResumableDataLoader:
    """The shuffled training loader both data modules use: seeded per epoch and resumable mid-epoch."""
    sampler = ResumableSampler(dataset, shuffle=True, seed=seed)
    return ResumableDataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate_fn,
        persistent_workers=num_workers > 0,
        generator=torch.Generator(),
    )
