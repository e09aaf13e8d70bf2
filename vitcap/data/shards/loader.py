"""`ShardLoader`: the training DataLoader over a `TrainStream`, resumable mid-epoch like the map-style one.

It is a `ResumableDataLoader`, so it plugs into the same mechanism: Lightning saves its `state_dict()` in every
checkpoint and `vitcap.training.callbacks.ResumeState` (or Lightning itself) gives it back through
`load_state_dict` before the first batch. The state is the epoch, the batches delivered, and per rank and worker
slot the position in its raw sample stream (see `stream.py`); nothing else is needed to continue exactly. No
Lightning here: the loader works in plain PyTorch (`set_epoch`, or passes are counted).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader

from vitcap.data.sampler import ResumableDataLoader
from vitcap.data.shards.stream import STATE_KEY, SlotState, TrainStream, world

__all__ = ["ShardLoader"]


def _as_is(batch: dict) -> dict:
    return batch  # the stream collates in its workers; the loader passes batches through unchanged


class ShardLoader(ResumableDataLoader):
    """Batches of a `TrainStream` (one per `next`), `len()` = batches per rank and epoch, checkpointable.

    Args:
        stream: The training stream (its plan's `workers` must match `num_workers`, or be 1 for 0 workers).
        num_workers: Loader worker processes; each reads its own shards. Workers start anew every epoch so they
            see the epoch (and, after a resume, the positions) the stream was given.
        epoch_source: Returns the epoch about to run (the data module passes Lightning's); default: count passes.
        pin_memory: Pin batches in page-locked memory (GPU training).
    """

    def __init__(
        self,
        stream: TrainStream,
        num_workers: int = 0,
        epoch_source: Callable[[], int | None] | None = None,
        pin_memory: bool = False,
    ) -> None:
        if stream.plan.workers != max(1, num_workers):
            raise ValueError(f"the stream plans {stream.plan.workers} worker slots, the loader has {num_workers}")
        super().__init__(
            stream, batch_size=None, num_workers=num_workers, collate_fn=_as_is, pin_memory=pin_memory,
            persistent_workers=False, prefetch_factor=2 if num_workers else None,
        )  # fmt: skip
        self.stream = stream
        self._epoch_source = epoch_source
        self._passes = 0
        self._epoch_explicit: int | None = None
        self._slots: dict[int, SlotState] = {}
        self.skipped = 0  # samples skipped in the current epoch (bad images, damaged shards)

    def set_epoch(self, epoch: int) -> None:
        """Use `epoch` for the next pass (plain PyTorch loops; under Lightning the data module's source wins)."""
        self._epoch_explicit = epoch

    def _next_epoch(self) -> int:
        epoch = self._epoch_source() if self._epoch_source is not None else None
        if epoch is None:
            epoch = self._epoch_explicit if self._epoch_explicit is not None else self._passes
        return int(epoch)

    def __iter__(self) -> Iterator[Any]:
        epoch = self._next_epoch()
        pending, self._pending = self._pending, None
        stream = self.stream
        slots: dict[int, SlotState] = {}
        batches = 0
        if pending is not None and pending["epoch"] == epoch:
            batches = pending["batches"]
            slots = {i: SlotState(*s) for i, s in enumerate(pending["slots"])}
        stream.epoch, stream.resume = epoch, slots
        stream.offset = batches % stream.plan.workers
        self._epoch, self._batches, self._slots = epoch, batches, dict(slots)
        self.skipped = sum(s.skipped for s in slots.values())
        self._passes = epoch + 1
        for batch in DataLoader.__iter__(self):
            local, position, delivered, skipped = batch.pop(STATE_KEY)
            before = self._slots.get(local, SlotState())
            self.skipped += skipped - before.skipped
            self._slots[local] = SlotState(position, delivered, skipped)
            self._batches += 1
            yield batch

    def state_dict(self) -> dict[str, Any]:
        """Epoch, batches, and every rank's slot positions (gathered: Lightning writes rank 0's state only).

        Under DDP every rank must call it (Lightning does: all ranks take part in saving a checkpoint).
        """
        workers = self.stream.plan.workers
        slots = [self._slots.get(i, SlotState()).to_list() for i in range(workers)]
        world_size, _ = world()
        ranks: list[Any] = [slots]
        if world_size > 1:
            ranks = [None] * world_size
            torch.distributed.all_gather_object(ranks, slots)
        return {
            "kind": "shards",
            "epoch": int(self._epoch),
            "batches": int(self._batches),
            "ranks": ranks,
            "plan": self.stream.plan.fingerprint(),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict.get("kind") != "shards" or state_dict.get("plan") != self.stream.plan.fingerprint():
            if world()[1] == 0:  # one warning per run, not one per process
                warnings.warn(
                    "the training shards, batch size, workers or processes changed since the checkpoint was "
                    "written: the interrupted epoch restarts from its first batch",
                    stacklevel=2,
                )
            return
        if 0 < state_dict["batches"] < len(self):
            slots = state_dict["ranks"][self.stream.rank]  # positions differ by rank where bad samples were skipped
            self._pending = {"epoch": state_dict["epoch"], "batches": state_dict["batches"], "slots": slots}
