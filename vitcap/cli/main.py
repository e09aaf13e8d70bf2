"""The `vitcap` command: one dispatcher for the training commands (LightningCLI) and the tools.

Each command lives in its own module and is imported only when it runs, so `vitcap --help` and
`vitcap caption --help` import neither torch nor Lightning. Every command reports errors a user can fix as one
line, `vitcap: error: <message>`, with exit status 2 (see `vitcap.cli.errors`).
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence

__all__ = ["TOOLS", "main"]

LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")

USAGE = """usage: vitcap COMMAND [ARGS]

training (LightningCLI; `python train.py COMMAND` is the same):
  fit        train a model from a YAML config:        vitcap fit --config configs/demo/shapes_caption_vit.yaml
  validate   evaluate a checkpoint on the validation split
  test       evaluate a checkpoint on the test split
  predict    write captions / class predictions of a checkpoint to a JSON file

tools:
  caption    caption images with a trained checkpoint
  classify   classify images with a trained checkpoint
  evaluate   score predicted captions against references (BLEU, ROUGE-L, CIDEr-D)
  data       write the built-in synthetic data set (`vitcap data shapes --out DIR`) or tar shards of any data set
             (`vitcap data shards --out DIR SOURCE`)
  export     write a checkpoint as safetensors weights + a JSON config (--format onnx: ONNX models for onnxruntime)
  demo       a local web page to try a checkpoint, with per-word attention (needs the `demo` extra)

`vitcap COMMAND --help` shows a command's options.
"""

# command -> module with `main(argv) -> int`
TOOLS: dict[str, str] = {
    "caption": "vitcap.cli.caption",
    "classify": "vitcap.cli.classify",
    "evaluate": "vitcap.cli.evaluate",
    "data": "vitcap.cli.data",
    "export": "vitcap.cli.export",
    "demo": "vitcap.cli.demo",
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `vitcap` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command in LIGHTNING_COMMANDS:
        from vitcap.cli.train import run_lightning  # Lightning and torch load only for these commands

        return run_lightning([command, *rest])
    if command not in TOOLS:
        print(f"vitcap: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    try:
        return importlib.import_module(TOOLS[command]).main(rest)
    except BrokenPipeError:
        # The reader went away (`vitcap caption DIR | head`): stop quietly, as Unix tools do, instead of a traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
