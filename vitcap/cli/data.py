"""`vitcap data`: write the built-in synthetic data set to disk."""

from __future__ import annotations

import sys

USAGE = "usage: vitcap data shapes --out DIR [--num N] [--seed S] [--img-size P]"


def main(argv: list[str]) -> int:
    """`vitcap data shapes ...` (see `vitcap.data.shapes.shapes_main`)."""
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    if argv[0] != "shapes":
        print(f"vitcap data: unknown data set {argv[0]!r}; available: shapes", file=sys.stderr)
        return 2
    from vitcap.data.shapes import shapes_main

    return shapes_main(argv[1:])
