"""The image loop `vitcap caption` and `vitcap classify` share: expand folders, load, batch, report bad files."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from vitcap.cli import fail
from vitcap.errors import UserError, one_line

__all__ = ["IMAGE_SUFFIXES", "expand_images", "run_on_images"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def expand_images(inputs: Sequence[str]) -> list[Path]:
    """Files as given; folders expand to their image files (sorted, not recursive)."""
    paths: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            paths.extend(sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES))
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


def run_on_images(args: Any, kind: str, handle_batch: Callable[[Any, list[Path], list[Any]], None]) -> int:
    """Load the checkpoint, check it is a `kind` model, and feed readable images to `handle_batch` in batches.

    Unreadable images are reported on stderr one line each and the rest still processed; the exit status is 1 if
    any failed, 2 for a checkpoint that cannot be used, 0 otherwise.
    """
    from vitcap.inference import load

    try:
        pipeline = load(args.checkpoint, device=args.device)
    except UserError as e:
        return fail(one_line(e))
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
