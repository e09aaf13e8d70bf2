"""``"csv"``: CSV with a header naming ``image`` and ``caption`` or ``captions``, and optionally ``split``.

One row per caption (``caption``, e.g. the Kaggle Flickr8k ``captions.txt``) or per image (``captions``, a JSON
list of strings). Parsed with the ``csv`` module, so quoted captions may contain commas.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from vitcap.data.captions.entries import Entry, add_record
from vitcap.data.captions.problems import Problem
from vitcap.data.captions.text import read_text
from vitcap.errors import CaptionFormatError

__all__ = ["read_csv"]


def read_csv(path: Path, problems: list[Problem]) -> list[Entry]:
    """Entries of a caption CSV file.

    Raises:
        CaptionFormatError: Empty file, or a header without ``image`` and ``caption``/``captions``.
    """
    text = read_text(path)
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [h.strip().lower() for h in next(reader)]
    except StopIteration:
        raise CaptionFormatError(f"{path}:1: empty file; expected a CSV header with 'image' and 'caption'") from None
    except csv.Error as e:
        raise CaptionFormatError(f"{path}:1: malformed CSV header ({e})") from e
    if "image" not in header or ("caption" not in header and "captions" not in header):
        raise CaptionFormatError(
            f"{path}:1: CSV header {header} needs columns 'image' and 'caption' (or 'captions', a JSON list)"
        )
    col = {name: i for i, name in enumerate(header)}
    entries: list[Entry] = []
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            problems.append(Problem(f"{path.name}:{reader.line_num}", f"malformed CSV ({e})"))
            continue
        where = f"{path.name}:{reader.line_num}"
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            problems.append(Problem(where, f"expected {len(header)} fields {header}, got {len(row)}"))
            continue
        add_record(
            entries,
            problems,
            where,
            row[col["image"]],
            row[col["caption"]] if "caption" in col else None,
            row[col["captions"]] if "captions" in col else None,
            row[col["split"]] if "split" in col else None,
            captions_is_json_text=True,
        )
    return entries
