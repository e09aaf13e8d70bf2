"""Split names (``train``/``val``/``test`` and their aliases), hash splits and the ``splits.csv`` file."""

from __future__ import annotations

import csv
import hashlib
import io
from pathlib import Path

from vitcap.data.captions.problems import Problem
from vitcap.data.captions.text import read_text
from vitcap.errors import CaptionFormatError

__all__ = ["SPLITS", "hash_split", "normalize_split", "read_splits_file"]

SPLITS = ("train", "val", "test")
_SPLIT_ALIASES = {
    "train": "train",
    "restval": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "dev": "val",
    "test": "test",
}


def normalize_split(name: str) -> str | None:
    """Canonical split name (``train``/``val``/``test``) or None when ``name`` is not a known split."""
    return _SPLIT_ALIASES.get(name.strip().lower())


def hash_split(image_id: str, val_fraction: float, test_fraction: float) -> str:
    """Deterministic split of one image from a SHA-1 of its id: the same on every machine and run.

    Args:
        image_id: Stable image name (path relative to the image root).
        val_fraction: Expected fraction assigned to ``val``.
        test_fraction: Expected fraction assigned to ``test``.
    """
    u = int.from_bytes(hashlib.sha1(image_id.encode("utf-8")).digest()[:8], "big") / 2.0**64
    if u < test_fraction:
        return "test"
    if u < test_fraction + val_fraction:
        return "val"
    return "train"


def read_splits_file(path: Path, problems: list[Problem]) -> dict[str, tuple[str, str]]:
    """``splits.csv`` rows (header ``image,split``) as image entry -> (split, where); bad rows go to ``problems``.

    Raises:
        CaptionFormatError: The header lacks ``image`` or ``split``.
    """
    reader = csv.reader(io.StringIO(read_text(path), newline=""))
    header = [h.strip().lower() for h in next(reader, [])]
    if "image" not in header or "split" not in header:
        raise CaptionFormatError(f"{path}:1: splits file needs a header with 'image' and 'split', got {header}")
    i_img, i_split = header.index("image"), header.index("split")
    out: dict[str, tuple[str, str]] = {}
    for row in reader:
        where = f"{path.name}:{reader.line_num}"
        if not any(c.strip() for c in row):
            continue
        if len(row) != len(header):
            problems.append(Problem(where, f"expected {len(header)} fields {header}, got {len(row)}"))
            continue
        split = normalize_split(row[i_split])
        if split is None:
            problems.append(Problem(where, f"unknown split {row[i_split]!r} (expected train/val/test)", row[i_img]))
            continue
        out[row[i_img].strip()] = (split, where)
    return out
