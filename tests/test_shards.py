"""Tar shards: writing and counting, rank/worker sharding, equal batch counts, seeded shuffle, exact resume of the
loader, bad data skipped without mis-pairing, and both data modules training from shards through the CLI."""

from __future__ import annotations

import io
import json
import tarfile
import warnings
from pathlib import Path

import pytest
import torch

from tests.conftest import caption_args, classify_args
from vitcap.cli.data import main as data_main
from vitcap.data import CaptionDataModule, ClassificationDataModule
from vitcap.data.datamodules.shards import CaptionDecode, ShardData
from vitcap.data.shards import ShardWarning, StreamPlan, TrainStream, expand_shards, iter_shard, shard_set
from vitcap.data.shards.index import Shard
from vitcap.data.shards.reader import sample_captions
from vitcap.data.transforms import build_eval_transform, make_preprocessing
from vitcap.errors import ConfigError, DataError
from vitcap.tokenizer import CaptionTokenizer


def write(out: Path, *args: str) -> Path:
    assert data_main(["shards", "--out", str(out), "--img-size", "32", *args]) == 0
    return out


@pytest.fixture(scope="module")
def caption_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Shapes captions: 96 training samples in 8 shards of 12, 9 validation, 9 test."""
    return write(tmp_path_factory.mktemp("shards") / "caption", "--num", "96", "--per-shard", "12", "shapes")


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _png(color: tuple[int, int, int]) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), color).save(buffer, format="PNG")
    return buffer.getvalue()


# ------------------------------------------------------------------------------------------ writing and counting
def test_written_shards_pair_every_image_with_its_own_captions(caption_shards: Path) -> None:
    index = json.loads((caption_shards / "index.json").read_text())
    train = index["splits"]["train"]
    assert [s["count"] for s in train] == [12] * 8 and len(index["splits"]["val"]) == 1
    from vitcap.data.shapes import make_scene

    seen = 0
    for entry in train:
        samples = list(iter_shard(str(caption_shards / entry["name"])))
        assert [s["__key__"] for s in samples] == entry["keys"]
        for s in samples:
            i = int(json.loads(s["json"])["id"].split("_")[1])
            assert sample_captions(s) == list(make_scene(0, i, "train", 32, 1, 2).captions)
            seen += 1
    assert seen == 96


def test_shards_from_a_caption_file_and_an_image_folder_tree(tmp_path: Path) -> None:
    from vitcap.data.shapes import write_shapes

    write_shapes(tmp_path / "src", img_size=32, splits={"train": 6, "val": 2, "test": 2})
    (tmp_path / "src" / "captions" / "images" / "train_000003.png").write_bytes(b"broken")
    assert data_main(["shards", "--out", str(tmp_path / "bad"), str(tmp_path / "src" / "captions")]) == 2
    out = write(tmp_path / "cap", "--per-shard", "4", "--skip-bad", str(tmp_path / "src" / "captions"))
    index = json.loads((out / "index.json").read_text())
    assert {k: sum(s["count"] for s in v) for k, v in index["splits"].items()} == {"train": 5, "val": 2, "test": 2}
    references = {json.loads(line)["image"]: json.loads(line)["captions"]
                  for line in (tmp_path / "src" / "captions" / "captions.jsonl").read_text().splitlines()}  # fmt: skip
    for sample in iter_shard(str(out / "train-00000.tar")):
        meta = json.loads(sample["json"])
        assert sample_captions(sample) == references[meta["id"]]
    out = write(tmp_path / "cls", str(tmp_path / "src" / "classify"))  # a class tree: classification shards
    index = json.loads((out / "index.json").read_text())
    assert index["task"] == "classification" and len(index["class_names"]) == 10
    labels = [int(s["cls"]) for s in iter_shard(str(out / "train-00000.tar"))]
    assert len(labels) == 6 and all(0 <= x < 10 for x in labels)


def test_patterns_globs_and_counts(caption_shards: Path, tmp_path: Path) -> None:
    braces = expand_shards(f"{caption_shards}/train-{{00000..00003}}.tar")
    assert [Path(u).name for u in braces] == [f"train-0000{i}.tar" for i in range(4)]
    assert expand_shards(f"{caption_shards}/train-*.tar") == expand_shards(
        f"{caption_shards}/train-{{00000..00007}}.tar"
    )
    assert shard_set(f"{caption_shards}/train-*.tar").num_samples == 96  # counts from index.json
    copy = tmp_path / "copy.tar"  # no index beside it: counted from the tar headers
    copy.write_bytes((caption_shards / "train-00000.tar").read_bytes())
    assert shard_set(str(copy)).shards == [Shard(str(copy), 12)]
    (tmp_path / "copy_stats.json").write_text('{"successes": 11}')  # img2dataset's statistics win over a scan
    assert shard_set(str(copy)).num_samples == 11
    with pytest.raises(DataError, match="no shard matches"):
        expand_shards(f"{tmp_path}/nothing-*.tar")


# ---------------------------------------------------------------------------------- sharding, balance, shuffle
def _stream(shards: Path, world_size: int, workers: int, rank: int, seed: int = 0, **kw) -> TrainStream:
    plan = StreamPlan(tuple(shard_set(f"{shards}/train-*.tar").shards), 4, workers, world_size, seed=seed, **kw)
    decode = CaptionDecode(
        build_eval_transform(make_preprocessing(32, (0.5,) * 3, (0.5,) * 3, "bilinear", 1.0, 3)), True
    )
    return TrainStream(plan, rank, decode, lambda samples: {"ids": [s["id"] for s in samples]})


def _slot_batches(stream: TrainStream, epoch: int, worker: int) -> list[list[str]]:
    stream.epoch, stream.offset = epoch, worker  # without a worker process, `offset` picks the slot it plays
    return [b["ids"] for b in stream]


def test_every_rank_and_worker_reads_its_own_shards_and_ranks_get_equal_batches(caption_shards: Path) -> None:
    # 96 samples, 2 ranks x 2 workers, batch 4: every rank yields 96 // 8 = 12 batches, 6 per worker.
    keys_by_shard = {
        e["name"]: set(e["keys"]) for e in json.loads((caption_shards / "index.json").read_text())["splits"]["train"]
    }
    shards_of_slot = []
    for rank in (0, 1):
        stream = _stream(caption_shards, 2, 2, rank)
        assert len(stream) == 12
        for worker in (0, 1):
            batches = _slot_batches(stream, 3, worker)
            assert len(batches) == 6 and all(len(b) == 4 for b in batches)
            keys = {k for b in batches for k in b}
            shards_of_slot.append({n for n, ks in keys_by_shard.items() if keys & ks})
    assert all(len(s) == 2 for s in shards_of_slot)  # 8 shards over 4 readers
    assert len(set().union(*shards_of_slot)) == 8  # disjoint: no shard read by two readers


def test_too_few_shards_is_a_clear_error_unless_resampling(caption_shards: Path) -> None:
    with pytest.raises(ConfigError, match="8 training shards for 3 processes x 3 loader workers"):
        _stream(caption_shards, 3, 3, 0)
    stream = _stream(caption_shards, 3, 3, 0, resample=True)
    assert len(_slot_batches(stream, 0, 1)) == len(range(1, len(stream), 3))


def test_shuffle_is_seeded_per_epoch_and_reproducible(caption_shards: Path) -> None:
    def order(seed: int, epoch: int) -> list[str]:
        return [k for b in _slot_batches(_stream(caption_shards, 1, 1, 0, seed=seed, shuffle_buffer=8), epoch, 0)
                for k in b]  # fmt: skip

    assert order(0, 0) == order(0, 0)
    assert order(0, 0) != order(0, 1) and order(0, 0) != order(1, 0)
    assert sorted(order(0, 0)) == sorted(order(0, 1))  # the same samples, another order


# ------------------------------------------------------------------------------------------------- exact resume
@pytest.mark.parametrize("workers", [0, 2])
def test_loader_resumes_exactly_mid_epoch(caption_shards: Path, workers: int) -> None:
    dm = CaptionDataModule(str(caption_shards), img_size=32, batch_size=8, num_workers=workers)
    dm.setup()

    def fingerprint(batch: dict) -> tuple:
        return batch["ids"], float(batch["images"].sum()), batch["tokens"].tolist()

    loader = dm.train_dataloader()
    loader.set_epoch(1)
    full = [fingerprint(b) for b in loader]
    assert len(full) == len(loader) == 96 // 8
    for stop in (3, 4):  # both worker slots as the first one after the resume
        loader = dm.train_dataloader()
        loader.set_epoch(1)
        it = iter(loader)
        assert [fingerprint(next(it)) for _ in range(stop)] == full[:stop]
        state = loader.state_dict()
        del it
        resumed = dm.train_dataloader()
        resumed.load_state_dict(state)
        resumed.set_epoch(1)
        assert [fingerprint(b) for b in resumed] == full[stop:]  # same images, augmentation and captions


def test_resume_with_other_settings_restarts_the_epoch(caption_shards: Path) -> None:
    dm = CaptionDataModule(str(caption_shards), img_size=32, batch_size=8)
    loader = dm.train_dataloader()
    it = iter(loader)
    next(it)
    state = loader.state_dict()
    other = CaptionDataModule(str(caption_shards), img_size=32, batch_size=4).train_dataloader()
    with pytest.warns(UserWarning, match="restarts from its first batch"):
        other.load_state_dict(state)
    assert len(list(other)) == 96 // 4


# --------------------------------------------------------------------------------------------------- bad data
def test_bad_samples_and_a_truncated_shard_are_skipped_without_mispairing(tmp_path: Path) -> None:
    good = tmp_path / "good.tar"
    with tarfile.open(good, "w") as tar:
        for i in range(6):
            key = f"k{i}"
            if i == 1:
                _add(tar, f"{key}.jpg", b"not a jpeg at all")  # corrupt image
            else:
                _add(tar, f"{key}.png", _png((40 * i, 0, 0)))
            if i != 3:  # k3: image without caption
                _add(tar, f"{key}.txt", f"caption of {key}".encode())
    data = good.read_bytes()
    cut = tmp_path / "cut.tar"  # truncated inside the fifth sample's image
    cut.write_bytes(data[: data.index(b"k4.png") + 700])
    dm = CaptionDataModule(f"{good}::{cut}", img_size=32, batch_size=2, shards={"val": str(good), "shuffle_buffer": 1})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        batches = list(dm.train_dataloader())
    messages = [str(w.message) for w in caught if issubclass(w.category, ShardWarning)]
    assert any(f"{good}: k1: skipped: not a recognised image format" in m for m in messages), messages
    assert any(f"{good}: k3: skipped: no caption" in m for m in messages), messages
    assert any(f"{cut}: k3: skipped: the shard is truncated or corrupt after key k3" in m for m in messages), messages
    pairs = [(i, c) for b in batches for i, c in zip(b["ids"], dm.tokenizer.decode_batch(b["tokens"]))]
    assert pairs and all(c == f"caption of {i}" for i, c in pairs)  # never a caption of another key
    assert dm._shards.loader.skipped >= 4  # k1, k3 (in both shards), the truncated shard


def test_caption_vocabulary_is_built_in_one_streaming_pass(caption_shards: Path, monkeypatch) -> None:
    seen = []
    original = CaptionTokenizer.train.__func__

    def spy(cls, captions, **kw):  # noqa: ANN001
        seen.append(type(captions).__name__)
        return original(cls, captions, **kw)

    monkeypatch.setattr(CaptionTokenizer, "train", classmethod(spy))
    dm = CaptionDataModule(str(caption_shards), img_size=32)
    captions = [c for s in (caption_shards / f"train-0000{i}.tar" for i in range(8)) for x in iter_shard(str(s))
                for c in sample_captions(x)]  # fmt: skip
    assert dm.tokenizer.to_json() == CaptionTokenizer.train(captions).to_json()
    assert seen[0] == "generator"  # streamed, never listed


def test_held_out_shard_when_there_are_no_validation_shards(caption_shards: Path) -> None:
    data = ShardData(f"{caption_shards}/train-*.tar")
    with pytest.warns(UserWarning, match="last training shard is held out"):
        splits = data.splits
    assert len(splits["train"]) == 7 and splits["val"] == splits["test"] == [data.splits["val"][0]]


# ----------------------------------------------------------------------------------------- training from shards
def test_captioning_trains_from_shards_and_logs_skipped_samples(caption_shards: Path, tmp_path: Path) -> None:
    from vitcap.cli.train import lightning_cli

    cli = lightning_cli(["fit", *caption_args(tmp_path, "--data.data", str(caption_shards), "--data.batch_size", "16",
                                              "--trainer.max_epochs", "1")])  # fmt: skip
    assert cli.trainer.global_step == 96 // 16
    assert float(cli.trainer.callback_metrics["data/skipped"]) == 0.0
    assert torch.isfinite(cli.trainer.callback_metrics["val/loss"])


def test_classification_trains_from_shards(tmp_path: Path) -> None:
    from vitcap.cli.train import lightning_cli

    shards = write(tmp_path / "cls", "--num", "64", "--per-shard", "16", "--task", "classify", "shapes")
    dm = ClassificationDataModule(str(shards), img_size=32)
    assert dm.num_classes == 10  # names from index.json
    cli = lightning_cli(["fit", *classify_args(tmp_path, "--data.data", str(shards), "--data.batch_size", "16",
                                               "--trainer.max_epochs", "1")])  # fmt: skip
    assert cli.trainer.global_step == 4 and torch.isfinite(cli.trainer.callback_metrics["val/loss"])


def test_scst_and_map_style_access_explain_that_shards_are_streamed(caption_shards: Path) -> None:
    dm = CaptionDataModule(str(caption_shards))
    with pytest.raises(ConfigError, match="streamed"):
        _ = dm.sources
