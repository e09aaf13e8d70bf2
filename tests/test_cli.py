"""The `vitcap` commands through their real entry point, on tiny trained checkpoints."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

import vitcap
from tests.conftest import REPO
from vitcap.cli.main import main


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of held-out shapes images (32 px) plus one corrupt file among them."""
    out = tmp_path_factory.mktemp("shapes")
    assert main(["data", "shapes", "--out", str(out), "--num", "4", "--seed", "5", "--img-size", "32"]) == 0
    folder = out / "captions" / "images"
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return folder


def good_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.name != "broken.jpg")


def test_caption_reports_bad_file_and_captions_the_rest(caption_run, images: Path, capsys) -> None:
    _, _, ckpt = caption_run
    code = main(["caption", "--checkpoint", str(ckpt), str(images)])
    out, err = capsys.readouterr()
    assert code == 1  # something failed
    lines = out.strip().splitlines()
    assert len(lines) == len(good_images(images))
    for line in lines:
        path, caption = line.split("\t")
        assert Path(path).exists() and caption.strip()
    bad = [line for line in err.splitlines() if "broken.jpg" in line]
    assert len(bad) == 1 and "Traceback" not in err


def test_caption_json_beams_and_alternatives(caption_run, images: Path, capsys) -> None:
    _, _, ckpt = caption_run
    files = [str(p) for p in good_images(images)]
    code = main(["caption", "--checkpoint", str(ckpt), *files, "--json", "--beams", "3", "--num-captions", "2"])
    assert code == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["image"] for r in rows] == files
    for row in rows:
        assert set(row) == {"image", "caption", "score", "alternatives"}
        assert row["score"] <= 0
        assert len(row["alternatives"]) <= 1
        for alt in row["alternatives"]:
            assert set(alt) == {"caption", "score"}


def test_caption_save_attention(caption_run, images: Path, tmp_path: Path, capsys) -> None:
    _, _, ckpt = caption_run
    first = good_images(images)[0]
    code = main(["caption", "--checkpoint", str(ckpt), str(first), "--save-attention", str(tmp_path)])
    assert code == 0
    png = tmp_path / f"{first.stem}.png"
    assert png.exists() and Image.open(png).size[0] > 100


def test_sampling_is_reproducible(caption_run, images: Path, capsys) -> None:
    _, _, ckpt = caption_run
    args = ["caption", "--checkpoint", str(ckpt), str(images), "--sample", "--temperature", "1.5", "--seed", "3"]
    main(args)
    first = capsys.readouterr().out
    main(args)
    assert capsys.readouterr().out == first


def test_wrong_task_and_non_checkpoint_fail_clearly(classify_run, images: Path, tmp_path: Path, capsys) -> None:
    _, _, ckpt = classify_run
    assert main(["caption", "--checkpoint", str(ckpt), str(images)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "classification" in err
    junk = tmp_path / "junk.ckpt"
    junk.write_text("hello")
    assert main(["caption", "--checkpoint", str(junk), str(images)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "junk.ckpt" in err and "not a PyTorch checkpoint" in err


def test_pickle_with_code_is_refused(tmp_path: Path, capsys) -> None:
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "payload": Path("x")}, evil)  # an arbitrary class: not allowed by weights_only
    assert main(["caption", "--checkpoint", str(evil), str(tmp_path)]) == 2
    assert "refused" in capsys.readouterr().err


def test_classify_json_and_rollout(classify_run, images: Path, tmp_path: Path, capsys) -> None:
    cli, _, ckpt = classify_run
    code = main(["classify", "--checkpoint", str(ckpt), str(images), "--json", "--top-k", "3",
                 "--save-attention", str(tmp_path)])  # fmt: skip
    assert code == 1  # the corrupt file
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == len(good_images(images))
    names = set(cli.datamodule.class_names)
    for row in rows:
        probs = [t["prob"] for t in row["top"]]
        assert len(probs) == 3 and probs == sorted(probs, reverse=True) and row["label"] in names
    assert len(list(tmp_path.glob("*.png"))) == len(rows)


def test_python_api_accepts_paths_pil_and_tensors(caption_run, images: Path) -> None:
    _, _, ckpt = caption_run
    model = vitcap.load(ckpt)
    path = good_images(images)[0]
    from vitcap.data.images import load_image

    pil = load_image(path)
    tensor = model.transform(pil)
    results = model.caption([path, pil, tensor])
    assert results[0].caption == results[1].caption == results[2].caption
    maps = model.caption(path, return_attention=True)[0]
    assert maps.attention.shape[0] == len(maps.words)


def test_export_loads_without_pickle_and_matches(caption_run, images: Path, tmp_path: Path, capsys) -> None:
    _, _, ckpt = caption_run
    out = tmp_path / "export"
    assert main(["export", "--checkpoint", str(ckpt), "--out", str(out)]) == 0
    assert {p.name for p in out.iterdir()} == {"model.safetensors", "config.json"}
    files = good_images(images)
    a = [r.caption for r in vitcap.load(ckpt).caption(files)]
    b = [r.caption for r in vitcap.load(out).caption(files)]
    assert a == b


def test_evaluate_scores_caption_output(caption_run, images: Path, tmp_path: Path, capsys) -> None:
    _, _, ckpt = caption_run
    files = [str(p) for p in good_images(images)]
    assert main(["caption", "--checkpoint", str(ckpt), *files, "--json"]) == 0
    preds = tmp_path / "preds.jsonl"
    preds.write_text(capsys.readouterr().out)
    refs = images.parent / "captions.jsonl"
    assert main(["evaluate", "--predictions", str(preds), "--references", str(refs), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    flat = json.dumps(result)
    assert "bleu4" in flat and "cider_d" in flat


def test_console_script_and_train_py_help() -> None:
    out = subprocess.run([sys.executable, "-m", "vitcap.cli"], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 2 and "usage: vitcap" in out.stdout
    out = subprocess.run([sys.executable, "train.py", "--help"], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0 and "fit" in out.stdout


def test_output_into_a_closed_pipe_ends_quietly(caption_run, images: Path) -> None:
    _, _, ckpt = caption_run
    # `true` exits before the model is loaded, so the first caption line meets a closed pipe.
    command = f"{sys.executable} -m vitcap.cli caption --checkpoint {ckpt} {images} | true; echo ${{PIPESTATUS[0]}}"
    out = subprocess.run(["bash", "-c", command], capture_output=True, text=True, cwd=REPO)
    assert out.stdout.strip() == "141"
    assert "Traceback" not in out.stderr and "BrokenPipeError" not in out.stderr
