"""`--model.init_from CKPT`: weights only, by name and shape, with one-line errors for what does not fit."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.conftest import caption_args
from vitcap.checkpoint import read_checkpoint
from vitcap.cli.main import main
from vitcap.cli.train import lightning_cli
from vitcap.errors import CheckpointError
from vitcap.models.registry import create_captioner
from vitcap.tasks.init_from import load_matching


def one_error_line(err: str) -> str:
    assert "Traceback" not in err, err[-3000:]
    lines = [line for line in err.splitlines() if line.startswith("vitcap: error:")]
    assert len(lines) == 1, err[-3000:]
    return lines[0]


def test_weights_are_loaded_and_training_starts_afresh(caption_run, tmp_path: Path) -> None:
    _, _, ckpt = caption_run
    args = caption_args(tmp_path, "--model.init_from", str(ckpt), "--trainer.max_epochs", "1")
    cli = lightning_cli(args, run=False)
    _, saved = read_checkpoint(ckpt)
    state = cli.model.model.state_dict()
    assert state.keys() == saved.keys()
    assert all(torch.equal(state[k], saved[k]) for k in saved)
    cli.trainer.fit(cli.model, cli.datamodule)  # no optimizer state or epoch counter comes along
    assert cli.trainer.current_epoch == 1 and cli.trainer.global_step == 20  # 640 pairs / 32
    assert torch.load(ckpt, weights_only=True)["global_step"] > 20


@pytest.mark.parametrize(
    "extra, expected",
    [
        (["--model.decoder", '{"embed_dim": 48}'], "parameter decoder."),  # another width: the first tensor named
        (["--model.decoder", '{"depth": 3}'], "its parameter decoder.blocks.2."),  # a block the checkpoint lacks
        (["--model.decoder", '{"depth": 1}'], "checkpoint tensor decoder.blocks.1."),  # one the model lacks
    ],
    ids=["width", "deeper", "shallower"],
)
def test_another_architecture_is_one_line_naming_the_tensor(
    extra: list[str], expected: str, caption_run, tmp_path: Path, capsys
) -> None:
    _, _, ckpt = caption_run
    assert main(["fit", *caption_args(tmp_path, *extra, "--model.init_from", str(ckpt))]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "model.init_from" in line and str(ckpt) in line and expected in line and "another architecture" in line


@pytest.mark.parametrize("kind", ["text", "missing", "folder", "foreign_torch_file"])
def test_what_is_not_a_vitcap_checkpoint_is_one_line(kind: str, tmp_path: Path, capsys) -> None:
    path = {"text": tmp_path / "notes.ckpt", "missing": tmp_path / "nothing.ckpt", "folder": tmp_path}.get(
        kind, tmp_path / "other.ckpt"
    )
    if kind == "text":
        path.write_text("not a checkpoint\n")
    if kind == "foreign_torch_file":  # a Lightning-style file another program wrote
        torch.save({"state_dict": {"model.w": torch.zeros(2)}}, path)
    assert main(["fit", *caption_args(tmp_path / "run", "--model.init_from", str(path))]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "model.init_from" in line and str(path) in line
    if kind == "foreign_torch_file":
        assert "not one written by vitcap" in line


def test_load_matching_loads_a_selection_and_reports_it() -> None:
    """The piece transfer learning builds on: only the encoder, with what was left new listed."""
    torch.manual_seed(0)
    source, target = create_captioner("toy", vocab_size=20), create_captioner("toy", vocab_size=30)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    report = load_matching(target, source.state_dict(), "source.ckpt", only=("encoder.",))
    after = target.state_dict()
    assert report.loaded and all(k.startswith("encoder.") for k in report.loaded)
    assert all(torch.equal(after[k], source.state_dict()[k]) for k in report.loaded)
    assert all(torch.equal(after[k], before[k]) for k in report.kept)
    assert any(k.startswith("decoder.") for k in report.kept)
    assert "left new" in report.summary() and "decoder" in report.summary()


def test_a_mismatch_leaves_the_model_untouched() -> None:
    torch.manual_seed(0)
    target = create_captioner("toy", vocab_size=20)
    state = {k: torch.zeros_like(v) for k, v in target.state_dict().items()}
    last = list(state)[-1]
    state[last] = torch.zeros(3)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(CheckpointError, match=last):
        load_matching(target, state, "bad.ckpt")
    assert all(torch.equal(v, before[k]) for k, v in target.state_dict().items())
