"""Writing tar shards (`vitcap data shards`) from any data vitcap reads, with an `index.json` of keys and counts.

Layout (img2dataset's): `OUT/{split}-{00000..}.tar`, each sample `KEY.{jpg,png,...}` (the image file's bytes,
unchanged) with `KEY.txt` (first caption) and `KEY.json` (`{"key", "captions", "id"}`) for captioning, or
`KEY.cls` (class index) for classification; `OUT/index.json` lists per split each shard's name, count and keys,
and the class names. Shards are written with a fixed mtime, so the same input gives the same bytes.
"""

from __future__ import annotations

import io
import json
import os
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from vitcap.data.images import image_file_bytes
from vitcap.data.shards.index import INDEX_NAME
from vitcap.errors import ConfigError, DataError

__all__ = ["Record", "caption_records", "folder_records", "shapes_records", "tensor_records", "write_shards"]


@dataclass
class Record:
    """One sample to write: key, image bytes and suffix, captions or a label, split, and the source id."""

    key: str
    image: bytes
    suffix: str
    split: str
    captions: list[str] = field(default_factory=list)
    label: int | None = None
    id: str = ""


def _image(path: Path, skip_bad: bool) -> bytes | None:
    """The file's bytes once it decodes; with `skip_bad` a bad file is skipped with a warning instead of raising."""
    try:
        return image_file_bytes(path)
    except DataError as e:
        if not skip_bad:
            raise
        warnings.warn(f"skipped: {e}", stacklevel=3)
        return None


def _png(array) -> bytes:  # noqa: ANN001 - uint8 (H, W) or (H, W, C)
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def caption_records(source: str, format: str = "auto", images_dir: str | None = None, val_fraction: float = 0.1,
                    test_fraction: float = 0.1, skip_bad: bool = False) -> Iterator[Record]:  # fmt: skip
    """Captioned images of any caption format `read_captions` reads, in split then file order."""
    from vitcap.data.captions import read_captions

    cs = read_captions(source, format, images_dir, skip_bad=skip_bad)
    n = 0
    for split, paths in cs.split_images(val_fraction, test_fraction).items():
        for path in paths:
            image = _image(path, skip_bad)
            if image is not None:
                suffix = path.suffix.lower().lstrip(".") or "jpg"
                yield Record(f"{n:09d}", image, suffix, split, list(cs[path]), id=cs.image_id(path))
                n += 1


def folder_records(
    root: str, val_fraction: float = 0.1, seed: int = 0, skip_bad: bool = False
) -> tuple[Iterator[Record], list[str]]:
    """Images of an image-folder tree (`root/<class>/<image>`, optionally under train/val/test) and class names."""
    from vitcap.data.classification import scan_image_folder

    splits, names, problems = scan_image_folder(root, val_fraction, seed)
    if problems and not skip_bad:
        raise DataError(f"{root}: {len(problems)} bad entries, e.g. {problems[0].where}: {problems[0].reason}")

    def records() -> Iterator[Record]:
        n = 0
        for split, items in splits.items():
            for path, label, rel in items:
                image = _image(path, skip_bad)
                if image is not None:
                    yield Record(f"{n:09d}", image, path.suffix.lower().lstrip("."), split, label=label, id=rel)
                    n += 1

    return records(), names


def shapes_records(task: str, splits: dict[str, int], seed: int = 0, img_size: int = 64,
                   max_objects: int = 2) -> Iterator[Record]:  # fmt: skip
    """The built-in shapes (`vitcap.data.shapes`), rendered to PNG: captioning scenes or one-object classes."""
    from vitcap.data.shapes import make_scene, render_scene

    n = 0
    for split, count in splits.items():
        for i in range(count):
            scene = make_scene(seed, i, split, img_size, 1, max_objects if task == "caption" else 1)
            image = _png(render_scene(scene))
            sid = f"{split}_{i:06d}"
            if task == "caption":
                yield Record(f"{n:09d}", image, "png", split, list(scene.captions), id=sid)
            else:
                yield Record(f"{n:09d}", image, "png", split, label=scene.label, id=sid)
            n += 1


def tensor_records(name: str, root: str) -> tuple[Iterator[Record], list[str]]:
    """MNIST / Fashion-MNIST (IDX files) or CIFAR-10 (torchvision's files) under `root`, as PNG; train and test."""
    from vitcap.data import classification as c

    loaders = {
        "mnist": (lambda train: c.load_mnist_like("mnist", root, train), c.MNIST_CLASSES),
        "fashion_mnist": (lambda train: c.load_mnist_like("fashion_mnist", root, train), c.FASHION_MNIST_CLASSES),
        "cifar10": (lambda train: c.load_cifar10(root, train), c.CIFAR10_CLASSES),
    }
    if name not in loaders:
        raise ConfigError(f"expected one of {sorted(loaders)}, got {name!r}", key="SOURCE")
    load, names = loaders[name]

    def records() -> Iterator[Record]:
        n = 0
        for split, train in (("train", True), ("test", False)):
            data = load(train)
            if data is None:
                if train:
                    raise DataError(f"{root}: no {name} training files", path=root)
                continue
            images, labels = data
            for i in range(len(labels)):
                array = images[i].numpy()
                array = array.transpose(1, 2, 0) if array.ndim == 3 else array  # (C, H, W) -> (H, W, C)
                yield Record(f"{n:09d}", _png(array), "png", split, label=int(labels[i]), id=f"{split}_{i:05d}")
                n += 1

    return records(), list(names)


def _member_bytes(record: Record) -> dict[str, bytes | str]:
    sample: dict[str, bytes | str] = {"__key__": record.key, record.suffix: record.image}
    if record.captions:
        sample["txt"] = record.captions[0].encode("utf-8")
        meta = {"key": record.key, "captions": record.captions, "id": record.id}
        sample["json"] = json.dumps(meta, ensure_ascii=False).encode("utf-8")
    if record.label is not None:
        sample["cls"] = str(record.label).encode("utf-8")
    return sample


def write_shards(
    records: Iterable[Record], out_dir: str | os.PathLike, per_shard: int = 1000, class_names: list[str] | None = None
) -> dict:
    """Write records as tar shards per split (`{split}-{i:05d}.tar`) and `index.json`; returns the index.

    Raises:
        ConfigError: `per_shard` < 1.
        DataError: No record.
    """
    from webdataset import TarWriter

    if per_shard < 1:
        raise ConfigError(f"expected >= 1, got {per_shard}", key="--per-shard")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    splits: dict[str, list[dict]] = {}
    writers: dict[str, TarWriter] = {}
    try:
        for record in records:
            entries = splits.setdefault(record.split, [])
            if not entries or entries[-1]["count"] >= per_shard:
                if record.split in writers:
                    writers.pop(record.split).close()
                name = f"{record.split}-{len(entries):05d}.tar"
                entries.append({"name": name, "count": 0, "keys": []})
                writers[record.split] = TarWriter(str(out / name), mtime=0)  # an int: no PAX header per member
            writers[record.split].write(_member_bytes(record))
            entries[-1]["count"] += 1
            entries[-1]["keys"].append(record.key)
    finally:
        for writer in writers.values():
            writer.close()
    if not splits:
        raise DataError(f"no samples to write to {out}", path=out)
    task = "classification" if class_names is not None else "captioning"
    index = {"vitcap_shards": 1, "task": task, "splits": splits, "class_names": class_names}
    (out / INDEX_NAME).write_text(json.dumps(index, separators=(",", ":")) + "\n", encoding="utf-8")
    return index
