"""``"folder"``: a directory of images, each with a sidecar ``NAME.txt`` holding one caption per line (blank lines
ignored)."""

from __future__ import annotations

import os
from pathlib import Path

from vitcap.data.captions.entries import Entry
from vitcap.data.captions.problems import Problem
from vitcap.data.captions.text import read_text
from vitcap.data.images import IMAGE_EXTENSIONS
from vitcap.errors import CaptionFormatError

__all__ = ["read_folder"]


def read_folder(folder: Path, root: Path, problems: list[Problem]) -> list[Entry]:
    """Entries of every image under ``folder`` (recursively, sorted), with paths relative to ``root``.

    Raises:
        CaptionFormatError: No image files, or none of them has a sidecar caption file.
    """
    entries: list[Entry] = []
    images = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    for img in images:
        try:
            rel = img.resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            rel = os.path.relpath(img, root)
        sidecar = img.with_suffix(".txt")
        if not sidecar.is_file():
            problems.append(Problem(img.relative_to(folder).as_posix(), f"no sidecar caption file {sidecar.name}"))
            continue
        lines = [(n, line.strip()) for n, line in enumerate(read_text(sidecar).splitlines(), start=1) if line.strip()]
        where_file = sidecar.relative_to(folder).as_posix()
        if not lines:
            entries.append(Entry(rel, None, where_file))
        entries.extend(Entry(rel, caption, f"{where_file}:{n}") for n, caption in lines)
    if not images:
        raise CaptionFormatError(f"{folder}: no image files ({', '.join(IMAGE_EXTENSIONS)}) found")
    if not entries:
        raise CaptionFormatError(
            f"{folder}: none of the {len(images)} images has a sidecar caption file (NAME.txt beside NAME.jpg); "
            "for a caption file, pass its path"
        )
    return entries
