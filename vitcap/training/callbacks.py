"""Callbacks vitcap adds to Lightning's: exact resume, stop on signals, best + last checkpoints, JSON predictions.

- `ResumeState`: torch / CUDA / numpy / Python random states travel in the checkpoint, and they and the training
  loader's position are restored right before the first batch after a resume (so `--ckpt_path last` from a
  mid-epoch checkpoint continues the very batches and random streams of the uninterrupted run).
- `StopOnSignal`: SIGTERM or SIGINT during training saves `last.ckpt` at the next batch boundary and ends the run
  with `TrainingInterrupted` (exit status 143 / 130); a second signal stops at once.
- `best_and_last_checkpoints`: the one definition of the `best.ckpt` + always-fresh `last.ckpt` pair.
- `JsonPredictionWriter`: `predict` output as one JSON file, written atomically.

Bit-exact resume holds on CPU with `num_workers: 0` (one process, fixed thread count): DataLoader worker
processes draw augmentation randomness from their own generators, which are not checkpointed, so with workers a
resumed run sees the same batches in the same order but different augmentation draws. The cases and the tests
behind them are listed in docs/RELIABILITY.md.
"""

from __future__ import annotations

import json
import os
import random
import signal
import threading
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter, Callback, ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader

from vitcap.data.sampler import ResumableDataLoader
from vitcap.errors import UserError
from vitcap.training.signals import STOP_SIGNALS, TrainingInterrupted

__all__ = [
    "JsonPredictionWriter",
    "ResumeState",
    "StopOnSignal",
    "best_and_last_checkpoints",
    "last_checkpoint_path",
]


def best_and_last_checkpoints(monitor: str, mode: str, dirpath: str | None = None) -> list[ModelCheckpoint]:
    """`best.ckpt` on `monitor` and a `last.ckpt` rewritten every epoch, both without version suffixes.

    `last.ckpt` is its own callback because Lightning's `save_last` only refreshes it when the monitored
    checkpoint improved, which would make `--ckpt_path last` resume from a stale epoch.
    """
    return [
        ModelCheckpoint(dirpath=dirpath, filename="best", monitor=monitor, mode=mode, enable_version_counter=False),
        ModelCheckpoint(dirpath=dirpath, filename="last", save_top_k=1, enable_version_counter=False),
    ]


def _loaders(tree: Any) -> list[Any]:
    if isinstance(tree, DataLoader):
        return [tree]
    if isinstance(tree, dict):
        tree = list(tree.values())
    if isinstance(tree, (list, tuple)):
        return [loader for item in tree for loader in _loaders(item)]
    return []


class ResumeState(Callback):
    """What Lightning does not restore on resume: the random states, and (in 2.6) the training loader position.

    Random states: torch, CUDA, numpy and Python, saved with the checkpoint. Loader position: Lightning saves
    the `state_dict()` of a stateful training loader, but only loads it while setting the loader up during the
    restart; `trainer.estimated_stepping_batches` (used by vitcap's default LR schedule) sets the loader up
    earlier, before the checkpoint is restored, so the saved position would be dropped. Both are applied in
    `on_train_start`, which runs after the loader exists and before the first batch is drawn, so the resumed run
    continues the very batches and random streams the uninterrupted run would have used.
    """

    def __init__(self) -> None:
        self._rng: dict[str, Any] | None = None
        self._loader_states: list[dict[str, Any]] = []

    def state_dict(self) -> dict[str, Any]:
        # Tensors, ints and lists only: checkpoints must load with torch.load(weights_only=True).
        kind, keys, pos, has_gauss, cached = np.random.get_state()
        version, py_state, gauss = random.getstate()
        return {
            "torch": torch.get_rng_state(),
            "cuda": list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else [],
            "numpy": {
                "kind": str(kind),
                "keys": torch.from_numpy(keys.astype(np.int64)),
                "pos": int(pos),
                "has_gauss": int(has_gauss),
                "cached": float(cached),
            },
            "python": {"version": int(version), "state": list(py_state), "gauss": gauss},
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._rng = state_dict

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        fit_loop = checkpoint.get("loops", {}).get("fit_loop", {})
        self._loader_states = list(fit_loop.get("state_dict", {}).get("combined_loader", []))

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        states, self._loader_states = self._loader_states, []
        # Lightning saved one state per stateful loader, in flattening order; other kinds it restores itself.
        stateful = [dl for dl in _loaders(trainer.train_dataloader) if hasattr(dl, "state_dict")]
        for loader, state in zip(stateful, states):
            if isinstance(loader, ResumableDataLoader):
                loader.load_state_dict(state)
        rng, self._rng = self._rng, None
        if not rng:
            return
        torch.set_rng_state(rng["torch"])
        if rng["cuda"] and torch.cuda.is_available() and len(rng["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(rng["cuda"])
        n = rng["numpy"]
        np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
        p = rng["python"]
        random.setstate((p["version"], tuple(p["state"]), p["gauss"]))


def last_checkpoint_path(trainer: pl.Trainer) -> Path | None:
    """Where `--ckpt_path last` looks: `last.ckpt` in the folder of the run's `last` ModelCheckpoint (or the first)."""
    callbacks = [c for c in trainer.checkpoint_callbacks if isinstance(c, ModelCheckpoint) and c.dirpath]
    if not callbacks:
        return None
    chosen = next((c for c in callbacks if c.filename == c.CHECKPOINT_NAME_LAST or c.save_last), callbacks[0])
    return Path(chosen.dirpath) / f"{chosen.CHECKPOINT_NAME_LAST}{chosen.FILE_EXTENSION}"


class StopOnSignal(Callback):
    """SIGTERM / SIGINT during training: save `last.ckpt` at the next batch boundary, then stop with exit 143 / 130.

    Lightning 2.6 on its own turns SIGTERM into a graceful stop with exit status 0, and Ctrl+C into exit status 1
    without a checkpoint; a scheduler (SLURM, Kubernetes) then cannot tell an interrupted run from a finished one. Here the signal handler only records the signal; the checkpoint is written where Lightning writes its
    own step checkpoints (`on_train_batch_end`, or `on_validation_end` when the signal came during validation),
    so `--ckpt_path last` resumes exactly. A second signal stops at once, without saving. Under DDP every rank
    stops at the same batch (the flag is all-reduced each batch).

    A data error a user can fix (an unreadable image found mid-epoch) also saves `last.ckpt` before the run
    stops, when no batch is in flight and the run has one process, so no training is lost.
    """

    def __init__(self) -> None:
        self._signum = 0
        self._previous: dict[int, Any] = {}
        self._owner = os.getpid()

    def _handler(self, signum: int, frame: Any) -> None:
        if os.getpid() != self._owner:  # a forked DataLoader worker: the main process handles it
            return
        if self._signum:
            raise TrainingInterrupted(signum)
        self._signum = signum

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        self._owner = os.getpid()
        self._previous = {s: signal.getsignal(s) for s in STOP_SIGNALS}
        for s in STOP_SIGNALS:
            signal.signal(s, self._handler)

    def _restore_handlers(self) -> None:
        for s, h in self._previous.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)
        self._previous = {}

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._restore_handlers()

    def _stop_requested(self, trainer: pl.Trainer) -> int:
        signum = self._signum
        if trainer.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            flag = torch.tensor([signum], device=trainer.strategy.root_device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            signum = int(flag.item())
        return signum

    def _save(self, trainer: pl.Trainer) -> Path | None:
        path = last_checkpoint_path(trainer)
        if path is not None:
            trainer.save_checkpoint(path)
        return path

    def _maybe_stop(self, trainer: pl.Trainer) -> None:
        signum = self._stop_requested(trainer)
        if not signum:
            return
        path = self._save(trainer)
        rank_zero_info(f"{signal.Signals(signum).name}: saved step {trainer.global_step} to {path}; stopping")
        raise TrainingInterrupted(signum, path, trainer.global_step)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._maybe_stop(trainer)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.training or trainer.sanity_checking or trainer.state.fn != "fit":
            return
        self._maybe_stop(trainer)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._restore_handlers()
        if isinstance(exception, SystemExit) or not isinstance(exception, UserError):
            return
        progress = trainer.fit_loop.epoch_loop.batch_progress.current
        between_batches = progress.ready == progress.completed and not trainer.validating
        if trainer.state.fn != "fit" or trainer.world_size > 1 or not between_batches or trainer.global_step == 0:
            return
        path = self._save(trainer)
        if path is not None:
            rank_zero_info(f"saved step {trainer.global_step} to {path} before stopping")


class JsonPredictionWriter(BasePredictionWriter):
    """Write every prediction of `predict` to one JSON file (a list of objects), atomically.

    Args:
        output: Path of the JSON file; its folder is created.
    """

    def __init__(self, output: str | Path = "predictions.json") -> None:
        super().__init__(write_interval="epoch")
        self.output = Path(output)

    def write_on_epoch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, predictions: Any, batch_indices: Any
    ) -> None:
        if trainer.world_size > 1:
            raise RuntimeError("JsonPredictionWriter writes from one process: run predict with devices=1")
        rows: list[dict[str, Any]] = []
        for batch in predictions:
            rows.extend(batch)
        self.output.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.output.with_name(self.output.name + ".tmp")
        tmp.write_text(json.dumps(rows, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        os.replace(tmp, self.output)
        print(f"wrote {len(rows)} predictions to {self.output}")
