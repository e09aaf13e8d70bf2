"""Hostile and odd inputs through the real entry points: each is handled, or stopped with one line naming it.

The table in docs/RELIABILITY.md lists every case with the test that backs it.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import vitcap
from tests.conftest import REPO, caption_args, classify_args
from vitcap.cli.errors import format_config_error
from vitcap.cli.main import main
from vitcap.data.sampler import ResumableSampler

# ------------------------------------------------------------------------------------------------------- inputs
WORDS = ["red", "green", "blue", "square", "circle", "small", "large", "a", "an", "image", "of"]


def _shape(seed: int, size: int = 32) -> Image.Image:
    rng = np.random.default_rng(seed)
    pixels = np.full((size, size, 3), 255, np.uint8)
    x, y = rng.integers(0, size // 2, 2)
    pixels[y : y + size // 2, x : x + size // 2] = rng.integers(0, 255, 3)
    return Image.fromarray(pixels)


def _jpeg_bytes(image: Image.Image, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", **kwargs)
    return buffer.getvalue()


def _exif_rotated(path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    path.write_bytes(_jpeg_bytes(_shape(7).resize((40, 20)), exif=exif))


def _png16(path: Path) -> None:
    pixels = (np.arange(32 * 32, dtype=np.uint16).reshape(32, 32) * 60).astype("<u2")
    Image.frombytes("I;16", (32, 32), pixels.tobytes()).save(path)
    assert Image.open(path).mode.startswith("I")  # really 16-bit on disk


def _palette(path: Path) -> None:
    image = _shape(8).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    image.info["transparency"] = 0
    image.save(path, transparency=0)


# Images a user may well have that vitcap reads correctly (converted to 8-bit RGB, EXIF orientation applied).
ODD_IMAGES = {
    "png_named_jpg": ("png_as.jpg", lambda p: _shape(1).save(p, format="PNG")),
    "png_16bit": ("deep.png", lambda p: _png16(p)),
    "cmyk_jpeg": ("cmyk.jpg", lambda p: Image.new("CMYK", (32, 32), (0, 200, 200, 0)).save(p)),
    "palette_png": ("palette.png", _palette),
    "la_png": ("la.png", lambda p: Image.new("LA", (32, 32), (90, 128)).save(p)),
    "exif_rotated": ("exif.jpg", _exif_rotated),
    "one_pixel": ("one.png", lambda p: Image.new("RGB", (1, 1), (200, 10, 10)).save(p)),
}

# Files that are not usable images: (file name, writer, phrase of the one-line reason).
BAD_IMAGES = {
    "corrupt_jpeg": ("corrupt.jpg", lambda p: p.write_bytes(b"\xff\xd8\xff\xe0 not jpeg data" * 4), "corrupt"),
    "truncated_jpeg": ("truncated.jpg", lambda p: p.write_bytes(_jpeg_bytes(_shape(2, 64))[:400]), "truncated"),
    "zero_bytes": ("empty.jpg", lambda p: p.write_bytes(b""), "empty"),
    "not_an_image": ("notes.jpg", lambda p: p.write_text("shopping list: milk, eggs\n"), "not a recognised image"),
    "decompression_bomb": ("big.png", lambda p: _shape(3, 64).save(p), "exceeds the limit 2000"),
}
BOMB_LIMIT = ("VITCAP_MAX_IMAGE_PIXELS", "2000")  # 64 x 64 = 4096 pixels refused, cheaply; 32 x 32 pass


def write_manifest(folder: Path, train: list[tuple[str, str]], *, val: int = 4) -> Path:
    """`captions.jsonl` over `train` (file, caption) pairs plus good val/test images; returns the manifest."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = [{"image": name, "caption": caption, "split": "train"} for name, caption in train]
    for split, offset in (("val", 100), ("test", 200)):
        for i in range(val):
            name = f"{split}_{i}.png"
            _shape(offset + i).save(folder / name)
            rows.append({"image": name, "captions": [" ".join(WORDS[i : i + 4]), "a small square"], "split": split})
    manifest = folder / "captions.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return manifest


def good_train(folder: Path, n: int = 6) -> list[tuple[str, str]]:
    folder.mkdir(parents=True, exist_ok=True)
    pairs = []
    for i in range(n):
        _shape(i).save(folder / f"train_{i}.png")
        pairs.append((f"train_{i}.png", " ".join(WORDS[i : i + 5])))
    return pairs


def fit_args(root: Path, manifest: Path, *extra: str) -> list[str]:
    return caption_args(
        root, "--data.data", str(manifest), "--data.batch_size", "64", "--trainer.max_epochs", "1", *extra
    )


def error_message(err: str) -> str:
    """stderr from its `vitcap: error:` line on (one message; a manifest error lists its entries below it)."""
    one_error_line(err)
    return err[err.index("vitcap: error:") :]


def one_error_line(err: str) -> str:
    """The single `vitcap: error:` line of stderr; fails on a traceback or on several error lines."""
    assert "Traceback" not in err, err[-3000:]
    lines = [line for line in err.splitlines() if line.startswith("vitcap: error:")]
    assert len(lines) == 1, err[-3000:]
    return lines[0]


# ------------------------------------------------------------------------------------------------- checkpoints
@pytest.fixture(scope="module")
def tiny_caption_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from vitcap.cli.train import lightning_cli

    root = tmp_path_factory.mktemp("tiny_caption")
    lightning_cli(["fit", *caption_args(root, "--data.num_train", "16", "--trainer.max_epochs", "1")])
    return root / "lightning_logs" / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def tiny_classify_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from vitcap.cli.train import lightning_cli

    root = tmp_path_factory.mktemp("tiny_classify")
    lightning_cli(["fit", *classify_args(root, "--trainer.max_steps", "2", "--trainer.limit_val_batches", "1")])
    return root / "lightning_logs" / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One file per odd and bad case (kind -> path), plus a path that does not exist ("missing")."""
    folder = tmp_path_factory.mktemp("images")
    paths = {}
    for kind, (name, write, *_) in {**ODD_IMAGES, **BAD_IMAGES}.items():
        write(folder / name)
        paths[kind] = folder / name
    paths["missing"] = folder / "not_there.jpg"
    return paths


# ------------------------------------------------------------------------------------- vitcap caption / classify
@pytest.mark.parametrize("command", ["caption", "classify"])
@pytest.mark.parametrize("kind", sorted(ODD_IMAGES))
def test_tools_read_odd_images(kind, command, image_folder, tiny_caption_ckpt, tiny_classify_ckpt, capsys) -> None:
    ckpt = tiny_caption_ckpt if command == "caption" else tiny_classify_ckpt
    code = main([command, "--checkpoint", str(ckpt), str(image_folder[kind])])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert out.startswith(f"{image_folder[kind]}\t") and len(out.splitlines()) == 1
    assert "Traceback" not in err


@pytest.mark.parametrize("command", ["caption", "classify"])
@pytest.mark.parametrize("kind", [*sorted(BAD_IMAGES), "missing"])
def test_tools_skip_bad_images_with_one_line(
    kind, command, image_folder, tiny_caption_ckpt, tiny_classify_ckpt, capsys, monkeypatch
) -> None:
    monkeypatch.setenv(*BOMB_LIMIT)
    ckpt = tiny_caption_ckpt if command == "caption" else tiny_classify_ckpt
    good = image_folder["one_pixel"]
    code = main([command, "--checkpoint", str(ckpt), str(image_folder[kind]), str(good)])
    out, err = capsys.readouterr()
    assert code == 1  # something could not be read; the rest was still processed
    assert out.startswith(f"{good}\t") and len(out.splitlines()) == 1
    assert "Traceback" not in err
    skipped = [line for line in err.splitlines() if line.startswith("vitcap: skipped:")]
    assert len(skipped) == 1 and str(image_folder[kind]) in skipped[0]
    reason = BAD_IMAGES[kind][2] if kind in BAD_IMAGES else "file not found"
    assert reason in skipped[0]


def test_exif_orientation_is_applied(image_folder) -> None:
    from vitcap.data.images import load_image

    assert load_image(image_folder["exif_rotated"]).size == (20, 40)  # stored 40 x 20, displayed rotated


# ---------------------------------------------------------------------------------------------- train.py fit
def test_fit_trains_on_odd_images_and_captions(tmp_path: Path, image_folder, capsys) -> None:
    data = tmp_path / "data"
    train = good_train(data)
    for kind in ODD_IMAGES:
        (data / image_folder[kind].name).write_bytes(image_folder[kind].read_bytes())
        train.append((image_folder[kind].name, "a small red square"))
    train += [("train_0.png", "!!! ... ?!"), ("train_1.png", " ".join(["red square"] * 5000))]  # 10,000 words
    manifest = write_manifest(data, train)
    code = main(["fit", *fit_args(tmp_path / "run", manifest, "--data.max_length", "16")])
    err = capsys.readouterr().err
    assert code == 0, err[-3000:]
    state = torch.load(next((tmp_path / "run").rglob("last.ckpt")), weights_only=True)
    assert state["global_step"] == 1  # one batch holding every image and caption above
    assert all(torch.isfinite(v).all() for v in state["state_dict"].values() if v.is_floating_point())


@pytest.mark.parametrize("kind", sorted(BAD_IMAGES))
def test_fit_stops_on_a_bad_image_naming_it(kind: str, tmp_path: Path, image_folder, capsys, monkeypatch) -> None:
    monkeypatch.setenv(*BOMB_LIMIT)
    data = tmp_path / "data"
    train = good_train(data)
    (data / image_folder[kind].name).write_bytes(image_folder[kind].read_bytes())
    manifest = write_manifest(data, [*train, (image_folder[kind].name, "a small square")])
    assert main(["fit", *fit_args(tmp_path, manifest)]) == 2
    message = error_message(capsys.readouterr().err)
    assert image_folder[kind].name in message and BAD_IMAGES[kind][2] in message


@pytest.mark.parametrize(
    "kind, entry, reason",
    [
        ("missing_file", {"image": "gone.png", "caption": "a square"}, "gone.png"),
        ("escapes_root", {"image": "../outside.png", "caption": "a square"}, "outside.png"),
        ("empty_caption", {"image": "train_0.png", "caption": "  "}, "empty caption"),
    ],
)
def test_fit_refuses_bad_manifest_entries(kind: str, entry: dict, reason: str, tmp_path: Path, capsys) -> None:
    data = tmp_path / "data"
    manifest = write_manifest(data, good_train(data))
    _shape(0).save(tmp_path / "outside.png")  # exists, but outside the data root
    with open(manifest, "a", encoding="utf-8") as f:
        f.write(json.dumps({**entry, "split": "train"}) + "\n")
    assert main(["fit", *fit_args(tmp_path, manifest)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    first = err[err.index("vitcap: error:") :].splitlines()[0]
    assert str(manifest) in first and "bad manifest entr" in first
    assert reason in err


def test_fit_refuses_a_caption_file_that_is_not_utf8(tmp_path: Path, capsys) -> None:
    data = tmp_path / "data"
    manifest = write_manifest(data, good_train(data))
    manifest.write_bytes(manifest.read_bytes() + '{"image": "train_0.png", "caption": "café"}\n'.encode("latin-1"))
    assert main(["fit", *fit_args(tmp_path, manifest)]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert str(manifest) in line and "not valid UTF-8" in line


@pytest.mark.parametrize(
    "extra, expected",
    [
        (["--trainer.max_epochz", "3"], "unknown option --trainer.max_epochz (did you mean '--trainer.max_epochs'?)"),
        (["--model.init_args.lrr", "0.1"], "model.lrr: unknown option"),
        (["--trainer.max_epochs", "three"], "trainer.max_epochs: expected int, got 'three'"),
        (["--data.init_args.batch_size", "[1]"], "data.batch_size: expected int"),
        (["--data.init_args.max_length", "1"], "max_length must be >= 2, got 1"),
        (["--trainer.val_check_interval", "1000"], "`val_check_interval` (1000) must be less than"),
        (["--trainer.strategy", "fsdp"], "The strategy `fsdp` requires a GPU accelerator"),
    ],
    ids=[
        "unknown-option",
        "unknown-init-arg",
        "wrong-type",
        "wrong-type-list",
        "bad-value",
        "lightning-check",
        "fsdp-on-cpu",
    ],
)
def test_config_errors_are_one_line(extra: list[str], expected: str, tmp_path: Path, capsys) -> None:
    assert main(["fit", *caption_args(tmp_path, *extra)]) == 2
    assert expected in one_error_line(capsys.readouterr().err)


def test_unknown_key_in_a_config_file_is_named(tmp_path: Path, capsys) -> None:
    config = tmp_path / "run.yaml"
    config.write_text("trainer:\n  max_epochs: 1\n  max_epochz: 3\n")
    assert main(["fit", *caption_args(tmp_path), "--config", str(config)]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "unknown key 'trainer.max_epochz'" in line and "did you mean 'trainer.max_epochs'" in line


def test_bugs_keep_their_traceback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch.nn.functional as F

    from vitcap.cli.errors import user_error
    from vitcap.tasks import CaptioningTask

    with pytest.raises(ValueError) as inside_torch:
        F.cross_entropy(torch.zeros(2, 3), torch.zeros(3, dtype=torch.long))
    assert user_error(inside_torch.value) is None

    def broken_step(self, batch, batch_idx):  # noqa: ANN001, ANN202
        raise KeyError("a bug")

    monkeypatch.setattr(CaptioningTask, "training_step", broken_step)
    with pytest.raises(KeyError, match="a bug"):
        main(["fit", *caption_args(tmp_path, "--trainer.max_steps", "1")])


def test_config_error_rewriting() -> None:
    union = """Parser key "data":
  Does not validate against any of the Union subtypes
  Subtypes: [<class 'lightning.pytorch.core.datamodule.LightningDataModule'>, <class 'NoneType'>]
  Errors:
    - Problem with given class_path 'vitcap.data.CaptionDataModule':
        Parser key "batch_size":
          Expected a <class 'int'>. Got value: abc
    - Expected a <class 'NoneType'>
  Given value type: <class 'jsonargparse._util.NestedArg'>
  Given value: NestedArg(key='batch_size', val='abc')"""
    assert format_config_error(union) == "data.batch_size: expected int, got 'abc'"
    assert len(format_config_error("something\n  odd\n").splitlines()) == 1  # unknown shapes: still one line


# ------------------------------------------------------------------------------------------------- checkpoints
@pytest.mark.parametrize("command", ["validate", "test"])
def test_checkpoint_of_the_other_task_fails_clearly(command, tiny_classify_ckpt, tmp_path: Path, capsys) -> None:
    assert main([command, *caption_args(tmp_path, "--ckpt_path", str(tiny_classify_ckpt))]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert str(tiny_classify_ckpt) in line and "'classification' task" in line


def test_checkpoint_with_another_vocabulary_fails_clearly(tiny_caption_ckpt, tmp_path: Path, capsys) -> None:
    data = tmp_path / "data"
    manifest = write_manifest(data, good_train(data))  # other words: another vocabulary
    assert main(["validate", *fit_args(tmp_path, manifest, "--ckpt_path", str(tiny_caption_ckpt))]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert str(tiny_caption_ckpt) in line and "vocabulary" in line and "--data.tokenizer" in line


@pytest.mark.parametrize("damage", ["truncated", "pickle_with_code", "empty"])
def test_damaged_checkpoints_fail_clearly(damage: str, tiny_caption_ckpt, tmp_path: Path, capsys) -> None:
    bad = tmp_path / f"{damage}.ckpt"
    if damage == "truncated":
        data = tiny_caption_ckpt.read_bytes()
        bad.write_bytes(data[: len(data) // 2])
    elif damage == "pickle_with_code":
        torch.save({"state_dict": {}, "payload": Path("x")}, bad)  # a class weights_only loading refuses
    else:
        bad.write_bytes(b"")
    expected = {"truncated": "not a PyTorch checkpoint", "pickle_with_code": "refused", "empty": "empty file"}[damage]
    for argv in (
        ["validate", *caption_args(tmp_path, "--ckpt_path", str(bad))],
        ["fit", *caption_args(tmp_path, "--ckpt_path", str(bad))],
        ["caption", "--checkpoint", str(bad), str(tmp_path)],
    ):
        assert main(argv) == 2
        line = one_error_line(capsys.readouterr().err)
        assert str(bad) in line and expected in line, line


def test_export_loads_without_pickle(tiny_caption_ckpt, image_folder, tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "export"
    assert main(["export", "--checkpoint", str(tiny_caption_ckpt), "--out", str(out)]) == 0
    expected = vitcap.load(tiny_caption_ckpt).caption([image_folder["one_pixel"]])[0].caption

    def no_pickle(*args, **kwargs):
        raise AssertionError("an export folder must load without torch.load / pickle")

    monkeypatch.setattr(torch, "load", no_pickle)
    assert vitcap.load(out).caption([image_folder["one_pixel"]])[0].caption == expected


# ---------------------------------------------------------------------------------------------------- evaluate
@pytest.mark.parametrize("case", ["not_utf8", "missing", "empty_reference", "punctuation_and_long"])
def test_evaluate_inputs(case: str, tmp_path: Path, capsys) -> None:
    preds, refs = tmp_path / "preds.jsonl", tmp_path / "refs.jsonl"
    _shape(0).save(tmp_path / "a.png")
    _shape(1).save(tmp_path / "b.png")
    pred_rows = [{"image": "a.png", "caption": "a red square"}, {"image": "b.png", "caption": "a blue square"}]
    ref_rows = [{"image": "a.png", "captions": ["a red square"]}, {"image": "b.png", "captions": ["a square"]}]
    if case == "empty_reference":
        ref_rows[1]["captions"] = [""]
    if case == "punctuation_and_long":
        pred_rows[0]["caption"], pred_rows[1]["caption"] = "?!...", " ".join(["square"] * 10_000)
    preds.write_text("".join(json.dumps(r) + "\n" for r in pred_rows), encoding="utf-8")
    refs.write_text("".join(json.dumps(r) + "\n" for r in ref_rows), encoding="utf-8")
    if case == "not_utf8":
        refs.write_bytes(refs.read_bytes() + '{"image": "a.png", "captions": ["café"]}\n'.encode("latin-1"))
    if case == "missing":
        refs.unlink()
    code = main(["evaluate", "--predictions", str(preds), "--references", str(refs), "--json"])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    if case == "punctuation_and_long":
        assert code == 0 and 0 <= json.loads(out)["scores"]["bleu4"] <= 1
        return
    assert code == 2
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1 and str(refs) in lines[0]


# ------------------------------------------------------------------------------- a real process, mid-training
def test_train_py_stops_mid_epoch_on_a_corrupt_image_and_keeps_the_training(tmp_path: Path, image_folder) -> None:
    data = tmp_path / "data"
    train = good_train(data, 8)
    # With batch size 1, put the corrupt image where the seed-0 shuffle of epoch 0 reaches it at step 3.
    order = list(ResumableSampler(list(range(len(train) + 1)), seed=0))
    at = order[3]
    (data / "corrupt.jpg").write_bytes(image_folder["corrupt_jpeg"].read_bytes())
    train.insert(at, ("corrupt.jpg", "a small square"))
    manifest = write_manifest(data, train)
    args = fit_args(tmp_path, manifest, "--data.batch_size", "1")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run(
        [sys.executable, "train.py", "fit", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 2
    line = one_error_line(done.stderr)
    assert done.stderr.rstrip().endswith(line)  # the last thing printed
    assert "corrupt.jpg" in line and "truncated or corrupt" in line
    ckpt = tmp_path / "lightning_logs" / "checkpoints" / "last.ckpt"
    assert torch.load(ckpt, weights_only=True)["global_step"] == 3  # the three steps before it were saved
