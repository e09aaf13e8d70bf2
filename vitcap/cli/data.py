"""`vitcap data`: write the built-in synthetic data set to disk, or any data vitcap reads as tar shards."""

from __future__ import annotations

import argparse
import sys
from typing import Any

USAGE = """usage: vitcap data shapes --out DIR [--num N] [--seed S] [--img-size P]
       vitcap data shards --out DIR [--per-shard N] [--task caption|classify] SOURCE"""


def shards_parser() -> argparse.ArgumentParser:
    """The options of `vitcap data shards` (built without importing torch)."""
    parser = argparse.ArgumentParser(
        prog="vitcap data shards",
        description="Write WebDataset tar shards ({split}-00000.tar, ...) and an index.json of keys and counts.",
    )
    parser.add_argument(
        "source",
        help="a caption file or folder (any format `read_captions` reads), an image-folder tree (--task classify), "
        "'shapes', or 'mnist' / 'fashion_mnist' / 'cifar10' with --root",
    )
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--per-shard", type=int, default=1000, help="samples per shard (default 1000)")
    parser.add_argument("--task", choices=("caption", "classify"), default=None,
                        help="default: classify for image-folder trees and classification data sets, else caption")  # fmt: skip
    parser.add_argument("--format", default="auto", help="caption format (default: detected)")
    parser.add_argument("--images-dir", default=None, help="root of the image paths in the caption file")
    parser.add_argument("--root", default=None, help="folder of the MNIST / Fashion-MNIST / CIFAR-10 files")
    parser.add_argument("--val-fraction", type=float, default=0.1, help="without own splits: held out for val")
    parser.add_argument("--test-fraction", type=float, default=0.1, help="captions without own splits: for test")
    parser.add_argument("--num", type=int, default=1000, help="shapes: training images (val, test: num // 10)")
    parser.add_argument("--img-size", type=int, default=64, help="shapes: image side in pixels")
    parser.add_argument("--seed", type=int, default=0, help="shapes data seed; seed of the image-folder split")
    parser.add_argument("--skip-bad", action="store_true", help="skip unreadable images and bad entries (warning)")
    return parser


def _records(args: argparse.Namespace) -> tuple[Any, list[str] | None]:
    from pathlib import Path

    from vitcap.data.shards import writer

    tensors = ("mnist", "fashion_mnist", "cifar10")
    if args.source == "shapes":
        task = args.task or "caption"
        splits = {"train": args.num, "val": max(1, args.num // 10), "test": max(1, args.num // 10)}
        records = writer.shapes_records(task, splits, args.seed, args.img_size)
        if task == "classify":
            from vitcap.data.shapes import CLASS_NAMES

            return records, list(CLASS_NAMES)
        return records, None
    if args.source in tensors:
        if args.root is None:
            from vitcap.errors import ConfigError

            raise ConfigError(f"{args.source} needs --root (the folder holding its files)", key="--root")
        return writer.tensor_records(args.source, args.root)
    folder = Path(args.source)
    if args.task == "classify" or (args.task is None and folder.is_dir() and _is_class_tree(folder)):
        return writer.folder_records(args.source, args.val_fraction, args.seed, args.skip_bad)
    records = writer.caption_records(
        args.source, args.format, args.images_dir, args.val_fraction, args.test_fraction, args.skip_bad
    )
    return records, None


def _is_class_tree(folder: Any) -> bool:
    """An image-folder tree: class sub-folders (or train/ with them) and no caption file."""
    from vitcap.data.captions.registry import caption_file_in

    return caption_file_in(folder) is None and any(p.is_dir() for p in folder.iterdir())


def shards_main(argv: list[str]) -> int:
    """`vitcap data shards --out DIR [--per-shard N] SOURCE`."""
    from vitcap.cli import fail
    from vitcap.errors import UserError, one_line

    args = shards_parser().parse_args(argv)
    try:
        from vitcap.data.shards.writer import write_shards

        records, class_names = _records(args)
        index = write_shards(records, args.out, args.per_shard, class_names)
    except (UserError, FileNotFoundError) as e:
        return fail(one_line(e))
    for split, shards in index["splits"].items():
        print(f"{split}: {sum(s['count'] for s in shards)} samples in {len(shards)} shards")
    print(f"wrote {args.out}/index.json")
    return 0


def main(argv: list[str]) -> int:
    """`vitcap data shapes ...` (see `vitcap.data.shapes.shapes_main`) and `vitcap data shards ...`."""
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    if argv[0] == "shards":
        return shards_main(argv[1:])
    if argv[0] != "shapes":
        print(f"vitcap data: unknown data set {argv[0]!r}; available: shapes, shards", file=sys.stderr)
        return 2
    from vitcap.data.shapes import shapes_main

    return shapes_main(argv[1:])
