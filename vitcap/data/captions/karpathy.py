"""``"karpathy"``: Karpathy split JSON (``dataset_coco.json`` style).

``{"images": [{"filename", "filepath"?, "split", "sentences": [{"raw"}]}]}``; ``restval`` counts as ``train``.
"""

from __future__ import annotations

from pathlib import Path

from vitcap.data.captions.entries import Entry, clean_caption
from vitcap.data.captions.problems import Problem
from vitcap.data.captions.splits import normalize_split
from vitcap.data.captions.text import parse_json, read_text
from vitcap.errors import CaptionFormatError

__all__ = ["read_karpathy"]


def read_karpathy(path: Path, problems: list[Problem]) -> list[Entry]:
    """Entries of a Karpathy split file, each with its split.

    Raises:
        CaptionFormatError: Not JSON, or no list ``images``.
    """
    data = parse_json(path, read_text(path))
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise CaptionFormatError(f"{path}: Karpathy split JSON needs a list 'images'")
    entries: list[Entry] = []
    for i, img in enumerate(data["images"]):
        where = f"{path.name}: images[{i}]"
        if not isinstance(img, dict) or not isinstance(img.get("filename"), str):
            problems.append(Problem(where, "expected an object with 'filename', 'split' and 'sentences'"))
            continue
        name = img["filename"]
        if isinstance(img.get("filepath"), str) and img["filepath"]:
            name = f"{img['filepath']}/{name}"
        split = normalize_split(str(img.get("split", "")))
        if split is None:
            problems.append(Problem(where, f"unknown split {img.get('split')!r}", name))
            continue
        sentences = img.get("sentences")
        if not isinstance(sentences, list) or not sentences:
            entries.append(Entry(name, None, where, split))
            continue
        for j, s in enumerate(sentences):
            raw = s.get("raw") if isinstance(s, dict) else None
            if not isinstance(raw, str):
                problems.append(Problem(f"{where}.sentences[{j}]", "expected an object with a string 'raw'", name))
                continue
            entries.append(Entry(name, clean_caption(raw), f"{where}.sentences[{j}]", split))
    return entries
