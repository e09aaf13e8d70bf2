"""The sample streams over shards: training (balanced, seeded, resumable) and evaluation (each sample once).

Training, for a world of R ranks with W loader workers each (W = 1 without workers), batch size B:

- **Slots.** Each (rank, worker) pair is a slot `g = rank * W + w`. Every epoch the shard list is permuted with
  a seed of (seed, epoch) and slot g reads shards `perm[g::R*W]`, so no two workers anywhere read the same shard,
  and every shard is read in some slot each epoch. Fewer shards than R*W slots is a `ConfigError`, unless
  `resample`: then each slot draws shards with replacement (seeded per slot and epoch) for as long as it needs.
- **Equal batch counts.** Every rank yields `N = total samples // (R * B)` batches per epoch (the total from
  the index, see `index.py`); the batches of a rank go round-robin over its workers, so worker w yields the
  batches `w, w + W, ...`. A slot whose shards run out first starts over on them, one with more leaves the
  rest for later epochs (the permutation changes). Skipped (bad) samples are replaced by the next ones, so a
  rank never comes up short and DDP never waits on a rank that ran dry.
- **Shuffle.** Raw samples (bytes, not yet decoded) pass through the webdataset shuffle buffer with a
  `random.Random` seeded by (seed, epoch, slot); each decoded sample's augmentation draws come from
  `torch`/`random` generators seeded by (seed, epoch, slot, position), so they do not depend on workers,
  timing or the global random state.
- **Resume.** The only state is, per slot, how many raw samples of its stream were consumed and how many
  batches it delivered (carried in each batch under `STATE_KEY`, kept by `ShardLoader`). A resumed slot replays
  its raw stream up to that position without decoding anything, so it continues with exactly the batch the
  uninterrupted run would have produced; `ShardLoader` rotates workers so the round-robin order resumes too.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Any

import torch
from torch.utils.data import IterableDataset, get_worker_info

from vitcap.data.shards.index import Shard
from vitcap.data.shards.reader import SkipSample, iter_shard, warn_problem
from vitcap.errors import ConfigError, DataError

__all__ = ["STATE_KEY", "EvalStream", "SlotState", "StreamPlan", "TrainStream", "world"]

STATE_KEY = "_shard_stream"  # batch entry the loader strips: which slot produced it and where that slot is
Decode = Callable[[dict[str, Any]], dict[str, Any]]  # raw sample -> dataset sample; raises SkipSample


def world() -> tuple[int, int]:
    """(world size, rank) of the initialised process group, else (1, 0)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size(), torch.distributed.get_rank()
    return 1, 0


@dataclass(frozen=True)
class StreamPlan:
    """What all ranks agree on for one training run (a change of any field restarts an interrupted epoch)."""

    shards: tuple[Shard, ...]
    batch_size: int
    workers: int  # W: loader workers per rank (1 without workers)
    world_size: int
    seed: int = 0
    shuffle_buffer: int = 1000
    resample: bool = False

    def __post_init__(self) -> None:
        slots = self.world_size * self.workers
        if not self.shards:
            raise DataError("no training shards")
        if len(self.shards) < slots and not self.resample:
            raise ConfigError(
                f"{len(self.shards)} training shards for {self.world_size} processes x {self.workers} loader "
                f"workers = {slots} readers: every reader needs a shard of its own. Write more shards "
                "(`vitcap data shards --per-shard`), use fewer workers, or set resample: true",
                key="data.shards",
            )
        if self.batches_per_rank < 1:
            raise ConfigError(
                f"{self.num_samples} training samples make no full batch of {self.batch_size} on each of "
                f"{self.world_size} processes",
                key="data.batch_size",
            )

    @property
    def num_samples(self) -> int:
        return sum(s.count for s in self.shards)

    @property
    def batches_per_rank(self) -> int:
        """N: batches every rank yields per epoch."""
        return self.num_samples // (self.world_size * self.batch_size)

    def slot_batches(self, slot: int) -> int:
        """Batches the worker slot `slot` (0 .. W-1) of a rank yields per epoch (round-robin share of N)."""
        return len(range(slot, self.batches_per_rank, self.workers))

    def fingerprint(self) -> list:
        return [[s.url.rsplit("/", 1)[-1] for s in self.shards], self.batch_size, self.workers, self.world_size,
                self.seed, self.shuffle_buffer, self.resample, self.num_samples]  # fmt: skip

    def slot_passes(self, epoch: int, slot: int) -> Iterator[list[str]]:
        """Shard URLs global slot `slot` reads in `epoch`, pass after pass: its share of the permutation, again and
        again (or, with `resample`, as many shards drawn with replacement per pass)."""
        urls = [s.url for s in self.shards]
        readers = self.world_size * self.workers
        if self.resample:
            rng = random.Random(f"vitcap-shards/{self.seed}/{epoch}/{slot}/resample")
            while True:
                yield [rng.choice(urls) for _ in range(max(1, len(urls) // readers))]
        order = list(range(len(urls)))
        random.Random(f"vitcap-shards/{self.seed}/{epoch}").shuffle(order)
        mine = [urls[i] for i in order[slot::readers]]
        while True:
            yield mine


@dataclass
class SlotState:
    """Where one worker slot of a rank is: raw samples consumed, batches delivered, samples skipped."""

    position: int = 0
    batches: int = 0
    skipped: int = 0

    def to_list(self) -> list[int]:
        return [self.position, self.batches, self.skipped]


class _Report:
    """Counts what a slot's reader skipped (damaged shards) and warns about it once per sample."""

    def __init__(self) -> None:
        self.count = 0
        self.muted = False  # while a resumed slot replays what the interrupted run already reported

    def __call__(self, url: str, key: str, reason: str) -> None:
        if not self.muted:
            self.count += 1
            warn_problem(url, key, reason)


class TrainStream(IterableDataset):
    """Training batches from shards (see the module docstring); `len()` is N, the batches per rank and epoch.

    Args:
        plan: The shards and the settings every rank shares.
        rank: This process's rank.
        decode: Raw sample -> dataset sample (image transformed); raises `SkipSample` for a bad one.
        collate: List of dataset samples -> batch dict.
    """

    def __init__(self, plan: StreamPlan, rank: int, decode: Decode, collate: Callable[[list], dict]) -> None:
        self.plan, self.rank, self.decode, self.collate = plan, rank, decode, collate
        self.epoch = 0
        self.offset = 0  # worker w plays slot (w + offset) % W: the round-robin resumes where it stopped
        self.resume: dict[int, SlotState] = {}

    def __len__(self) -> int:
        return self.plan.batches_per_rank

    def _raw(self, epoch: int, slot: int, report: _Report) -> Iterator[dict[str, Any]]:
        """The slot's raw samples, shuffled within each pass over its shards (so that one pass's samples all come
        out before the next pass's: when the shards hold exactly the slot's share, each sample is seen once)."""
        from webdataset.filters import shuffle

        plan = self.plan
        for number, urls in enumerate(plan.slot_passes(epoch, slot)):
            samples = (sample for url in urls for sample in iter_shard(url, report))
            if plan.shuffle_buffer > 1:
                rng = random.Random(f"vitcap-shards/{plan.seed}/{epoch}/{slot}/{number}/shuffle")
                samples = shuffle(plan.shuffle_buffer, plan.shuffle_buffer, rng=rng)(samples)
            empty = True
            for sample in samples:
                empty = False
                yield sample
            if empty:
                raise DataError(f"training slot {slot}: none of its shards holds a readable sample ({urls[0]}, ...)")

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        local = ((info.id if info else 0) + self.offset) % self.plan.workers
        slot = self.rank * self.plan.workers + local
        state = self.resume.get(local, SlotState())
        epoch, plan = self.epoch, self.plan
        report = _Report()
        raw = self._raw(epoch, slot, report)
        report.muted = True
        for _ in islice(raw, state.position):  # replay what the interrupted run consumed, without decoding
            pass
        report.muted = False
        base = random.Random(f"vitcap-shards/{plan.seed}/{epoch}/{slot}/augment").getrandbits(62)
        position, batches, skipped = state.position, state.batches, state.skipped
        wanted = plan.slot_batches(local)
        samples: list[dict[str, Any]] = []
        bad_run = 0
        for sample in raw if batches < wanted else ():
            position += 1
            try:
                samples.append(_seeded(self.decode, sample, base + position))
                bad_run = 0
            except SkipSample as e:
                skipped, bad_run = skipped + 1, bad_run + 1
                warn_problem(sample["__url__"], sample["__key__"], str(e))
                if bad_run > plan.num_samples:
                    raise DataError(f"training slot {slot}: no usable sample in {bad_run} in a row") from None
            if len(samples) == plan.batch_size:
                batches += 1
                batch = self.collate(samples)
                batch[STATE_KEY] = [local, position, batches, skipped + report.count]
                samples = []
                yield batch
                if batches >= wanted:
                    return


def _seeded(decode: Decode, sample: dict[str, Any], seed: int) -> dict[str, Any]:
    """`decode(sample)` with torch's and Python's generators seeded for this sample, the caller's left as they were."""
    state = random.getstate()
    random.seed(seed)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)  # CPU only: torch.manual_seed also queues a CUDA call per sample
            return decode(sample)
    finally:
        random.setstate(state)


class EvalStream(IterableDataset):
    """Each evaluation sample once, in shard order, split over ranks and workers: by shard when every reader can
    have one, else by sample (evaluation sets are small). Bad samples are skipped with a warning.

    Args:
        urls: The split's shards.
        decode: Raw sample -> dataset sample; raises `SkipSample` for a bad one.
        rank: This process's rank.
        world_size: Number of processes.
    """

    def __init__(self, urls: list[str], decode: Decode, rank: int = 0, world_size: int = 1) -> None:
        self.urls, self.decode, self.rank, self.world_size = list(urls), decode, rank, world_size

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        workers, worker = (info.num_workers, info.id) if info else (1, 0)
        readers, me = self.world_size * workers, self.rank * workers + worker
        by_shard = len(self.urls) >= readers
        index = -1
        for url in self.urls[me::readers] if by_shard else self.urls:
            for sample in iter_shard(url):
                index += 1
                if not by_shard and index % readers != me:
                    continue
                try:
                    yield _seeded(self.decode, sample, index)
                except SkipSample as e:
                    warn_problem(url, sample["__key__"], str(e))
