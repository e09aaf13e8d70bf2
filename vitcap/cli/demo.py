"""`vitcap demo`: a local web page (Gradio 6) to try a trained checkpoint or export folder.

Gradio is an optional extra (`pip install -e '.[demo]'`); without it the command says so in one line and exits 2.
The page binds to 127.0.0.1 unless `--host` says otherwise, never creates a public share link, and has Gradio's
analytics turned off.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

from vitcap.cli import fail

__all__ = ["EXTRA_HINT", "build_parser", "main"]

EXTRA_HINT = "vitcap demo needs the optional 'demo' extra (Gradio 6): pip install -e '.[demo]'"


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The options of `vitcap demo` (built without importing torch or Gradio, so `--help` is instant)."""
    parser = argparse.ArgumentParser(
        prog="vitcap demo",
        description="Serve a local web page to caption or classify images with a trained model and see its attention.",
    )
    parser.add_argument("--checkpoint", required=True, help=".ckpt from training or a `vitcap export` folder")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=_positive_int, default=7860)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--max-pixels", type=_positive_int, default=None, help="refuse larger uploads (default 50 million pixels)"
    )
    parser.add_argument("--webcam", action="store_true", help="offer the webcam as an image source")
    return parser


def gradio_problem() -> str:
    """Why the demo cannot run here ("" when Gradio 6 or later is importable)."""
    try:
        import gradio
    except ImportError:
        return EXTRA_HINT
    major = str(getattr(gradio, "__version__", "0")).split(".")[0]
    if not major.isdigit() or int(major) < 6:
        return f"{EXTRA_HINT} (found Gradio {getattr(gradio, '__version__', '?')})"
    return ""


def main(argv: list[str]) -> int:
    """`vitcap demo --checkpoint CKPT_OR_EXPORT_DIR [--host 127.0.0.1] [--port 7860]`."""
    args = build_parser().parse_args(argv)
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # before Gradio is imported: no version check, no telemetry
    problem = gradio_problem()
    if problem:
        return fail(problem)
    from vitcap.demo.app import build_demo, launch
    from vitcap.demo.views import DEFAULT_MAX_PIXELS
    from vitcap.errors import UserError, one_line
    from vitcap.inference import load

    try:
        pipeline = load(args.checkpoint, device=args.device)
    except UserError as e:
        return fail(one_line(e))
    with tempfile.TemporaryDirectory(prefix="vitcap-demo-") as examples:
        demo = build_demo(
            pipeline,
            source=args.checkpoint,
            examples_dir=examples,
            max_pixels=args.max_pixels or DEFAULT_MAX_PIXELS,
            webcam=args.webcam,
        )
        try:
            url = launch(demo, host=args.host, port=args.port)
        except OSError as e:  # the port is taken, or the address is not this machine's
            return fail(f"cannot serve on {args.host}:{args.port} ({e}); choose another --port or --host")
        print(f"vitcap demo: serving {url} (Ctrl-C stops it)", file=sys.stderr, flush=True)
        try:
            while demo.is_running:
                time.sleep(0.2)
        except KeyboardInterrupt:
            pass
        finally:
            demo.close()
    return 0
