"""Manifest validation: check every entry (image file, caption, split) and build the `CaptionSet`.

Every problem is collected, none raised here: `read_captions` reports them all at once.
"""

from __future__ import annotations

from pathlib import Path

from vitcap.data.captions.caption_set import CaptionSet
from vitcap.data.captions.entries import Entry
from vitcap.data.captions.problems import Problem
from vitcap.data.images import load_image
from vitcap.errors import ImageLoadError

__all__ = ["assemble", "check_image"]


def assemble(
    entries: list[Entry],
    root: Path,
    source: Path,
    fmt: str,
    external_splits: dict[str, tuple[str, str]] | None,
    splits_file: Path,
    check_files: bool,
    verify_images: bool,
) -> tuple[CaptionSet, list[Problem]]:
    """The usable entries as a `CaptionSet`, and the problems of the others.

    Args:
        entries: What the reader found, in file order.
        root: Resolved image root the entries' paths are relative to.
        source: The caption file or folder.
        fmt: The format it was read as.
        external_splits: ``splits.csv`` rows (image entry -> (split, where)) when the data has no own splits.
        splits_file: Where ``splits.csv`` is (for messages).
        check_files: Check that every image file exists and is non-empty.
        verify_images: Also decode every image once.
    """
    problems: list[Problem] = []
    captions: dict[Path, list[str]] = {}
    splits: dict[Path, str] = {}
    bad: set[Path] = set()
    checked: dict[Path, str | None] = {}  # path -> reason it is unusable, None when fine
    for e in entries:
        target = (root / e.image).resolve()
        if target not in checked:
            checked[target] = check_image(target, root, check_files, verify_images)
        reason = checked[target]
        if reason is not None:
            if target not in bad:  # report each bad image once, at its first mention
                problems.append(Problem(e.where, reason, e.image))
                bad.add(target)
            continue
        if e.caption is None:
            problems.append(Problem(e.where, "no captions", e.image))
            continue
        if not e.caption:
            problems.append(Problem(e.where, "empty caption", e.image))
            continue
        if e.split is not None:
            previous = splits.setdefault(target, e.split)
            if previous != e.split:
                problems.append(Problem(e.where, f"split {e.split!r} conflicts with earlier {previous!r}", e.image))
                continue
        captions.setdefault(target, []).append(e.caption)
    if external_splits is not None:
        by_path = {(root / name).resolve(): value for name, value in external_splits.items()}
        for target in captions:
            if target not in by_path:
                problems.append(
                    Problem(splits_file.name, "not listed in splits.csv", target.relative_to(root).as_posix())
                )
            else:
                splits[target] = by_path[target][0]
        for target in [t for t in captions if t not in splits]:
            del captions[target]
    elif splits:
        for target in [t for t in captions if t not in splits]:
            problems.append(
                Problem(str(source.name), "some captions have a split and this image has none", str(target))
            )
            del captions[target]
    return CaptionSet(captions, root, source, fmt, splits), problems


def check_image(target: Path, root: Path, check_files: bool, verify_images: bool) -> str | None:
    """Why the image file ``target`` cannot be used, or None when it can."""
    if not target.is_relative_to(root):
        return f"path escapes the image root {root}"
    if not check_files:
        return None
    if not target.is_file():
        return f"image file not found ({target})"
    if target.stat().st_size == 0:
        return f"image file is empty ({target})"
    if verify_images:
        try:
            load_image(target)
        except ImageLoadError as e:
            return e.reason
    return None
