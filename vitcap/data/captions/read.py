"""`read_captions`: read any supported caption format, validate every entry up front, report all problems at once."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from vitcap.data.captions.caption_set import CaptionSet
from vitcap.data.captions.entries import Entry
from vitcap.data.captions.problems import Problem, format_problems, manifest_error
from vitcap.data.captions.registry import FILE_READERS, FOLDER_READERS, FORMATS, caption_file_in, detect_format
from vitcap.data.captions.splits import read_splits_file
from vitcap.data.captions.validate import assemble
from vitcap.errors import CaptionFormatError, ConfigError

__all__ = ["read_captions"]


def read_captions(
    path: str | os.PathLike,
    format: str = "auto",
    images_dir: str | os.PathLike | None = None,
    *,
    skip_bad: bool = False,
    check_files: bool = True,
    verify_images: bool = False,
) -> CaptionSet:
    """Read captions in any supported format (see `vitcap.data.captions`) and validate them up front.

    Args:
        path: Caption file, or a folder of images with sidecar ``.txt`` files.
        format: One of ``FORMATS`` or ``"auto"`` (by content, see ``detect_format``).
        images_dir: Root that image paths are relative to; see `vitcap.data.captions` for the default.
        skip_bad: Drop bad entries with one warning listing them, instead of raising ``ManifestError``.
        check_files: Check that every image file exists (and is non-empty).
        verify_images: Also decode every image once with ``load_image`` (slow; finds corrupt files up front).

    Returns:
        The images with their captions and splits.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ConfigError: ``format`` is not a known format.
        CaptionFormatError: The file cannot be parsed at all.
        ManifestError: Bad entries and ``skip_bad`` is False; lists every one with file and line.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"caption data not found: {path}")
    if format == "auto" and path.is_dir():
        path = caption_file_in(path) or path
    fmt = detect_format(path) if format == "auto" else format
    if fmt not in FORMATS:
        raise ConfigError(f"unknown caption format {format!r} for {path}; expected 'auto' or one of {FORMATS}")
    problems: list[Problem] = []
    if fmt in FOLDER_READERS:
        if not path.is_dir():
            raise CaptionFormatError(f"{path}: format {fmt!r} needs a directory")
        root = Path(images_dir) if images_dir is not None else path
        entries = FOLDER_READERS[fmt](path, root, problems)
    else:
        if path.is_dir():
            raise CaptionFormatError(f"{path}: is a directory; format {fmt!r} needs a caption file")
        entries = FILE_READERS[fmt](path, problems)
        root = Path(images_dir) if images_dir is not None else _guess_root(path.parent, entries)
    splits_file = (path if fmt in FOLDER_READERS else path.parent) / "splits.csv"
    has_own_splits = any(e.split is not None for e in entries)
    external = None if has_own_splits or not splits_file.is_file() else read_splits_file(splits_file, problems)
    cs, more = assemble(entries, root.resolve(), path, fmt, external, splits_file, check_files, verify_images)
    problems.extend(more)
    if problems:
        if not skip_bad:
            raise manifest_error(path, problems)
        warnings.warn(format_problems(str(path), problems, "skipped because skip_bad=True"), stacklevel=2)
    return cs


def _guess_root(parent: Path, entries: list[Entry]) -> Path:
    """The caption file's directory, or its ``images/`` subdirectory when the entries are found there."""
    sample = [e.image for e in entries[:200:10]][:20]
    candidate = parent / "images"
    if not sample or not candidate.is_dir():
        return parent
    here = sum((parent / s).is_file() for s in sample)
    there = sum((candidate / s).is_file() for s in sample)
    return candidate if there > here else parent
