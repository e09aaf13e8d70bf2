"""Training through the real LightningCLI: configs parse, both tasks and encoders fit, checkpoints are reusable."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO, caption_args, classify_args
from vitcap.cli.train import lightning_cli

CONFIGS = sorted(str(p.relative_to(REPO)) for p in (REPO / "configs").rglob("*.yaml"))


def test_every_config_is_tested() -> None:
    assert len(CONFIGS) >= 7, CONFIGS


@pytest.mark.parametrize("config", CONFIGS)
def test_config_parses(config: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exc:
        lightning_cli(["fit", "--config", str(REPO / config), "--print_config"])
    assert exc.value.code == 0
    printed = capsys.readouterr().out
    assert "class_path: vitcap.tasks." in printed and "class_path: vitcap.data." in printed


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(lambda root: caption_args(root), id="caption-vit"),
        pytest.param(
            lambda root: caption_args(root, "--model.preset", "cnn-tiny", "--model.decoder", '{"embed_dim": 32}'),
            id="caption-cnn",
        ),
        pytest.param(lambda root: classify_args(root), id="classify-vit"),
        pytest.param(lambda root: classify_args(root, "--model.preset", "cnn-tiny"), id="classify-cnn"),
    ],
)
def test_fast_dev_run(args, tmp_path: Path) -> None:
    cli = lightning_cli(["fit", *args(tmp_path), "--trainer.fast_dev_run", "2"])
    assert cli.trainer.state.finished
    assert torch.isfinite(cli.trainer.callback_metrics["train/loss"])


def _metric_column(root: Path, name: str) -> list[float]:
    rows = list(csv.DictReader(open(next(root.rglob("metrics.csv")))))
    return [float(r[name]) for r in rows if r.get(name)]


def test_short_run_learns(caption_run) -> None:
    _, root, _ = caption_run
    losses = _metric_column(root, "train/loss")
    assert len(losses) > 20
    start, end = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert end < 0.5 * start, (start, end)
    assert _metric_column(root, "val/bleu4"), "validation BLEU-4 was not logged"


def test_checkpoint_is_plain_and_knows_its_task(caption_run) -> None:
    _, _, ckpt = caption_run
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert state["vitcap"]["task"] == "captioning"
    assert state["hyper_parameters"]["tokenizer"] == state["vitcap"]["tokenizer"]
    assert state["vitcap"]["model"]["vocab_size"] > 4 and state["vitcap"]["format"] == 2


@pytest.mark.parametrize("command", ["validate", "test"])
def test_validate_and_test_from_checkpoint(caption_run, command: str) -> None:
    _, root, ckpt = caption_run
    cli = lightning_cli([command, *caption_args(root / command, "--ckpt_path", str(ckpt))])
    metrics = cli.trainer.callback_metrics
    stage = "val" if command == "validate" else "test"
    assert torch.isfinite(metrics[f"{stage}/loss"])
    assert 0 <= float(metrics[f"{stage}/bleu4"]) <= 100


def test_predict_writes_json(caption_run, tmp_path: Path) -> None:
    _, root, ckpt = caption_run
    out = tmp_path / "captions.json"
    lightning_cli(["predict", *caption_args(tmp_path, "--ckpt_path", str(ckpt), "--output", str(out))])
    rows = json.loads(out.read_text())
    assert len(rows) == 16
    assert all(isinstance(r["caption"], str) and r["image"] for r in rows)


def test_classifier_predict_writes_json(classify_run, tmp_path: Path) -> None:
    cli, _, ckpt = classify_run
    out = tmp_path / "labels.json"
    lightning_cli(["predict", *classify_args(tmp_path, "--ckpt_path", str(ckpt), "--output", str(out))])
    rows = json.loads(out.read_text())
    assert len(rows) == 32
    names = set(cli.datamodule.class_names)
    assert all(r["label"] in names and abs(sum(t["prob"] for t in r["top"]) - 1) < 1 for r in rows)


RELOAD = """
import sys, torch
from vitcap.checkpoint import read_checkpoint
from vitcap.inference import build_model
meta, state = read_checkpoint(sys.argv[1])
model = build_model(meta, state)
torch.manual_seed(123)
images = torch.randn(2, 3, 32, 32)
tokens = torch.randint(4, model.decoder.vocab_size, (2, 7))
with torch.no_grad():
    torch.save(model(images, tokens), sys.argv[2])
"""


def test_checkpoint_reloads_in_fresh_process_with_identical_logits(caption_run, tmp_path: Path) -> None:
    cli, _, ckpt = caption_run
    out = tmp_path / "logits.pt"
    subprocess.run([sys.executable, "-c", RELOAD, str(ckpt), str(out)], check=True, cwd=REPO)
    model = cli.model.model.eval()
    torch.manual_seed(123)
    images = torch.randn(2, 3, 32, 32)
    tokens = torch.randint(4, cli.model.tokenizer.vocab_size, (2, 7))
    with torch.no_grad():
        expected = model(images, tokens)
    assert torch.equal(torch.load(out, weights_only=True), expected)


def test_wrong_task_checkpoint_is_refused(classify_run, tmp_path: Path) -> None:
    _, _, ckpt = classify_run
    with pytest.raises(ValueError, match="classification"):
        lightning_cli(["validate", *caption_args(tmp_path, "--ckpt_path", str(ckpt))])
