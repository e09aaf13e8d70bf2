"""Shared fixtures: tiny trained checkpoints (built once per test process) and the optional real data."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# The CPU linear backend choice is cached per machine; tests keep theirs out of the user's cache folder.
os.environ.setdefault("VITCAP_CACHE_DIR", tempfile.mkdtemp(prefix="vitcap-test-cache-"))

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

# Trainer settings every in-process CLI run in the tests uses: CPU, quiet, no sanity pass.
QUIET = [
    "--trainer.accelerator",
    "cpu",
    "--trainer.devices",
    "1",
    "--trainer.enable_progress_bar",
    "false",
    "--trainer.enable_model_summary",
    "false",
    "--trainer.num_sanity_val_steps",
    "0",
]


def caption_args(root: Path, *extra: str) -> list[str]:
    """CLI arguments of a toy captioner on a small shapes set (32-px images, width 32)."""
    return [
        "--seed_everything",
        "0",
        "--model",
        "vitcap.tasks.CaptioningTask",
        "--model.preset",
        "toy",
        "--model.optim.lr",
        "0.003",
        "--model.generation",
        '{"max_length": 12}',
        "--data",
        "vitcap.data.CaptionDataModule",
        "--data.img_size",
        "32",
        "--data.num_train",
        "128",
        "--data.num_val",
        "16",
        "--data.num_test",
        "16",
        "--data.batch_size",
        "32",
        "--data.max_length",
        "16",
        "--data.max_objects",
        "1",
        "--trainer.default_root_dir",
        str(root),
        "--trainer.logger.init_args.save_dir",
        str(root),
        *QUIET,
        *extra,
    ]


def classify_args(root: Path, *extra: str) -> list[str]:
    """CLI arguments of a toy ViT classifier on a small shapes set."""
    return [
        "--seed_everything",
        "0",
        "--model",
        "vitcap.tasks.ClassificationTask",
        "--model.preset",
        "toy",
        "--data",
        "vitcap.data.ClassificationDataModule",
        "--data.img_size",
        "32",
        "--data.num_train",
        "128",
        "--data.num_val",
        "32",
        "--data.num_test",
        "32",
        "--data.batch_size",
        "32",
        "--trainer.default_root_dir",
        str(root),
        "--trainer.logger.init_args.save_dir",
        str(root),
        *QUIET,
        *extra,
    ]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is absent")
    return SHARED_DATA


@pytest.fixture(scope="session")
def caption_run(tmp_path_factory: pytest.TempPathFactory):
    """A toy captioner trained for a few epochs: (cli object, run folder, last checkpoint)."""
    from vitcap.cli.train import lightning_cli

    root = tmp_path_factory.mktemp("caption_run")
    cli = lightning_cli(["fit", *caption_args(root, "--trainer.max_epochs", "6", "--trainer.log_every_n_steps", "1")])
    ckpts = sorted(root.rglob("last.ckpt"))
    assert ckpts, f"no last.ckpt under {root}"
    return cli, root, ckpts[0]


@pytest.fixture(scope="session")
def classify_run(tmp_path_factory: pytest.TempPathFactory):
    """A toy ViT classifier trained for two epochs: (cli object, run folder, last checkpoint)."""
    from vitcap.cli.train import lightning_cli

    root = tmp_path_factory.mktemp("classify_run")
    cli = lightning_cli(["fit", *classify_args(root, "--trainer.max_epochs", "2")])
    ckpts = sorted(root.rglob("last.ckpt"))
    assert ckpts, f"no last.ckpt under {root}"
    return cli, root, ckpts[0]
