"""`vitcap export`: a checkpoint as safetensors weights + a JSON config that `vitcap.load` reads without pickle."""

from __future__ import annotations

import argparse

from vitcap.cli import fail
from vitcap.errors import UserError, one_line


def main(argv: list[str]) -> int:
    """`vitcap export --checkpoint CKPT --out DIR`."""
    parser = argparse.ArgumentParser(prog="vitcap export", description=__doc__)
    parser.add_argument("--checkpoint", required=True, help=".ckpt from training (or an export folder)")
    parser.add_argument("--out", required=True, help="output folder (written all at once, never half)")
    args = parser.parse_args(argv)
    from vitcap.inference import export

    try:
        out = export(args.checkpoint, args.out)
    except UserError as e:
        return fail(one_line(e))
    print(f"exported {args.checkpoint} to {out}")
    return 0
