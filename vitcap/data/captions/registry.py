"""The caption formats: which reader reads each, how a format is detected, and which file a data folder means.

A file format's reader is ``read(path, problems) -> entries``; a folder format's is ``read(folder, root,
problems) -> entries`` (it needs the image root to write paths relative to it). Readers append the problems of
individual entries to ``problems`` and raise ``CaptionFormatError`` only when the whole file cannot be read.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable
from pathlib import Path

from vitcap.data.captions.coco import read_coco
from vitcap.data.captions.csv_file import read_csv
from vitcap.data.captions.entries import Entry
from vitcap.data.captions.flickr_token import TOKEN_LINE, read_flickr_token
from vitcap.data.captions.folder import read_folder
from vitcap.data.captions.jsonl import read_jsonl
from vitcap.data.captions.karpathy import read_karpathy
from vitcap.data.captions.problems import Problem
from vitcap.data.captions.text import parse_json, read_text
from vitcap.errors import CaptionFormatError

__all__ = ["FILE_READERS", "FOLDER_READERS", "FORMATS", "caption_file_in", "detect_format"]

FileReader = Callable[[Path, list[Problem]], list[Entry]]
FolderReader = Callable[[Path, Path, list[Problem]], list[Entry]]

FILE_READERS: dict[str, FileReader] = {
    "coco": read_coco,
    "karpathy": read_karpathy,
    "csv": read_csv,
    "flickr_token": read_flickr_token,
    "jsonl": read_jsonl,
}
FOLDER_READERS: dict[str, FolderReader] = {"folder": read_folder}
FORMATS = (*FILE_READERS, *FOLDER_READERS)

_KNOWN_NAMES = ("captions.jsonl", "captions.json", "captions.csv", "captions.txt", "Flickr8k.token.txt")
_KNOWN_PATTERNS = ("dataset_*.json", "captions_*.json", "*.token.txt", "*.token")


def caption_file_in(folder: Path) -> Path | None:
    """The one caption file of a data directory (e.g. ``captions.txt`` beside ``images/``), if unambiguous.

    Raises:
        CaptionFormatError: The folder holds several caption files.
    """
    found = [folder / n for n in _KNOWN_NAMES if (folder / n).is_file()]
    found += sorted(p for pattern in _KNOWN_PATTERNS for p in folder.glob(pattern) if p not in found)
    found = list(dict.fromkeys(found))
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise CaptionFormatError(f"{folder}: several caption files ({names}); pass one of them as the path")
    return found[0] if found else None


def detect_format(path: str | os.PathLike) -> str:
    """Guess the format of a caption file or folder from its content.

    Raises:
        CaptionFormatError: No format matches; the message says what was expected.
    """
    path = Path(path)
    if path.is_dir():
        return "folder"
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return "jsonl"
    text = read_text(path)
    if suffix == ".json" or text.lstrip().startswith(("{", "[")):
        data = parse_json(path, text)
        if isinstance(data, dict) and "annotations" in data and "images" in data:
            return "coco"
        images = data.get("images") if isinstance(data, dict) else None
        if isinstance(images, list) and (not images or (isinstance(images[0], dict) and "sentences" in images[0])):
            return "karpathy"
        raise CaptionFormatError(
            f"{path}: JSON is neither COCO captions (keys 'images' and 'annotations') nor Karpathy splits "
            "('images' entries with 'sentences'); for one object per line use a .jsonl file"
        )
    first = next((line for line in text.splitlines() if line.strip()), "")
    if TOKEN_LINE.match(first):
        return "flickr_token"
    header = [h.strip().lower() for h in next(csv.reader([first]), [])]
    if "image" in header and ("caption" in header or "captions" in header):
        return "csv"
    raise CaptionFormatError(
        f"{path}:1: cannot detect the caption format; expected a CSV header with 'image' and 'caption'/'captions', "
        "'NAME#i<TAB>caption' lines, JSON (COCO/Karpathy) or JSONL; pass format= explicitly"
    )
