"""Reliability: crash-safe checkpoints, exact mid-epoch resume, signal handling and one-line user errors.

What each piece guarantees (the table of cases and the tests behind them is `docs/RELIABILITY.md`):

- `AtomicCheckpointIO` (installed by the CLI): a checkpoint is written to a temporary file in its own folder,
  flushed and fsynced, then renamed over the old one (and the folder fsynced), so a kill at any moment leaves
  either the old or the new file, never a truncated one. It loads with `weights_only=True` and turns unreadable
  files into a `CheckpointError` naming the file.
- `ResumableSampler` + `ResumableDataLoader` (the training loaders of both data modules): the shuffle is a
  function of (seed, epoch) only and the loader's position is part of the checkpoint, so `--ckpt_path last`
  from a mid-epoch checkpoint continues with the very next batch instead of restarting the epoch.
- `ResumeState`: torch / CUDA / numpy / Python random states travel in the checkpoint, and they and the loader
  position are restored right before the first batch after a resume (augmentation and dropout continue the
  same random streams).
- `StopOnSignal`: SIGTERM or SIGINT during training saves `last.ckpt` at the next batch boundary and ends the
  run with `TrainingInterrupted` (exit status 128 + signal: 143 / 130); a second signal stops at once.
- User errors: `VitcapArgumentParser` turns config errors into a one-line `ConfigError` naming the key;
  `is_user_error` / `user_error_message` let the CLI print one line for errors a user can fix and keep the
  traceback for everything else (bugs).

Bit-exact resume holds on CPU with `num_workers: 0` (one process, fixed thread count): DataLoader worker
processes draw augmentation randomness from their own generators, which are not checkpointed, so with workers
a resumed run sees the same batches in the same order but different augmentation draws.
"""

from __future__ import annotations

import contextlib
import difflib
import errno
import importlib
import inspect
import os
import random
import re
import signal
import sys
import threading
import traceback
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

from vitcap.inference import CheckpointError, torch_load

__all__ = [
    "AtomicCheckpointIO",
    "ConfigError",
    "ResumableDataLoader",
    "ResumableSampler",
    "ResumeState",
    "StopOnSignal",
    "TrainingInterrupted",
    "VitcapArgumentParser",
    "atomic_save",
    "format_config_error",
    "interrupt_on_signals",
    "is_user_error",
    "user_error_message",
]

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


# ---------------------------------------------------------------------------------------------- atomic checkpoints
def _temporary_name(path: Path) -> Path:
    # Hidden and not ending in .ckpt, so `--ckpt_path last` (Lightning matches `last*.ckpt`) never picks it up;
    # the pid lets a later save recognise leftovers of a killed process.
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


def _remove_stale_temporaries(path: Path) -> None:
    """Delete temporary files of earlier saves to `path` whose writer process no longer exists (killed mid-save)."""
    pattern = re.compile(rf"^\.{re.escape(path.name)}\.(\d+)\.[0-9a-f]{{8}}\.tmp$")
    with contextlib.suppress(OSError):
        for entry in path.parent.iterdir():
            match = pattern.match(entry.name)
            if not match or int(match.group(1)) == os.getpid():
                continue
            try:
                os.kill(int(match.group(1)), 0)
            except ProcessLookupError:
                with contextlib.suppress(OSError):
                    entry.unlink()
            except OSError:  # PermissionError: the process exists (another user); leave its file alone
                pass


def _fsync_dir(folder: Path) -> None:
    # The rename is only durable once the directory entry is on disk; some filesystems refuse O_RDONLY dir fsync.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.EBADF, errno.EACCES):
            raise
    finally:
        os.close(fd)


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """`torch.save` that never leaves a partial file at `path`.

    The data goes to a temporary file in the same folder (same filesystem, so the rename is atomic), which is
    flushed and fsynced before `os.replace` puts it in place; the folder is fsynced after the rename. On any
    failure, including KeyboardInterrupt, the temporary file is removed and the old `path` is untouched.

    Args:
        obj: Anything `torch.save` accepts.
        path: Destination file; its folder is created.

    Returns:
        `path` as a `Path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(path)
    tmp = _temporary_name(path)
    try:
        # 0o666 & ~umask: the same permissions a plain open() would give the checkpoint.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(path.parent)
    return path


def _is_local(path: str | os.PathLike) -> bool:
    return "://" not in str(path) or str(path).startswith("file://")


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning `CheckpointIO` that writes checkpoints atomically and reads them with `weights_only=True`.

    Remote paths (`s3://...`) fall back to Lightning's own writer. The vitcap CLI installs this plugin unless the
    config names another `CheckpointIO`.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None or not _is_local(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        atomic_save(checkpoint, str(path).removeprefix("file://"))

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        if not _is_local(path):
            return super().load_checkpoint(path, map_location=map_location, weights_only=weights_only)
        # Lightning passes a function that keeps storages where they were saved; CPU is what resuming needs.
        return torch_load(path, map_location="cpu", weights_only=True if weights_only is None else weights_only)


# ------------------------------------------------------------------------------------------- resumable data order
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
            rank_zero_warn(
                "the training data or batch size changed since the checkpoint was written: the interrupted epoch "
                "restarts from its first batch"
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


# ------------------------------------------------------------------------------------------------- resume state
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


# ------------------------------------------------------------------------------------------------------- signals
class TrainingInterrupted(SystemExit):
    """A run stopped by SIGTERM / SIGINT; exits with status 128 + signal number (143 / 130), never 0.

    Attributes:
        signum: The signal.
        checkpoint: The checkpoint written before stopping, if any.
        step: The global step it holds.
    """

    def __init__(self, signum: int, checkpoint: str | os.PathLike | None = None, step: int | None = None) -> None:
        super().__init__(128 + int(signum))
        self.signum = int(signum)
        self.checkpoint = None if checkpoint is None else Path(checkpoint)
        self.step = step

    def __str__(self) -> str:
        text = f"interrupted by {signal.Signals(self.signum).name}"
        if self.checkpoint is not None:
            text += f"; saved step {self.step} to {self.checkpoint} (resume with --ckpt_path last)"
        return text

    def __reduce__(self):
        return (type(self), (self.signum, self.checkpoint, self.step))


@contextlib.contextmanager
def interrupt_on_signals() -> Iterator[None]:
    """Within the block, SIGTERM and SIGINT raise `TrainingInterrupted` at once (exit status 143 / 130).

    This is the behaviour outside the training loop (setup, validation, test, predict), where there is nothing
    to save; `StopOnSignal` replaces it while training runs. DataLoader workers forked inside the block inherit
    the handler but ignore the signal: the main process decides when to stop and shuts them down.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    owner = os.getpid()

    def handler(signum: int, frame: Any) -> None:
        if os.getpid() == owner:
            raise TrainingInterrupted(signum)

    previous = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    for s in STOP_SIGNALS:
        signal.signal(s, handler)
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)


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
        if isinstance(exception, SystemExit) or not is_user_error(exception):
            return
        progress = trainer.fit_loop.epoch_loop.batch_progress.current
        between_batches = progress.ready == progress.completed and not trainer.validating
        if trainer.state.fn != "fit" or trainer.world_size > 1 or not between_batches or trainer.global_step == 0:
            return
        path = self._save(trainer)
        if path is not None:
            rank_zero_info(f"saved step {trainer.global_step} to {path} before stopping")


# --------------------------------------------------------------------------------------------------- user errors
class ConfigError(ValueError):
    """A config file or command-line option the parser rejects; the one-line message names the key."""


_IGNORED = ("Does not validate against", "Subtypes:", "Errors:", "Given value type:", "Expected a path but")


def _type_name(text: str) -> str:
    return re.sub(r"<class '(?:[\w.]+\.)?(\w+)'>", r"\1", text).replace("typing.", "")


def _suggest(word: str, options: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _init_args(class_path: str) -> list[str]:
    try:
        module, _, name = class_path.rpartition(".")
        cls = getattr(importlib.import_module(module), name)
        return [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    except Exception:  # noqa: BLE001 - suggestions are a nicety; the error itself is reported regardless
        return []


def format_config_error(message: str, options: Iterable[str] = ()) -> str:
    """Rewrite a jsonargparse error (often a dozen lines about Union subtypes) as one line naming the key.

    Args:
        message: The parser's message.
        options: Option names the parser accepts (`--trainer.max_epochs`, ...), for "did you mean" hints.

    Returns:
        One line, e.g. `trainer.max_epochs: expected int, got 'three'` or
        `unknown option --trainer.max_epochz (did you mean '--trainer.max_epochs'?)`.
    """
    message = message.strip()
    first = message.splitlines()[0] if message else "invalid configuration"
    match = re.match(r"unrecognized arguments: (.*)$", first)
    if match:
        unknown = [a for a in match.group(1).split() if a.startswith("-")] or match.group(1).split()[:1]
        key = unknown[0].split("=", 1)[0] if unknown else match.group(1)
        return f"unknown option {key}{_suggest(key, options)}"
    match = re.match(r"Subcommand '(\w+)' does not accept option '([^']+)'", first)
    if match:
        names = [o.lstrip("-") for o in options]
        return f"unknown key {match.group(2)!r} in the {match.group(1)} config{_suggest(match.group(2), names)}"
    keys: list[str] = []
    reasons: list[str] = []
    given = class_path = None
    for raw in message.splitlines():
        text = raw.strip().removeprefix("- ").strip()
        found = re.match(r'Parser key "([^"]+)":\s*(.*)$', text)
        if found:
            keys.append(found.group(1))
            text = found.group(2).strip()
        found = re.match(r"Problem with given class_path '([^']+)':\s*(.*)$", text)
        if found:
            class_path, text = found.group(1), found.group(2).strip()
        if not text or text.startswith(_IGNORED) or "NoneType" in text:
            continue
        if text.startswith("Given value:"):
            given = text.split(":", 1)[1].strip()
            continue
        option = re.match(r"Option '([^']+)' is not accepted", text)
        if option:
            keys.append(option.group(1))
            hint = _suggest(option.group(1), _init_args(class_path)) if class_path else ""
            owner = f" by {class_path}" if class_path else ""
            reasons.append(f"unknown option, not accepted{owner}{hint}")
            continue
        expected = re.match(r"Expected an? (.+?)(?:\. Got value: (.*))?$", text)
        if expected:
            got = expected.group(2)
            reasons.append(f"expected {_type_name(expected.group(1))}" + (f", got {got!r}" if got is not None else ""))
            continue
        reasons.append(_type_name(text))
    if not reasons:
        return " ".join(line.strip() for line in message.splitlines() if line.strip())
    if given is not None:  # "Given value:" comes after the reasons it belongs to
        reasons = [f"{r}, got {given!r}" if r.startswith("expected ") and ", got " not in r else r for r in reasons]
    unique = list(dict.fromkeys(reasons))
    key = ".".join(k for k in keys if k != "init_args")
    return f"{key}: {'; '.join(unique)}" if key else "; ".join(unique)


class VitcapArgumentParser(LightningArgumentParser):
    """LightningCLI's parser, but a rejected config raises `ConfigError` with one line instead of printing usage.

    jsonargparse prints the whole usage (about 60 lines) and a multi-line Union-subtype report before exiting;
    the CLI prints `vitcap: error: <key>: <what was expected>` instead. Parsers that jsonargparse creates with
    `exit_on_error=False` for its own trial parses keep the default behaviour.
    """

    def error(self, message: str, ex: Exception | None = None) -> Any:
        if not self.exit_on_error:
            return super().error(message, ex)
        parser = getattr(ex, "subcommand_parser", None) or self
        options = [o for o in parser._option_string_actions if o.startswith("--")]
        raise ConfigError(format_config_error(message, options)) from None


def _vitcap_root() -> str:
    return str(Path(__file__).resolve().parent) + os.sep


def _raised_in_vitcap(exc: BaseException) -> bool:
    frames = traceback.extract_tb(exc.__traceback__)
    return bool(frames) and str(Path(frames[-1].filename).resolve()).startswith(_vitcap_root())


# Lightning code that only validates the trainer configuration (devices, strategy, loop limits); a ValueError
# raised there is about a setting (`fsdp` on CPU, `val_check_interval` past the epoch), not a bug.
_LIGHTNING_CONFIG_CODE = (
    "lightning/pytorch/trainer/connectors/",
    "lightning/pytorch/trainer/configuration_validator.py",
    "lightning/pytorch/loops/fit_loop.py",
    "lightning/fabric/connector.py",
)


def _raised_by_lightning_config(exc: BaseException) -> bool:
    frames = traceback.extract_tb(exc.__traceback__)
    return bool(frames) and any(part in Path(frames[-1].filename).as_posix() for part in _LIGHTNING_CONFIG_CODE)


_WORKER_ERROR = re.compile(r"^Caught (\w+) in DataLoader worker process", re.MULTILINE)


def _user_error_types() -> tuple[type[BaseException], ...]:
    from vitcap.data.captions import CaptionFormatError, ManifestError
    from vitcap.data.images import ImageLoadError

    return (ConfigError, CheckpointError, ImageLoadError, ManifestError, CaptionFormatError, MisconfigurationException)


def _worker_error_line(exc: BaseException) -> str | None:
    """The original `Type: message` line of a user error re-raised from a DataLoader worker, else None."""
    text = str(exc)
    found = _WORKER_ERROR.search(text)
    names = {t.__name__ for t in _user_error_types()}
    if not found or found.group(1) not in names:
        return None
    last = [line for line in text.splitlines() if line.strip()][-1]
    return last.split(": ", 1)[1] if ": " in last else last


def _is_user_error_itself(exc: BaseException) -> bool:
    if isinstance(exc, _user_error_types()):
        return True
    if isinstance(exc, (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError)):
        return _raised_in_vitcap(exc) or (type(exc) is ValueError and _raised_by_lightning_config(exc))
    return isinstance(exc, RuntimeError) and _worker_error_line(exc) is not None


def _user_cause(exc: BaseException) -> BaseException | None:
    # jsonargparse re-raises an error of a constructor (`CaptionDataModule(max_length=1)`) as a multi-line
    # "Does not validate against any of the Union subtypes" ValueError whose __cause__ is the original.
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if _is_user_error_itself(current):
            return current
        seen.add(id(current))
        current = current.__cause__
    return None


def is_user_error(exc: BaseException) -> bool:
    """True for errors a user causes and can fix (bad file, config, checkpoint), reported without a traceback.

    Those are vitcap's and jsonargparse's error types, Lightning's `MisconfigurationException` and the
    `ValueError`s of its trainer-configuration checks, `ValueError`s and missing-file errors raised by vitcap
    code itself (the style contract: such errors name the file or key), any of these re-raised from a DataLoader
    worker, and config-time errors whose cause is one of them. Everything else (errors inside torch or elsewhere
    in Lightning, bugs) is not.
    """
    return _user_cause(exc) is not None


def user_error_message(exc: BaseException) -> str:
    """The message of a user error as the CLI prints it (worker tracebacks reduced to the original message)."""
    cause = _user_cause(exc) or exc
    line = _worker_error_line(cause) if isinstance(cause, RuntimeError) else None
    text = line if line is not None else str(cause)
    if isinstance(cause, FileNotFoundError) and cause.filename and str(cause.filename) not in text:
        text = f"{cause.filename}: {text}"
    owner = re.search(r"class_path='([\w.]+)'", str(exc)) if cause is not exc else None
    if owner and owner.group(1) not in text:
        text = f"{owner.group(1)}: {text}"
    return text.strip() or type(cause).__name__


def print_error(message: str) -> None:
    """`vitcap: error: <message>` on stderr."""
    print(f"vitcap: error: {message}", file=sys.stderr, flush=True)
