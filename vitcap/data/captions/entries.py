"""Manifest entries: one caption of one image as a reader found it, before validation."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from vitcap.data.captions.problems import Problem
from vitcap.data.captions.splits import normalize_split

__all__ = ["Entry", "add_record", "clean_caption"]


@dataclass
class Entry:
    """One caption of one image, as written in the manifest.

    Attributes:
        image: The image path as written, relative to the image root.
        caption: The cleaned caption; None for an image listed without one (reported as a problem).
        where: Location in the manifest, for messages (``"file:line"``).
        split: Canonical split when the manifest gives one.
    """

    image: str
    caption: str | None
    where: str
    split: str | None = None


def clean_caption(text: Any) -> str:
    """A caption stripped, with runs of whitespace collapsed to one space; no other change."""
    return " ".join(str(text).split())


def add_record(
    entries: list[Entry],
    problems: list[Problem],
    where: str,
    image: Any,
    caption: Any,
    captions: Any,
    split: str | None,
    captions_is_json_text: bool = False,
) -> None:
    """One CSV row or JSONL object with ``caption`` (str) or ``captions`` (list, JSON text in CSV)."""
    if not isinstance(image, str) or not image.strip():
        problems.append(Problem(where, "missing 'image'"))
        return
    image = image.strip()
    norm_split = None
    if split is not None and split.strip():
        norm_split = normalize_split(split)
        if norm_split is None:
            problems.append(Problem(where, f"unknown split {split!r} (expected train/val/test)", image))
            return
    if captions_is_json_text and isinstance(captions, str) and captions.strip():
        try:
            captions = json.loads(captions)
        except json.JSONDecodeError:
            problems.append(Problem(where, "'captions' must be a JSON list of strings", image))
            return
    elif captions_is_json_text and isinstance(captions, str):
        captions = None
    if captions is not None:
        if not isinstance(captions, list) or not all(isinstance(c, str) for c in captions):
            problems.append(Problem(where, "'captions' must be a list of strings", image))
            return
        if not captions:
            entries.append(Entry(image, None, where, norm_split))
        entries.extend(Entry(image, clean_caption(c), where, norm_split) for c in captions)
        return
    if not isinstance(caption, str):
        problems.append(Problem(where, "missing 'caption' (a string) or 'captions' (a list)", image))
        return
    entries.append(Entry(image, clean_caption(caption), where, norm_split))
