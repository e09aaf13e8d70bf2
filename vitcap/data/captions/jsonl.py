"""``"jsonl"``: one JSON object per line with ``image`` and ``caption`` (str) or ``captions`` (list), optionally
``split``."""

from __future__ import annotations

import json
from pathlib import Path

from vitcap.data.captions.entries import Entry, add_record
from vitcap.data.captions.problems import Problem
from vitcap.data.captions.text import read_text

__all__ = ["read_jsonl"]


def read_jsonl(path: Path, problems: list[Problem]) -> list[Entry]:
    """Entries of a JSON-lines caption file; blank lines are ignored, a bad line is a problem."""
    entries: list[Entry] = []
    for n, line in enumerate(read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path.name}:{n}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            problems.append(Problem(where, f"invalid JSON ({e.msg} at column {e.colno})"))
            continue
        if not isinstance(obj, dict):
            problems.append(Problem(where, "expected a JSON object with 'image' and 'caption' or 'captions'"))
            continue
        split = obj.get("split")
        add_record(
            entries,
            problems,
            where,
            obj.get("image"),
            obj.get("caption"),
            obj.get("captions"),
            split if split is None or isinstance(split, str) else str(split),
        )
    return entries
