"""``"flickr_token"``: ``Flickr8k.token.txt`` style, ``NAME#i<TAB>caption`` per line."""

from __future__ import annotations

import re
from pathlib import Path

from vitcap.data.captions.entries import Entry, clean_caption
from vitcap.data.captions.problems import Problem
from vitcap.data.captions.text import read_text

__all__ = ["TOKEN_LINE", "read_flickr_token"]

TOKEN_LINE = re.compile(r"^(?P<image>[^\t#]+)#(?P<num>\d+)\t(?P<caption>.*)$")


def read_flickr_token(path: Path, problems: list[Problem]) -> list[Entry]:
    """Entries of a Flickr token file; blank lines are ignored."""
    entries: list[Entry] = []
    for n, line in enumerate(read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        m = TOKEN_LINE.match(line.rstrip("\r"))
        where = f"{path.name}:{n}"
        if m is None:
            problems.append(Problem(where, "expected 'NAME#i<TAB>caption'"))
            continue
        entries.append(Entry(m["image"].strip(), clean_caption(m["caption"]), where))
    return entries
