"""The image loop `vitcap caption` and `vitcap classify` share: expand folders, load, batch, report bad files."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from vitcap.cli import fail
from vitcap.errors import ConfigError, UserError, one_line

__all__ = ["IMAGE_SUFFIXES", "expand_images", "run_on_images"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def expand_images(inputs: Sequence[str]) -> list[Path]:
    """Files as given; folders expand to the image files anywhere below them (sorted, hidden folders skipped)."""
    paths: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = (p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            paths.extend(
                sorted(p for p in found if not any(part.startswith(".") for part in p.relative_to(path).parts))
            )
        else:
            paths.append(path)
    return paths


def _progress(total: int):
    from rich.progress import Progress

    # Only worth drawing for many images, and only on a terminal (never in piped output or logs).
    return Progress(transient=True, disable=total < 16 or not sys.stderr.isatty(), console=None)


def _load_batches(paths: list[Path], batch_size: int) -> Iterator[tuple[list[Path], list[Any], int]]:
    """Yield (paths, preprocessed batch, PIL images) of readable images; report unreadable ones on stderr."""
    from vitcap.data.images import ImageLoadError, load_image

    good: list[tuple[Path, Any]] = []
    failed = 0
    for i, path in enumerate(paths):
        try:
            good.append((path, load_image(path)))
        except ImageLoadError as e:
            print(f"vitcap: skipped: {e}", file=sys.stderr)
            failed += 1
        if len(good) == batch_size or (i == len(paths) - 1 and good):
            images = [img for _, img in good]
            yield [p for p, _ in good], images, failed
            good, failed = [], 0
    if failed:
        yield [], [], failed


def _load(args: Any, kind: str) -> Any:
    """The `kind` pipeline of `args.checkpoint` for `args.runtime` (None when the PyTorch runtime is asked for without
    torch); a joint checkpoint gives the pipeline of its `kind` head."""
    if getattr(args, "runtime", "torch") == "onnx":
        from vitcap.deploy.runtime import load_onnx  # onnxruntime and numpy only

        if args.device != "cpu":
            raise ConfigError(f"--device {args.device}: the ONNX runtime runs on the CPU", key="--device")
        return load_onnx(args.checkpoint)
    try:
        from vitcap.inference import load
    except ImportError as e:
        if e.name == "torch":
            return None
        raise
    return load(args.checkpoint, device=args.device, task=kind)


def run_on_images(args: Any, kind: str, handle_batch: Callable[[Any, list[Path], list[Any]], None]) -> int:
    """Load the checkpoint, check it is a `kind` model, and feed readable images to `handle_batch` in batches.

    Unreadable images are reported on stderr one line each and the rest still processed; the exit status is 1 if
    any failed, 2 for a checkpoint that cannot be used, 0 otherwise.
    """
    try:
        pipeline = _load(args, kind)
    except UserError as e:
        return fail(one_line(e))
    if pipeline is None:
        return fail(
            "PyTorch is not installed; an ONNX export folder (`vitcap export --format onnx`) captions without it: "
            "add --runtime onnx"
        )
    if pipeline.task != kind:
        return fail(f"{args.checkpoint}: a {pipeline.task} checkpoint; this command needs a {kind} model")
    paths = expand_images(args.images)
    if not paths:
        return fail("no images found in " + " ".join(args.images))
    failures = 0
    try:
        with _progress(len(paths)) as progress:
            bar = progress.add_task(kind, total=len(paths))
            for batch_paths, images, failed in _load_batches(paths, args.batch_size):
                failures += failed
                progress.advance(bar, len(batch_paths) + failed)
                if batch_paths:
                    handle_batch(pipeline, batch_paths, images)
    except UserError as e:
        return fail(one_line(e))
    if failures:
        print(f"vitcap: {failures} of {len(paths)} images could not be read", file=sys.stderr)
    return 1 if failures else 0
