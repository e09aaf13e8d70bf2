"""Reading a caption file's text and JSON, with errors that name the file and line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vitcap.errors import CaptionFormatError

__all__ = ["parse_json", "read_text"]


def read_text(path: Path) -> str:
    """Read a UTF-8 text file (a BOM is allowed).

    Raises:
        CaptionFormatError: Not valid UTF-8; names the line and byte.
    """
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise CaptionFormatError(
            f"{path}:{line}: not valid UTF-8 (byte 0x{data[e.start]:02x}); re-encode the file as UTF-8"
        ) from e


def parse_json(path: Path, text: str) -> Any:
    """The JSON value of ``text`` (the content of ``path``).

    Raises:
        CaptionFormatError: Invalid JSON; names the line and column.
    """
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise CaptionFormatError(f"{path}:{e.lineno}: invalid JSON ({e.msg} at column {e.colno})") from e
