import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from vitcap.data.captions import ManifestError
from vitcap.data.classification import (
    FASHION_MNIST_CLASSES,
    find_idx_pair,
    read_idx,
    scan_image_folder,
    split_indices,
)
from vitcap.data.datamodules import ClassificationDataModule
from vitcap.data.shapes import CLASS_NAMES, COLOR_CLASS_NAMES, make_scene, render_scene, scene_label, write_shapes
from vitcap.errors import ConfigError

SHARED_DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
FASHION = SHARED_DATA / "fashion-mnist"


def _write_idx(path: Path, array: np.ndarray, gz: bool = True) -> None:
    code = {np.uint8: 0x08, np.int32: 0x0C}[array.dtype.type]
    data = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data += array.astype(array.dtype.newbyteorder(">")).tobytes()
    path.write_bytes(gzip.compress(data) if gz else data)


def _fake_mnist(root: Path, prefix: str, n: int, seed: int, gz: bool = True):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    root.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    _write_idx(root / f"{prefix}-images-idx3-ubyte{suffix}", images, gz)
    _write_idx(root / f"{prefix}-labels-idx1-ubyte{suffix}", labels, gz)
    return images, labels


def test_read_idx_round_trip_and_errors(tmp_path):
    images, labels = _fake_mnist(tmp_path, "train", 7, 0)
    assert np.array_equal(read_idx(tmp_path / "train-images-idx3-ubyte.gz"), images)
    assert np.array_equal(read_idx(tmp_path / "train-labels-idx1-ubyte.gz"), labels)
    ints = np.arange(6, dtype=np.int32).reshape(2, 3) - 3
    _write_idx(tmp_path / "ints", ints, gz=False)
    assert np.array_equal(read_idx(tmp_path / "ints"), ints)
    raw = gzip.decompress((tmp_path / "train-images-idx3-ubyte.gz").read_bytes())
    (tmp_path / "short").write_bytes(raw[:-10])
    with pytest.raises(ValueError, match=r"short: IDX shape \(7, 28, 28\) needs"):
        read_idx(tmp_path / "short")
    (tmp_path / "text").write_text("hello")
    with pytest.raises(ValueError, match="text: not an IDX file"):
        read_idx(tmp_path / "text")
    (tmp_path / "broken.gz").write_bytes((tmp_path / "train-images-idx3-ubyte.gz").read_bytes()[:50])
    with pytest.raises(ValueError, match="broken.gz: corrupt or truncated gzip"):
        read_idx(tmp_path / "broken.gz")


def test_find_idx_pair_in_torchvision_layout(tmp_path):
    _fake_mnist(tmp_path / "FashionMNIST" / "raw", "t10k", 3, 0, gz=False)
    pair = find_idx_pair(tmp_path, "t10k")
    assert pair is not None and pair[0].name == "t10k-images-idx3-ubyte"
    assert find_idx_pair(tmp_path, "train") is None


def test_split_indices_deterministic_disjoint():
    tr, va = split_indices(100, 0.2, seed=3)
    assert len(va) == 20 and len(tr) == 80 and not set(tr) & set(va)
    assert np.array_equal(split_indices(100, 0.2, seed=3)[1], va)
    assert not np.array_equal(split_indices(100, 0.2, seed=4)[1], va)


def test_idx_datamodule_with_separate_test_root(tmp_path):
    images, labels = _fake_mnist(tmp_path / "train", "train", 50, 0)
    test_images, test_labels = _fake_mnist(tmp_path / "test", "t10k", 12, 1)
    dm = ClassificationDataModule("idx", root=str(tmp_path / "train"), test_root=str(tmp_path / "test"), batch_size=8)
    assert dm.num_classes == int(labels.max()) + 1 and dm.img_size == 28 and dm.in_chans == 3
    dm.setup()
    assert (len(dm.dataset("train")), len(dm.dataset("val")), len(dm.dataset("test"))) == (45, 5, 12)
    batch = next(iter(dm.test_dataloader()))
    assert batch["images"].shape == (8, 3, 28, 28) and batch["labels"].dtype == torch.long
    assert batch["labels"].tolist() == test_labels[:8].tolist() and batch["ids"][0] == "test_00000"
    # the evaluation images are the stored pixels, normalised with mean 0.5 / std 0.5
    expected = torch.from_numpy(test_images[0]).float() / 255 * 2 - 1
    assert torch.allclose(batch["images"][0, 0], expected, atol=1e-6)
    val = dm.dataset("val")
    train_ids = set(dm.dataset("train").ids)
    assert not train_ids & set(val.ids) and len(train_ids | set(val.ids)) == 50


def test_missing_idx_files_is_a_clear_error(tmp_path):
    dm = ClassificationDataModule("fashion_mnist", root=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte.*download=True"):
        dm.setup()


def test_image_folder_tree_from_write_shapes(tmp_path):
    write_shapes(tmp_path, splits={"train": 12, "val": 3, "test": 3}, img_size=32, tasks=("classify",))
    dm = ClassificationDataModule(str(tmp_path / "classify"), img_size=32, batch_size=4, augment=False)
    assert dm.class_names == list(CLASS_NAMES) and dm.num_classes == 10
    dm.setup()
    assert [len(dm.dataset(s)) for s in ("train", "val", "test")] == [12, 3, 3]
    batch = next(iter(dm.val_dataloader()))
    mem = ClassificationDataModule("shapes", img_size=32, num_val=3, batch_size=4, augment=False)
    mem_batch = next(iter(mem.val_dataloader()))
    # files and in-memory shapes give the same labels and pixels for the same ids
    order = [mem_batch["ids"].index(Path(i).stem) for i in batch["ids"]]
    assert batch["labels"].tolist() == mem_batch["labels"][order].tolist()
    assert torch.allclose(batch["images"], mem_batch["images"][order], atol=1e-5)


@pytest.mark.filterwarnings("ignore:.*no test split")
def test_image_folder_problems(tmp_path):
    write_shapes(tmp_path, splits={"train": 6}, img_size=32, tasks=("classify",))
    root = tmp_path / "classify"
    one_class = next((root / "train").iterdir())
    (one_class / "empty.png").write_bytes(b"")
    (root / "val" / "unknown_class").mkdir(parents=True)
    (root / "val" / "unknown_class" / "x.png").write_bytes(b"x")
    with pytest.raises(ManifestError) as info:
        ClassificationDataModule(str(root), img_size=32).setup()
    msg = str(info.value)
    assert "empty.png" in msg and "unknown_class" in msg and len(info.value.problems) == 2
    with pytest.warns(UserWarning, match="2 bad manifest entries"):
        dm = ClassificationDataModule(str(root), img_size=32, skip_bad=True)
        dm.setup()
    assert len(dm.dataset("train")) == 6
    splits, names, _ = scan_image_folder(root)
    assert names == sorted(names)


def test_shapes_scenes_with_colour_labels():
    dm = ClassificationDataModule(
        "shapes", img_size=32, max_objects=2, label_scheme="size_color_shape", num_train=24, num_val=4, batch_size=24
    )
    assert dm.num_classes == 60 and dm.class_names == list(COLOR_CLASS_NAMES)
    assert dm.hflip is False  # the label names the left object: a mirrored scene would name the other one
    batch = next(iter(dm.train_dataloader()))
    scenes = {i: make_scene(0, int(i.split("_")[1]), "train", 32, 1, 2) for i in batch["ids"]}
    assert batch["labels"].tolist() == [scene_label(scenes[i], "size_color_shape") for i in batch["ids"]]
    assert any(len(s.objects) == 2 for s in scenes.values())
    with pytest.raises(ConfigError, match="data.hflip must be false"):
        ClassificationDataModule("shapes", max_objects=2, hflip=True)
    with pytest.raises(ConfigError, match="data.max_objects must be 1-4"):
        ClassificationDataModule("shapes", max_objects=5)
    with pytest.raises(ConfigError, match="data.label_scheme must be one of"):
        ClassificationDataModule("shapes", label_scheme="colour")
    with pytest.raises(ConfigError, match="data.max_objects applies to the built-in shapes only"):
        ClassificationDataModule("mnist", root="/nonexistent", max_objects=2)


def test_shapes_classification_labels_match_scenes():
    dm = ClassificationDataModule("shapes", num_train=16, batch_size=16, augment=False)
    batch = next(iter(dm.train_dataloader()))
    for image_id, label in zip(batch["ids"], batch["labels"].tolist(), strict=True):
        assert make_scene(0, int(image_id.split("_")[1]), "train", 64, 1, 1).label == label
    assert batch["images"].shape == (16, 3, 64, 64)
    assert render_scene(make_scene(0, 0, "train", 64, 1, 1)).shape == (64, 64, 3)


@pytest.mark.skipif(not FASHION.is_dir(), reason="shared fashion-mnist data not present")
def test_fashion_mnist_in_memory():
    with pytest.warns(UserWarning, match="test loaders use the val split"):
        dm = ClassificationDataModule("fashion_mnist", root=str(FASHION), batch_size=32, in_chans=1)
        dm.setup()
    assert dm.class_names == list(FASHION_MNIST_CLASSES) and dm.class_names[9] == "Ankle boot"
    train = dm.dataset("train")
    assert train.images.dtype == torch.uint8 and train.images.shape == (54000, 1, 28, 28)
    assert len(dm.dataset("val")) == 6000
    batch = next(iter(dm.train_dataloader()))
    assert batch["images"].shape == (32, 1, 28, 28) and batch["labels"].max() < 10
    assert dm.preprocessing["mean"] == [0.286]
