"""Transfer learning: encoders moving between tasks, frozen or scheduled encoders, per-part learning rates."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from tests.conftest import caption_args
from vitcap.cli.main import main
from vitcap.cli.train import lightning_cli
from vitcap.models.registry import ModelSpec, resolve_configs
from vitcap.tasks.finetune import param_groups_for


def _one_error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("vitcap: error:")]
    assert len(lines) == 1, err[-2000:]
    return lines[0]


def test_classifier_encoder_seeds_a_captioner_and_only_the_encoder_changes(classify_run, tmp_path: Path) -> None:
    _, _, ckpt = classify_run
    fresh = lightning_cli(caption_args(tmp_path / "a"), run=False).model.model.state_dict()
    seeded_task = lightning_cli(caption_args(tmp_path / "b", "--model.init_from", str(ckpt)), run=False).model
    seeded = seeded_task.model.state_dict()
    source = torch.load(ckpt, weights_only=True)["state_dict"]
    for name, tensor in seeded.items():
        if name.startswith("encoder."):
            assert torch.equal(tensor, source[f"model.{name}"]), name
        else:  # same seed, same init: everything outside the encoder is as a fresh model has it
            assert torch.equal(tensor, fresh[name]), name
    assert any(not torch.equal(seeded[n], fresh[n]) for n in seeded if n.startswith("encoder."))


def test_position_embeddings_are_resampled_for_another_image_size(classify_run, tmp_path: Path) -> None:
    _, _, ckpt = classify_run  # a 32-px toy ViT (4 x 4 patches)
    task = lightning_cli(
        caption_args(tmp_path, "--data.img_size", "48", "--model.init_from", str(ckpt)), run=False
    ).model
    assert task.model.encoder.model.pos_embed.shape[1] == 1 + 6 * 6


def test_bad_init_from_paths_are_one_line(tmp_path: Path, capsys) -> None:
    missing = tmp_path / "none.ckpt"
    assert main(["fit", *caption_args(tmp_path, "--model.init_from", str(missing))]) == 2
    assert str(missing) in _one_error(capsys)
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"not a checkpoint")
    assert main(["fit", *caption_args(tmp_path, "--model.init_from", str(junk))]) == 2
    line = _one_error(capsys)
    assert "model.init_from" in line and str(junk) in line


def test_a_cnn_encoder_does_not_fit_a_vit(classify_run, tmp_path: Path, capsys) -> None:
    _, _, ckpt = classify_run
    args = caption_args(tmp_path, "--model.preset", "cnn-tiny", "--model.init_from", str(ckpt))
    assert main(["fit", *args]) == 2
    line = _one_error(capsys)
    assert "encoder." in line and str(ckpt) in line  # names the first tensor that does not fit


def test_layer_decay_gives_the_documented_rates() -> None:
    enc, _ = resolve_configs("toy")  # a ViT of depth 2
    model = ModelSpec("classifier", enc, num_classes=3).build()
    groups = param_groups_for(model, weight_decay=0.05, encoder_lr_mult=0.5, layer_decay=0.5)
    scale = {g["name"]: g["lr_scale"] for g in groups}
    # depth 2, timm's numbering: layer 0 patch embedding + tokens, 1 block 0, 2 block 1 + final norm;
    # rate = encoder_lr_mult * layer_decay ** (2 - layer)
    assert scale["encoder.layer_0"] == pytest.approx(0.5 * 0.5**2)
    assert scale["encoder.layer_1"] == pytest.approx(0.5 * 0.5)
    assert scale["encoder.layer_2"] == pytest.approx(0.5)
    assert scale["head"] == 1.0
    vit_groups = {g["name"]: g["params"] for g in groups}
    assert model.encoder.model.patch_embed.proj.weight in vit_groups["encoder.layer_0"]
    no_decay = {p for g in groups if g.get("weight_decay") == 0.0 for p in g["params"]}
    vit = model.encoder.model
    assert vit.pos_embed in no_decay and vit.cls_token in no_decay and vit.blocks[0].norm1.weight in no_decay
    assert vit.blocks[0].attn.qkv.weight not in no_decay
    counted = [p for g in groups for p in g["params"]]
    assert len(counted) == len({id(p) for p in counted}) == len(list(model.parameters()))


def test_frozen_encoder_is_bit_identical_after_training(tmp_path: Path) -> None:
    args = caption_args(tmp_path, "--model.preset", "cnn-tiny", "--model.encoder", "{embed_dim: 32, out_index: 2}",
                        "--model.decoder", "{embed_dim: 32, num_heads: 2}", "--model.freeze_encoder", "true",
                        "--trainer.max_epochs", "1", "--data.num_train", "64")  # fmt: skip
    cli = lightning_cli(args, run=False)
    before = {k: v.clone() for k, v in cli.model.model.encoder.state_dict().items()}
    cli.trainer.fit(cli.model, cli.datamodule)
    after = cli.model.model.encoder.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights and BatchNorm statistics
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in cli.model.model.encoder.modules())


def test_encoder_trains_only_after_the_given_epoch(tmp_path: Path) -> None:
    args = caption_args(tmp_path, "--model.freeze_encoder", "2", "--trainer.max_epochs", "1",
                        "--data.num_train", "64")  # fmt: skip
    cli = lightning_cli(args, run=False)
    before = {k: v.clone() for k, v in cli.model.model.encoder.state_dict().items()}
    cli.trainer.fit(cli.model, cli.datamodule)  # epoch 0 only: still frozen
    assert all(torch.equal(before[k], v) for k, v in cli.model.model.encoder.state_dict().items())
    cli.trainer.fit_loop.max_epochs = 3
    cli.trainer.fit(cli.model, cli.datamodule)  # epochs 1 and 2: unfrozen at the start of epoch 2
    assert not all(torch.equal(before[k], v) for k, v in cli.model.model.encoder.state_dict().items())
    assert cli.model.encoder_unfrozen_step is not None and not cli.model.encoder_frozen


def test_the_shipped_vit_configs_share_one_encoder() -> None:
    """`shapes_caption_vit_from_classifier.yaml` starts from `shapes_classify_vit_scenes.yaml`'s checkpoint: the ViT
    demo configs must build the same encoder at the same image size, or `init_from` fails."""
    configs = Path(__file__).resolve().parents[1] / "configs" / "demo"
    names = ["shapes_classify_vit", "shapes_classify_vit_scenes", "shapes_caption_vit"]
    names += ["shapes_caption_vit_from_classifier", "shapes_joint_vit"]
    seen = set()
    for name in names:
        cfg = yaml.safe_load((configs / f"{name}.yaml").read_text())
        model, data = cfg["model"]["init_args"], cfg["data"]["init_args"]
        encoder, _ = resolve_configs(model["preset"], model["encoder"])
        seen.add((repr(encoder), data["img_size"]))
    assert len(seen) == 1, seen


def test_the_demo_and_its_scst_stage_share_one_architecture() -> None:
    """`shapes_caption_scst.yaml` is run with `--model.init_from` the demo's checkpoint: same encoder, decoder and
    image size, or the first mismatching tensor stops it."""
    configs = Path(__file__).resolve().parents[1] / "configs" / "demo"
    seen = set()
    for name in ["shapes_caption_cnn", "shapes_caption_scst"]:
        cfg = yaml.safe_load((configs / f"{name}.yaml").read_text())
        model, data = cfg["model"]["init_args"], cfg["data"]["init_args"]
        encoder, decoder = resolve_configs(model["preset"], model.get("encoder"), model.get("decoder"))
        seen.add((repr(encoder), repr(decoder), data["img_size"], data["max_length"]))
    assert len(seen) == 1, seen
