"""Problem reporting: one bad manifest entry (`Problem`) and the one message that lists them all."""

from __future__ import annotations

import os
from dataclasses import dataclass

from vitcap.errors import ManifestError

__all__ = ["SKIP_HINT", "Problem", "format_problems", "manifest_error"]

SKIP_HINT = "pass --data.skip_bad true, or skip_bad=True in Python, to skip them"
_MAX_LISTED = 50


@dataclass(frozen=True)
class Problem:
    """One bad manifest entry.

    Attributes:
        where: Location, ``"file:line"`` or ``"file: annotations[17]"``.
        reason: What is wrong.
        image: The image entry as written in the manifest, when known.
    """

    where: str
    reason: str
    image: str | None = None

    def __str__(self) -> str:
        return (
            f"{self.where}: {self.image!r}: {self.reason}" if self.image is not None else f"{self.where}: {self.reason}"
        )


def format_problems(source: str, problems: list[Problem], hint: str) -> str:
    """One message listing every problem (the first 50, then a count)."""
    lines = [f"{source}: {len(problems)} bad manifest entr{'y' if len(problems) == 1 else 'ies'} ({hint}):"]
    lines += [f"  {p}" for p in problems[:_MAX_LISTED]]
    if len(problems) > _MAX_LISTED:
        lines.append(f"  ... and {len(problems) - _MAX_LISTED} more")
    return "\n".join(lines)


def manifest_error(source: str | os.PathLike, problems: list[Problem]) -> ManifestError:
    """The `ManifestError` listing every problem of ``source``, with the hint to skip them."""
    return ManifestError(source, problems, format_problems(str(source), problems, SKIP_HINT))
