"""Bulk captioning (`vitcap caption --out results.jsonl`): folders (recursive), file lists and shards, the same
captions as the one-process command, bad images listed, resume after a kill, several processes, shard output."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.conftest import REPO
from vitcap.cli.data import main as data_main
from vitcap.cli.main import main as vitcap
from vitcap.data.shards import iter_shard

CKPT = str(REPO / "tests" / "fixtures" / "v0_1_caption_toy.ckpt")


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 shapes images, 8 of them one folder deeper, and one file that is not an image."""
    root = tmp_path_factory.mktemp("bulk")
    assert vitcap(["data", "shapes", "--out", str(root / "shapes"), "--num", "16", "--num-eval", "4",
                   "--tasks", "caption", "--img-size", "32"]) == 0  # fmt: skip
    folder = root / "shapes" / "captions" / "images"
    (folder / "deeper").mkdir()
    for p in sorted(folder.glob("val_*.png")) + sorted(folder.glob("test_*.png")):
        p.rename(folder / "deeper" / p.name)
    (folder / "deeper" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n but not really")
    return folder


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_bulk_matches_the_one_process_command_and_lists_bad_images(images: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "results.jsonl"
    assert vitcap(["caption", "--checkpoint", CKPT, str(images), "--out", str(out), "--num-workers", "0"]) == 1
    err = capsys.readouterr().err
    assert f"vitcap: skipped: {images / 'deeper' / 'broken.png'}: cannot load image" in err
    assert "captioned 24 images" in err and "images/s" in err
    got = {r["image"]: r["caption"] for r in rows(out)}
    assert len(got) == 24 and any("/deeper/" in k for k in got)  # recursive
    assert vitcap(["caption", "--checkpoint", CKPT, str(images), "--json"]) == 1  # the one-process loop
    single = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {r["image"]: r["caption"] for r in single} == got


def test_rerun_after_a_kill_captions_only_what_is_missing(images: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "results.jsonl"
    assert vitcap(["caption", "--checkpoint", CKPT, str(images), "--out", str(out), "--num-workers", "0"]) == 1
    complete = rows(out)
    # A killed run: half the rows moved into --out, a few in a part file, the last line cut short.
    text = out.read_text().splitlines(keepends=True)
    out.write_text("".join(text[:10]))
    (tmp_path / "results.jsonl.part1").write_text("".join(text[10:14]) + text[14][:25])
    capsys.readouterr()
    assert vitcap(["caption", "--checkpoint", CKPT, str(images), "--out", str(out), "--num-workers", "0"]) == 1
    assert "captioned 10 images" in capsys.readouterr().err  # 14 were done; the cut line is captioned again
    again = rows(out)
    assert sorted(r["image"] for r in again) == sorted(r["image"] for r in complete)
    assert not list(tmp_path.glob("*.part*"))


def test_file_list_and_two_processes_share_the_work(images: Path, tmp_path: Path, capsys) -> None:
    listed = sorted(str(p) for p in images.glob("train_*.png"))
    (tmp_path / "list.txt").write_text("# some of them\n" + "\n".join(listed) + "\n")
    out = tmp_path / "r.jsonl"
    code = vitcap(["caption", "--checkpoint", CKPT, "--files-from", str(tmp_path / "list.txt"), "--out", str(out),
                   "--devices", "2", "--num-workers", "1", "--batch-size", "4"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert sorted(r["image"] for r in rows(out)) == listed  # each once: no duplicates, none missing


def test_shards_in_shards_out(tmp_path: Path, capsys) -> None:
    shards = tmp_path / "shards"
    assert (
        data_main(["shards", "--out", str(shards), "--num", "12", "--per-shard", "5", "--img-size", "32", "shapes"])
        == 0
    )
    out, copies = tmp_path / "r.jsonl", tmp_path / "captioned"
    pattern = f"{shards}/train-{{00000..00002}}.tar"
    code = vitcap(["caption", "--checkpoint", CKPT, pattern, "--out", str(out), "--out-shards", str(copies),
                   "--num-workers", "0"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    captions = {(r["shard"], r["key"]): r["caption"] for r in rows(out)}
    assert len(captions) == 12
    for name in ("train-00000.tar", "train-00001.tar", "train-00002.tar"):
        for sample in iter_shard(str(copies / name)):
            assert sample["caption.txt"].decode() == captions[(str(shards / name), sample["__key__"])]
            assert "png" in sample and "txt" in sample  # the original members are kept
    capsys.readouterr()
    assert vitcap(["caption", "--checkpoint", CKPT, pattern, "--out", str(out), "--num-workers", "0"]) == 0
    assert "nothing to do" in capsys.readouterr().err


def test_bulk_options_need_an_output_file(images: Path, capsys) -> None:
    assert vitcap(["caption", "--checkpoint", CKPT, str(images), "--devices", "2"]) == 2
    assert "need --out results.jsonl" in capsys.readouterr().err


def test_cpu_processes_share_the_cores_even_when_omp_threads_is_set(monkeypatch) -> None:
    import torch

    from vitcap.cli.bulk import BulkCaptioner, cpu_share

    class Stub:  # what `setup` reads of the trainer: two CPU processes on this node
        strategy = type("S", (), {"root_device": torch.device("cpu")})()
        num_devices = 2

    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # set for one process: Lightning then leaves the threads alone
    before = torch.get_num_threads()
    module = BulkCaptioner(CKPT, {})
    monkeypatch.setattr(BulkCaptioner, "trainer", property(lambda self: Stub()))
    try:
        torch.set_num_threads(4)
        module.setup("predict")
        assert torch.get_num_threads() == cpu_share(2) == max(1, len(os.sched_getaffinity(0)) // 2)
        assert module.pipeline is not None
    finally:
        torch.set_num_threads(before)
