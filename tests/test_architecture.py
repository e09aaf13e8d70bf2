"""The one-way architecture as a user meets it: a Lightning-free inference core, light `--help`, old checkpoints
that still load, and one source for each value the data decides."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO, caption_args, classify_args
from vitcap.cli.main import main
from vitcap.cli.train import lightning_cli

FIXTURES = Path(__file__).parent / "fixtures"
OLD_CAPTIONER = FIXTURES / "v0_1_caption_toy.ckpt"  # written by vitcap 0.1 (format 1), before the split
OLD_CLASSIFIER = FIXTURES / "v0_1_classify_toy.ckpt"

LOAD_AND_CAPTION = """
import sys, torch
import vitcap
model = vitcap.load(sys.argv[1])
result = model.caption(torch.zeros(1, 3, 32, 32))[0]
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("lightning", "pytorch_lightning", "lightning_fabric"))
tasks = sorted(m for m in sys.modules if m.startswith(("vitcap.tasks", "vitcap.training", "vitcap.cli")))
print("CAPTION", repr(result.caption))
print("HEAVY", heavy[:5])
print("TASKS", tasks)
"""


def _run(code: str, *args: str) -> str:
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def test_load_and_caption_import_no_lightning(caption_run) -> None:
    _, _, ckpt = caption_run
    out = _run(LOAD_AND_CAPTION, str(ckpt))
    assert "CAPTION" in out
    assert "HEAVY []" in out, out
    assert "TASKS []" in out, out


HELP = """
import sys
from vitcap.cli.main import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
print("LOADED", sorted(m for m in ("torch", "lightning", "timm") if m in sys.modules))
"""


@pytest.mark.parametrize("argv", [["--help"], ["caption", "--help"], ["classify", "--help"], ["export", "--help"]])
def test_help_imports_neither_torch_nor_lightning(argv: list[str]) -> None:
    out = _run(HELP, *argv)
    assert "usage: vitcap" in out and "LOADED []" in out, out


@pytest.mark.parametrize("fixture, kind", [(OLD_CAPTIONER, "captioning"), (OLD_CLASSIFIER, "classification")])
def test_checkpoints_written_before_the_split_still_load(fixture: Path, kind: str) -> None:
    import vitcap

    model = vitcap.load(fixture)
    assert model.task == kind
    images = torch.rand(2, 3, 32, 32)
    if kind == "captioning":
        results = model.caption(images, num_beams=2)
        assert len(results) == 2 and all(isinstance(r.caption, str) for r in results)
    else:
        top = model.classify(images, top_k=3)
        assert len(top) == 2 and abs(sum(p for _, p in top[0]) - 1) < 1  # probabilities of 3 of 10 classes


def test_old_checkpoint_exports_to_the_current_format(tmp_path: Path, capsys) -> None:
    import vitcap
    from vitcap.checkpoint import read_checkpoint

    assert main(["export", "--checkpoint", str(OLD_CAPTIONER), "--out", str(tmp_path / "export")]) == 0
    meta, _ = read_checkpoint(tmp_path / "export")
    assert meta.format == 2 and meta.model["kind"] == "captioner" and not meta.legacy_hparams
    images = torch.rand(2, 3, 32, 32)
    old, new = vitcap.load(OLD_CAPTIONER), vitcap.load(tmp_path / "export")
    assert [r.tokens for r in old.caption(images)] == [r.tokens for r in new.caption(images)]


def test_old_checkpoint_resumes_under_the_new_config(tmp_path: Path) -> None:
    # validate with the 0.1 checkpoint: the YAML decides the model, the checkpoint's weights must fit it
    args = classify_args(tmp_path, "--ckpt_path", str(OLD_CLASSIFIER), "--data.num_val", "8")
    cli = lightning_cli(["validate", *args])
    assert torch.isfinite(cli.trainer.callback_metrics["val/loss"])


def test_contradicting_image_size_is_one_line(tmp_path: Path, capsys) -> None:
    assert main(["fit", *caption_args(tmp_path, "--model.encoder", "{img_size: 48}")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    line = [x for x in err.splitlines() if x.startswith("vitcap: error:")][0]
    assert "model.encoder.img_size" in line and "data.img_size (32)" in line


def test_caption_length_comes_from_the_data(tmp_path: Path) -> None:
    cli = lightning_cli(caption_args(tmp_path, "--data.max_length", "20", "--model.generation", "null"), run=False)
    assert cli.model.generation.max_length == 19  # rows of 20 = BOS + 19 new tokens (EOS included)
    explicit = lightning_cli(caption_args(tmp_path, "--data.max_length", "20"), run=False)
    assert explicit.model.generation.max_length == 12  # caption_args sets it: a set field wins
    assert cli.model.spec.encoder.img_size == 32  # from data.img_size


def test_moved_keys_point_to_their_new_place(tmp_path: Path, capsys) -> None:
    assert main(["fit", *caption_args(tmp_path, "--model.init_args.lr", "0.1")]) == 2
    line = [x for x in capsys.readouterr().err.splitlines() if x.startswith("vitcap: error:")][0]
    assert "optim.lr" in line


def test_model_summary_counts_flops(tmp_path: Path) -> None:
    from lightning.pytorch.utilities.model_summary import ModelSummary

    cli = lightning_cli(caption_args(tmp_path), run=False)
    assert ModelSummary(cli.model).total_flops > 0
