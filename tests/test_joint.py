"""Joint classification + captioning: one encoder, two heads, one checkpoint that both CLIs use."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import vitcap
from tests.conftest import caption_args, classify_args
from vitcap.cli.main import main
from vitcap.cli.train import lightning_cli
from vitcap.data.shapes import CLASS_NAMES, make_scene
from vitcap.models import JointModel


def joint_args(root: Path, *extra: str) -> list[str]:
    args = caption_args(root, *extra)
    args[args.index("vitcap.tasks.CaptioningTask")] = "vitcap.tasks.JointTask"
    return args


@pytest.fixture(scope="module")
def joint_run(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("joint_run")
    cli = lightning_cli(["fit", *joint_args(root, "--trainer.max_epochs", "3")])
    ckpts = sorted(root.rglob("last.ckpt"))
    assert ckpts, f"no last.ckpt under {root}"
    return cli, ckpts[0]


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("shapes")
    assert main(["data", "shapes", "--out", str(out), "--num", "3", "--seed", "5", "--img-size", "32"]) == 0
    return out / "captions" / "images"


def test_shapes_label_is_the_object_the_forward_caption_names_first() -> None:
    for i in range(200):
        scene = make_scene(0, i, "train", 64, 1, 2)
        size, shape = CLASS_NAMES[scene.label].split("_")
        there = next(c for c in scene.captions if c.startswith("there "))  # "there is|are" + the forward form
        count, first_size, _, first_shape = there.split()[2:6]
        assert first_size == size and first_shape.startswith(shape[:4]), there  # "crosses", "stars": plural
        assert count in ("a", "two"), there


def test_caption_batches_carry_labels_for_shapes(joint_run) -> None:
    cli, _ = joint_run
    dm = cli.datamodule
    for loader in (dm.train_dataloader(), dm.val_dataloader()):
        batch = next(iter(loader))
        assert batch["labels"].shape == (batch["images"].shape[0],)
        assert int(batch["labels"].max()) < len(CLASS_NAMES)


def test_joint_training_logs_both_metric_sets_and_learns_both(joint_run) -> None:
    cli, ckpt = joint_run
    metrics = cli.trainer.callback_metrics
    for name in ("val/acc", "val/acc5", "val/bleu4", "val/cider_d", "val/class_loss", "val/loss"):
        assert name in metrics, name
    assert isinstance(cli.model.model, JointModel)
    meta = torch.load(ckpt, weights_only=True)["vitcap"]
    assert meta["task"] == "joint" and meta["class_names"] == list(CLASS_NAMES) and meta["tokenizer"]
    assert meta["model"]["kind"] == "joint"


def test_one_joint_checkpoint_serves_caption_and_classify(joint_run, images: Path, capsys) -> None:
    _, ckpt = joint_run
    assert main(["caption", "--checkpoint", str(ckpt), str(images), "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    n = len(list(images.glob("*.png")))
    assert len(rows) == n > 0 and all(isinstance(r["caption"], str) for r in rows)
    assert main(["classify", "--checkpoint", str(ckpt), str(images), "--json", "--top-k", "2"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == n and all(r["label"] in CLASS_NAMES for r in rows)
    captioner, classifier = vitcap.load(ckpt), vitcap.load(ckpt, task="classification")
    assert captioner.task == "captioning" and classifier.task == "classification"
    assert classifier.model.encoder is not captioner.model.encoder  # two loads, but each view shares its own model
    joint = captioner.model
    view = joint.as_classifier()
    assert view.encoder is joint.encoder and view.head is joint.head
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(view(x), joint.classify(x))


def test_joint_export_loads_both_ways_and_onnx_says_no(joint_run, tmp_path: Path, capsys) -> None:
    _, ckpt = joint_run
    out = tmp_path / "export"
    assert main(["export", "--checkpoint", str(ckpt), "--out", str(out)]) == 0
    assert vitcap.load(out, task="classification").classify(torch.zeros(3, 32, 32))[0][0][0] in CLASS_NAMES
    assert isinstance(vitcap.load(out).caption(torch.zeros(3, 32, 32))[0].caption, str)
    capsys.readouterr()
    assert main(["export", "--checkpoint", str(ckpt), "--out", str(tmp_path / "onnx"), "--format", "onnx"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "joint" in err


def test_joint_checkpoint_seeds_a_captioner_decoder_and_a_classifier_head(joint_run, tmp_path: Path) -> None:
    cli, ckpt = joint_run
    source = torch.load(ckpt, weights_only=True)["state_dict"]
    tokenizer = tmp_path / "tokenizer.json"
    tokenizer.write_text(cli.datamodule.tokenizer_json)
    captioner = lightning_cli(
        caption_args(tmp_path / "c", "--data.tokenizer", str(tokenizer), "--model.init_from", str(ckpt)), run=False
    ).model.model
    for name, tensor in captioner.state_dict().items():  # same vocabulary: encoder, projection and decoder
        assert torch.equal(tensor, source[f"model.{name}"]), name
    classifier = lightning_cli(classify_args(tmp_path / "k", "--model.init_from", str(ckpt)), run=False).model.model
    for name, tensor in classifier.state_dict().items():  # same classes: encoder and head
        assert torch.equal(tensor, source[f"model.{name}"]), name


def test_joint_task_without_labels_or_classes_is_one_line(tmp_path: Path, capsys) -> None:
    folder = tmp_path / "caps"
    assert main(["data", "shapes", "--out", str(folder), "--num", "8", "--num-eval", "4", "--img-size", "32",
                 "--tasks", "caption"]) == 0  # fmt: skip
    args = joint_args(tmp_path, "--data.data", str(folder / "captions" / "captions.jsonl"))
    assert main(["fit", *args]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("vitcap: error:")]
    assert len(err) == 1 and "model.class_names" in err[0]
