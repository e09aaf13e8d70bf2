"""Exact mid-epoch resume from tar shards: a run killed with SIGKILL and resumed with `--ckpt_path last` sees the
batches of an uninterrupted run and ends with bit-identical weights, in one process and in two (DDP over gloo,
two loader workers each)."""

from __future__ import annotations

import csv
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from tests.conftest import REPO, caption_args
from tests.test_reliability import assert_same_weights, checkpoint_step, last_state
from vitcap.cli.data import main as data_main
from vitcap.cli.train import lightning_cli


class RecordBatches(Callback):
    """Append `epoch batch_idx ids` of every training batch to `folder/batches.rank{R}.txt`."""

    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # noqa: ANN001
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / f"batches.rank{trainer.global_rank}.txt", "a") as f:
            f.write(f"{trainer.current_epoch} {batch_idx} {','.join(batch['ids'])}\n")


def batches(folder: Path) -> dict[tuple[int, str, str], str]:
    """(rank, epoch, batch index) -> ids, from every run that recorded into `folder`; a batch seen twice (before
    the kill and after the resume) must have had the same ids both times."""
    seen: dict[tuple[int, str, str], str] = {}
    for path in sorted(folder.glob("batches.rank*.txt")):
        rank = int(path.stem.rsplit("rank", 1)[1])
        for line in path.read_text().splitlines():
            epoch, index, ids = line.split()
            assert seen.setdefault((rank, epoch, index), ids) == ids, f"rank {rank} epoch {epoch} batch {index}"
    return seen


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("resume_shards")
    assert (
        data_main(["shards", "--out", str(out), "--img-size", "32", "--num", "96", "--per-shard", "12", "shapes"]) == 0
    )
    # One corrupt image: the slot that reads it is one raw sample further along than the others from then on, so
    # a resume must restore each rank's own positions (Lightning checkpoints rank 0's loader state only).
    shard = out / "train-00003.tar"
    data = bytearray(shard.read_bytes())
    start = data.index(b"000000041.png") + 512 + 60  # inside the PNG's pixel data, past its header
    data[start : start + 200] = bytes(200)
    shard.write_bytes(bytes(data))
    return out


def args(root: Path, shards: Path, *extra: str) -> list[str]:
    return caption_args(
        root, "--data.data", str(shards), "--data.batch_size", "8", "--data.shards.shuffle_buffer", "16",
        "--trainer.max_epochs", "2", "--trainer.log_every_n_steps", "1",
        "--trainer.callbacks+=tests.test_shards_resume.RecordBatches", "--trainer.callbacks.folder", str(root / "seen"),
        *extra,
    )  # fmt: skip


def kill_mid_epoch(root: Path, shards: Path, steps_per_epoch: int, *extra: str) -> int:
    """Start `train.py fit` (its own process group), SIGKILL every process of it once last.ckpt is mid-epoch."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "train.py", "fit", *args(root, shards, "--save_every_n_steps", "1",
                                                    "--trainer.callbacks+=tests.test_reliability.Throttle", *extra)]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # fmt: skip
    try:
        for line in proc.stdout:
            # Seeing step n: last.ckpt holds step n - 1; stop when both are inside the first epoch. (Two ranks
            # print into one pipe, so a line may hold the ends of two.)
            if any(3 <= int(n) < steps_per_epoch for n in re.findall(r"TEST-STEP (\d+)", line)):
                break
        else:
            pytest.fail(f"the run ended before it could be killed:\n{proc.stderr.read()[-3000:]}")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    ckpt = root / "lightning_logs" / "checkpoints" / "last.ckpt"
    step = checkpoint_step(ckpt)
    assert 0 < step % steps_per_epoch, "last.ckpt should be a mid-epoch checkpoint"
    return step


def test_sigkill_then_resume_matches_an_uninterrupted_run_one_process(shards: Path, tmp_path: Path) -> None:
    steps_per_epoch = 96 // 8
    reference = lightning_cli(["fit", *args(tmp_path / "ref", shards)])
    assert reference.trainer.global_step == 2 * steps_per_epoch
    kill_mid_epoch(tmp_path / "run", shards, steps_per_epoch)
    resumed = lightning_cli(["fit", *args(tmp_path / "run", shards, "--ckpt_path", "last")])
    assert resumed.trainer.global_step == reference.trainer.global_step
    assert batches(tmp_path / "run" / "seen") == batches(tmp_path / "ref" / "seen")
    assert_same_weights(last_state(tmp_path / "run"), last_state(tmp_path / "ref"))


def test_sigkill_then_resume_matches_an_uninterrupted_run_two_gloo_processes(shards: Path, tmp_path: Path) -> None:
    steps_per_epoch = 96 // (2 * 8)  # every rank: 6 batches per epoch, 3 from each of its 2 workers
    ddp = ["--trainer.devices", "2", "--trainer.strategy", "ddp", "--data.num_workers", "2"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for root, extra in ((tmp_path / "ref", []), (None, None), (tmp_path / "run", ["--ckpt_path", "last"])):
        if root is None:
            kill_mid_epoch(tmp_path / "run", shards, steps_per_epoch, *ddp)
            continue
        done = subprocess.run([sys.executable, "train.py", "fit", *args(root, shards, *ddp, *extra)], cwd=REPO,
                              env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
        assert done.returncode == 0, done.stderr[-4000:]
    ref = torch.load(tmp_path / "ref" / "lightning_logs" / "checkpoints" / "last.ckpt", weights_only=True)
    assert ref["global_step"] == 2 * steps_per_epoch
    seen = batches(tmp_path / "run" / "seen")
    assert seen == batches(tmp_path / "ref" / "seen") and len(seen) == 2 * 2 * steps_per_epoch
    for epoch in ("0", "1"):  # within an epoch, the two ranks read different shards: no sample on both
        ranks = [{i for (r, e, _), ids in seen.items() if (r, e) == (rank, epoch) for i in ids.split(",")}
                 for rank in (0, 1)]  # fmt: skip
        assert ranks[0] and ranks[1] and not ranks[0] & ranks[1]
    assert_same_weights(last_state(tmp_path / "run"), last_state(tmp_path / "ref"))
    # The corrupt image was skipped once per epoch, counted over both processes, before and after the resume.
    for root in ("ref", "run"):
        skipped = [r["data/skipped"] for m in (tmp_path / root).rglob("metrics.csv")
                   for r in csv.DictReader(open(m)) if r.get("data/skipped")]  # fmt: skip
        assert skipped and all(float(v) == 1.0 for v in skipped), (root, skipped)
