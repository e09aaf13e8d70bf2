"""Crash safety: atomic checkpoints, exact resume after SIGKILL / SIGTERM / SIGINT, signal exit statuses."""

from __future__ import annotations

import csv
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from tests.conftest import REPO, caption_args
from vitcap.cli.train import lightning_cli
from vitcap.data.sampler import ResumableSampler
from vitcap.training.checkpoint_io import AtomicCheckpointIO, atomic_save

# 32 training images x 5 captions = 160 pairs = 5 batches of 32 per epoch; 3 epochs = 15 optimizer steps.
STEPS_PER_EPOCH = 5


def run_args(root: Path, *extra: str) -> list[str]:
    return caption_args(
        root, "--data.num_train", "32", "--trainer.max_epochs", "3", "--trainer.log_every_n_steps", "1", *extra
    )


class Throttle(Callback):
    """For the subprocess runs: announce each finished step on stdout, then pause, so a signal lands mid-epoch."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        print(f"TEST-STEP {trainer.global_step}", flush=True)
        time.sleep(0.3)


class SaveAt(Callback):
    """Save a checkpoint the way `StopOnSignal` does (at `on_train_batch_end`) after the given global steps."""

    def __init__(self, folder: str, steps: list[int]) -> None:
        self.folder, self.steps = Path(folder), steps

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        if trainer.global_step in self.steps:
            trainer.save_checkpoint(self.folder / f"step{trainer.global_step}.ckpt")


def val_rows(root: Path) -> dict[tuple[str, str], dict[str, str]]:
    """Logged validation metrics of every run (version) under `root`, keyed by (epoch, step)."""
    rows = {}
    for path in sorted(root.rglob("metrics.csv")):
        for row in csv.DictReader(open(path)):
            if row.get("val/loss"):
                rows[(row["epoch"], row["step"])] = {k: v for k, v in row.items() if k.startswith("val/")}
    return rows


def last_state(root: Path) -> dict[str, torch.Tensor]:
    return torch.load(root / "lightning_logs" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory):
    """An uninterrupted run, with extra checkpoints mid-epoch (step 3) and after the epoch's last batch (step 5)."""
    root = tmp_path_factory.mktemp("reference")
    save_at = ["--trainer.callbacks+=tests.test_reliability.SaveAt", "--trainer.callbacks.folder", str(root / "at"),
               "--trainer.callbacks.steps", f"[3, {STEPS_PER_EPOCH}]"]  # fmt: skip
    return lightning_cli(["fit", *run_args(root, *save_at)]), root


# ---------------------------------------------------------------------------------------------- atomic checkpoints
def test_failed_save_leaves_the_previous_checkpoint_intact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "last.ckpt"
    atomic_save({"step": torch.tensor(1)}, path)
    before = path.read_bytes()

    def dies_mid_write(obj, f) -> None:  # noqa: ANN001
        f.write(b"PK\x03\x04 half a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", dies_mid_write)
    with pytest.raises(OSError, match="No space"):
        AtomicCheckpointIO().save_checkpoint({"step": torch.tensor(2)}, path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert torch.load(path, weights_only=True)["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]  # no temporary file left behind
    AtomicCheckpointIO().save_checkpoint({"step": torch.tensor(3)}, path)
    assert torch.load(path, weights_only=True)["step"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def test_leftovers_of_a_killed_writer_are_removed(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".last.ckpt.{int(dead.stdout)}.0123abcd.tmp"
    alive = tmp_path / f".last.ckpt.{os.getppid()}.0123abcd.tmp"  # a live process may still be writing
    stale.write_bytes(b"partial")
    alive.write_bytes(b"partial")
    atomic_save({"x": torch.zeros(1)}, tmp_path / "last.ckpt")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([alive.name, "last.ckpt"])


def test_training_writes_through_the_atomic_plugin(reference) -> None:
    cli, _ = reference
    assert isinstance(cli.trainer.strategy.checkpoint_io, AtomicCheckpointIO)


# --------------------------------------------------------------------------------------------------- exact resume
def test_sampler_resumes_the_same_permutation_part_way() -> None:
    data = list(range(10))
    sampler = ResumableSampler(data, seed=3)
    sampler.set_epoch(2)
    full = list(sampler)
    sampler.start = 4
    assert list(sampler) == full[4:]
    assert list(sampler) == full  # the skip applies to one pass only
    sampler.set_epoch(3)
    assert list(sampler) != full


@pytest.mark.parametrize("step", [3, STEPS_PER_EPOCH], ids=["mid-epoch", "last-batch-before-validation"])
def test_resume_is_bit_exact(reference, step: int, tmp_path: Path) -> None:
    ref_cli, ref_root = reference
    cli = lightning_cli(["fit", *run_args(tmp_path, "--ckpt_path", str(ref_root / "at" / f"step{step}.ckpt"))])
    assert cli.trainer.global_step == ref_cli.trainer.global_step
    assert_same_weights(last_state(tmp_path), last_state(ref_root))
    resumed, expected = val_rows(tmp_path), val_rows(ref_root)
    assert resumed and all(resumed[k] == expected[k] for k in resumed)


# -------------------------------------------------------------------------------------- real processes and signals
class Run:
    """`python train.py fit` in a subprocess, its stdout read line by line in the background."""

    def __init__(self, root: Path, *extra: str) -> None:
        env = dict(os.environ, OMP_NUM_THREADS=str(torch.get_num_threads()), PYTHONUNBUFFERED="1")
        args = run_args(root, "--trainer.callbacks+=tests.test_reliability.Throttle", *extra)
        self.proc = subprocess.Popen(
            [sys.executable, "train.py", "fit", *args],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.steps: queue.Queue[int] = queue.Queue()
        self.out: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.out.append(line)
            if line.startswith("TEST-STEP "):
                self.steps.put(int(line.split()[1]))

    def wait_for_step(self, at_least: int, timeout: float = 120) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                step = self.steps.get(timeout=0.5)
            except queue.Empty:
                assert self.proc.poll() is None, f"run ended early:\n{self.proc.stderr.read()[-3000:]}"
                continue
            if step >= at_least:
                return step
        raise TimeoutError(f"no step >= {at_least} within {timeout} s")

    def finish(self, timeout: float = 120) -> tuple[int, str]:
        code = self.proc.wait(timeout=timeout)
        return code, self.proc.stderr.read()


def checkpoint_step(path: Path) -> int:
    return int(torch.load(path, map_location="cpu", weights_only=True)["global_step"])


def test_sigkill_sigterm_sigint_then_resume_matches_an_uninterrupted_run(reference, tmp_path: Path) -> None:
    ref_cli, ref_root = reference
    ckpt = tmp_path / "lightning_logs" / "checkpoints" / "last.ckpt"

    # 1. SIGKILL mid-epoch, as soon as a mid-epoch last.ckpt (written every step) exists.
    # Seeing step n means last.ckpt holds step n - 1 and step n is about to be written: both mid-epoch here.
    run = Run(tmp_path, "--save_every_n_steps", "1")
    step = run.wait_for_step(2)
    while step % STEPS_PER_EPOCH < 2:
        step = run.wait_for_step(step + 1)
    run.proc.kill()
    code, _ = run.finish()
    assert code == -signal.SIGKILL
    assert checkpoint_step(ckpt) % STEPS_PER_EPOCH, "last.ckpt should be a mid-epoch checkpoint"

    # 2. Resume; SIGTERM a couple of steps later: checkpoint of the current step, exit status 143.
    run = Run(tmp_path, "--ckpt_path", "last")
    seen = run.wait_for_step(checkpoint_step(ckpt) + 2)
    run.proc.send_signal(signal.SIGTERM)
    code, err = run.finish()
    assert code == 143, err[-3000:]
    saved = checkpoint_step(ckpt)
    assert seen <= saved <= seen + 1 and f"interrupted by SIGTERM; saved step {saved}" in err
    assert "Traceback" not in err

    # 3. Resume; SIGINT (Ctrl+C): same, exit status 130.
    run = Run(tmp_path, "--ckpt_path", "last")
    seen = run.wait_for_step(saved + 2)
    run.proc.send_signal(signal.SIGINT)
    code, err = run.finish()
    assert code == 130, err[-3000:]
    saved = checkpoint_step(ckpt)
    assert seen <= saved <= seen + 1 and f"interrupted by SIGINT; saved step {saved}" in err
    assert saved < 3 * STEPS_PER_EPOCH, "the run finished before the signals could interrupt it"

    # 4. Resume to the end: the same weights and validation metrics as the uninterrupted run.
    cli = lightning_cli(["fit", *run_args(tmp_path, "--ckpt_path", "last")])
    assert cli.trainer.global_step == ref_cli.trainer.global_step == 3 * STEPS_PER_EPOCH
    assert_same_weights(last_state(tmp_path), last_state(ref_root))
    resumed, expected = val_rows(tmp_path), val_rows(ref_root)
    assert max(resumed) == max(expected)  # the final validation was logged
    assert all(resumed[k] == expected[k] for k in resumed)
    assert not list(ckpt.parent.glob("*.tmp")), "temporary checkpoint files were left behind"
