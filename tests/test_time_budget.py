"""A run with a time budget (`trainer.max_time`) ends annealed and checkpointed even when few of its epochs fit."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.conftest import classify_args
from vitcap.cli.train import lightning_cli
from vitcap.tasks.optim import warmup_cosine


def _factors(total: int, spent: list[float]) -> list[float]:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    clock = {"spent": 0.0}
    schedule = warmup_cosine(optimizer, total, warmup=0.1, min_lr_ratio=0.01, budget=lambda: clock["spent"])
    out = []
    for value in spent:
        clock["spent"] = value
        optimizer.step()
        schedule.step()
        out.append(schedule.get_last_lr()[0])
    return out


def test_budgeted_schedule_follows_the_larger_of_steps_and_time() -> None:
    # 1000 steps planned, but the budget is spent after 10: the schedule still warms up and ends at its floor.
    lrs = _factors(1000, [0.02, 0.06, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0])
    assert lrs[0] < lrs[1] < lrs[2] == pytest.approx(1.0)  # warming up over the first 10% of the budget
    assert lrs[2] > lrs[3] > lrs[4] > lrs[5] > lrs[6]  # then decaying with the budget, not with the steps
    assert lrs[-1] == pytest.approx(0.01)  # all of the budget spent: annealed
    # With no time pressure the step schedule is unchanged.
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    plain = warmup_cosine(optimizer, 20, warmup=0.1, min_lr_ratio=0.01)
    steps = []
    for _ in range(19):
        optimizer.step()
        plain.step()
        steps.append(plain.get_last_lr()[0])
    assert _factors(20, [0.0] * 19) == pytest.approx(steps)


def test_tight_time_budget_ends_annealed_and_checkpointed(tmp_path: Path) -> None:
    args = classify_args(
        tmp_path,
        "--trainer.max_epochs", "500",
        "--trainer.max_time", "00:00:00:05",
        "--data.num_train", "256",
        "--data.num_val", "32",
    )  # fmt: skip
    cli = lightning_cli(["fit", *args])
    trainer, task = cli.trainer, cli.model
    assert trainer.current_epoch < 499  # stopped by the budget, not by max_epochs
    final = trainer.optimizers[0].param_groups[0]["lr"]
    assert final <= 0.05 * task.optim.lr  # annealed (min_lr_ratio 0.01 at the very end of the budget)
    assert sorted(p.name for p in tmp_path.rglob("*.ckpt")) == ["best.ckpt", "last.ckpt"]
