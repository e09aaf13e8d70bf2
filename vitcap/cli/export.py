"""`vitcap export`: a checkpoint as safetensors weights + a JSON config that `vitcap.load` reads without pickle,
and with `--format onnx` also as ONNX models in Hugging Face Optimum's layout for onnxruntime."""

from __future__ import annotations

import argparse

from vitcap.cli import fail
from vitcap.errors import UserError, one_line


def main(argv: list[str]) -> int:
    """`vitcap export --checkpoint CKPT --out DIR`."""
    parser = argparse.ArgumentParser(prog="vitcap export", description=__doc__)
    parser.add_argument("--checkpoint", required=True, help=".ckpt from training (or an export folder)")
    parser.add_argument("--out", required=True, help="output folder (written all at once, never half)")
    parser.add_argument(
        "--format",
        choices=("safetensors", "onnx"),
        default="safetensors",
        help="safetensors (default) or onnx: adds encoder/decoder ONNX models, model card and Hub JSON files",
    )
    parser.add_argument("--quantize", choices=("int8",), help="with --format onnx: add int8 copies of the models")
    args = parser.parse_args(argv)
    if args.quantize and args.format != "onnx":
        return fail("--quantize needs --format onnx")
    try:
        if args.format == "onnx":
            try:
                from vitcap.deploy.onnx_export import export_onnx
            except ImportError as e:
                return fail(f"--format onnx needs the onnx extra: pip install 'vitcap[onnx]' ({e})")
            out = export_onnx(args.checkpoint, args.out, quantize=args.quantize)
        else:
            from vitcap.inference import export

            out = export(args.checkpoint, args.out)
    except UserError as e:
        return fail(one_line(e))
    print(f"exported {args.checkpoint} to {out}")
    return 0
