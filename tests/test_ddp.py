"""Two-process CPU training (DDP over gloo) through `train.py`, with validation metrics synced across processes."""

from __future__ import annotations

import csv
import math
import os
import subprocess
import sys
from pathlib import Path

import torch

from tests.conftest import REPO, caption_args
from vitcap.cli.train import lightning_cli

# 16 validation images, 4 per batch: each process validates 2 batches of distinct images (no sampler padding).
DATA = ["--data.num_train", "32", "--data.num_val", "16", "--data.eval_batch_size", "4"]


def test_two_process_ddp_trains_and_syncs_validation_metrics(tmp_path: Path) -> None:
    args = caption_args(
        tmp_path, *DATA, "--trainer.devices", "2", "--trainer.strategy", "ddp", "--trainer.max_epochs", "1",
        "--trainer.limit_train_batches", "2",
    )  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run(
        [sys.executable, "train.py", "fit", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert "Traceback" not in done.stderr
    rows = [r for r in csv.DictReader(open(next(tmp_path.rglob("metrics.csv")))) if r.get("val/loss")]
    assert len(rows) == 1
    ckpt = tmp_path / "lightning_logs" / "checkpoints" / "last.ckpt"
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert state["global_step"] == 2  # 2 batches per process, one optimizer step per batch

    # One process over the whole validation set with the same weights: the DDP run must have logged the same
    # numbers, which it only can if every metric gathered both processes' halves before computing.
    cli = lightning_cli(["validate", *caption_args(tmp_path / "single", *DATA, "--ckpt_path", str(ckpt))])
    single = cli.trainer.callback_metrics
    for name in ("val/loss", "val/bleu1", "val/bleu4", "val/rouge_l", "val/cider_d", "val/mean_length"):
        assert math.isclose(float(rows[0][name]), float(single[name]), rel_tol=1e-5, abs_tol=1e-6), name
