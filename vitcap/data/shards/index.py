"""Which shards a pattern names, and how many samples each holds.

A shard source is a brace pattern or glob of WebDataset tar files (`shards/{00000..00127}.tar`,
`shards/*.tar`, several joined with `::`), a folder of them, or remote URLs (`pipe:...`, `http...`), expanded
with the `webdataset` library's rules. Sample counts (what makes every rank's epoch the same length) come from,
in order: the `index.json` that `vitcap data shards` writes beside the shards, img2dataset's
`NNNNN_stats.json` (`successes`), else a scan of the tar headers (local files only; no image is decoded).
"""

from __future__ import annotations

import glob
import json
import os
import re
import tarfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from vitcap.errors import ConfigError, DataError

__all__ = [
    "IMAGE_SUFFIXES",
    "INDEX_NAME",
    "Shard",
    "ShardSet",
    "expand_shards",
    "is_shard_spec",
    "read_index",
    "shard_set",
]

INDEX_NAME = "index.json"
IMAGE_SUFFIXES = ("jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff", "ppm")
_REMOTE = ("pipe:", "http://", "https://", "s3://", "gs://")


@dataclass(frozen=True)
class Shard:
    """One tar shard: where it is and how many samples (keys with an image) it holds."""

    url: str
    count: int


@dataclass
class ShardSet:
    """The shards of one split, in pattern order, with what the index knows about them.

    Attributes:
        shards: The shards.
        class_names: Class names from the index (classification shards), if it has them.
    """

    shards: list[Shard]
    class_names: list[str] | None = None
    source: str = ""
    splits: dict[str, list[Shard]] = field(default_factory=dict)

    @property
    def urls(self) -> list[str]:
        return [s.url for s in self.shards]

    @property
    def num_samples(self) -> int:
        return sum(s.count for s in self.shards)

    def __len__(self) -> int:
        return len(self.shards)


def _is_remote(url: str) -> bool:
    return url.startswith(_REMOTE)


def is_shard_spec(data: str) -> bool:
    """Whether a data-module `data` value names tar shards (a `.tar` pattern, URL, or a folder with an index)."""
    path = Path(data)
    if path.is_file():
        return path.suffix == ".tar"
    if re.search(r"\.tar($|[^\w.])", data):  # `x.tar`, `{000..009}.tar`, `a.tar::b.tar`; not `x.tar.gz` or `star.tarot`
        return True
    return path.is_dir() and (path / INDEX_NAME).is_file() and _index_marker(path / INDEX_NAME)


def _index_marker(path: Path) -> bool:
    try:
        return "vitcap_shards" in json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False


def expand_shards(spec: str) -> list[str]:
    """Shard URLs of a pattern: brace expansion (`{000..127}`), globs, `::`-joined lists, folders of `*.tar`.

    Raises:
        DataError: A local pattern matches no file.
    """
    from webdataset.shardlists import expand_urls

    urls: list[str] = []
    for item in expand_urls(spec):
        if _is_remote(item):
            urls.append(item)
        elif Path(item).is_dir():
            found = sorted(str(p) for p in Path(item).glob("*.tar"))
            if not found:
                raise DataError(f"{item}: a folder without .tar shards", path=item)
            urls.extend(found)
        elif glob.has_magic(item):
            found = sorted(glob.glob(item))
            if not found:
                raise DataError(f"{item}: no shard matches this pattern", path=item)
            urls.extend(found)
        elif not Path(item).is_file():
            raise DataError(f"{item}: no such shard", path=item)
        else:
            urls.append(item)
    if not urls:
        raise DataError(f"{spec}: names no shards", path=spec)
    return urls


def read_index(folder: str | os.PathLike) -> dict | None:
    """The `index.json` of a folder written by `vitcap data shards` (None when absent)."""
    path = Path(folder) / INDEX_NAME
    if not path.is_file() or not _index_marker(path):
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def _count_by_scan(url: str) -> int:
    """Keys with an image member, from the tar headers alone (tarfile seeks past the data)."""
    keys: set[str] = set()
    try:
        with tarfile.open(url, mode="r:") as tar:
            for member in tar:
                name = os.path.basename(member.name)
                stem, _, suffix = name.partition(".")
                if member.isreg() and suffix.lower() in IMAGE_SUFFIXES:
                    keys.add(os.path.join(os.path.dirname(member.name), stem))
    except (tarfile.TarError, OSError) as e:
        warnings.warn(f"{url}: counted {len(keys)} samples before the shard became unreadable ({e})", stacklevel=3)
    return len(keys)


def _count(url: str, index_counts: dict[str, int]) -> int:
    name = os.path.basename(url)
    if name in index_counts:
        return index_counts[name]
    if _is_remote(url):
        raise ConfigError(
            f"{url}: a remote shard without an {INDEX_NAME} giving its sample count; write one with "
            "`vitcap data shards`, or copy the shards to a local disk"
        )
    stats = Path(url).with_name(Path(url).name.removesuffix(".tar") + "_stats.json")  # img2dataset
    if stats.is_file():
        try:
            return int(json.loads(stats.read_text(encoding="utf-8"))["successes"])
        except (ValueError, KeyError, OSError):
            pass
    return _count_by_scan(url)


def shard_set(spec: str) -> ShardSet:
    """Expand a pattern and count each shard's samples (see the module docstring).

    A folder with an `index.json` means every split it lists; `splits` then holds them per split and `shards`
    is the training split.
    """
    folder = Path(spec)
    index = read_index(folder) if folder.is_dir() else None
    if index is not None:
        splits = {
            split: [Shard(str(folder / s["name"]), int(s["count"])) for s in entries]
            for split, entries in index.get("splits", {}).items()
        }
        if not splits.get("train"):
            raise DataError(f"{folder / INDEX_NAME}: no training shards", path=folder / INDEX_NAME)
        return ShardSet(splits["train"], index.get("class_names"), spec, splits)
    urls = expand_shards(spec)
    counts: dict[str, int] = {}
    class_names = None
    for parent in dict.fromkeys(os.path.dirname(u) for u in urls if not _is_remote(u)):
        found = read_index(parent or ".")
        if found is not None:
            class_names = class_names or found.get("class_names")
            for entries in found.get("splits", {}).values():
                counts.update({e["name"]: int(e["count"]) for e in entries})
    return ShardSet([Shard(u, _count(u, counts)) for u in urls], class_names, spec)
