"""`vitcap caption`: caption images or folders of images with a trained checkpoint or export folder."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from vitcap.cli import fail
from vitcap.cli.images import run_on_images


def build_parser() -> argparse.ArgumentParser:
    """The options of `vitcap caption` (built without importing torch, so `--help` is instant)."""
    parser = argparse.ArgumentParser(prog="vitcap caption", description="Caption images with a trained checkpoint.")
    parser.add_argument(
        "images", nargs="*", help="image files, folders of images (recursive) or tar shards ('shards/{000..127}.tar')"
    )
    parser.add_argument("--checkpoint", required=True, help=".ckpt from training or a `vitcap export` folder")
    parser.add_argument(
        "--runtime",
        choices=("torch", "onnx"),
        default="torch",
        help="torch (default), or onnx: onnxruntime on a `vitcap export --format onnx` folder, no PyTorch needed",
    )
    parser.add_argument("--beams", type=int, default=None, help="beam size (default: the checkpoint's setting)")
    parser.add_argument("--max-length", type=int, default=None, help="maximum new tokens per caption, EOS included")
    parser.add_argument("--sample", action="store_true", help="sample instead of searching")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-k", type=int, default=0)
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=None, help="seed for --sample")
    parser.add_argument("--num-captions", type=int, default=1, help="captions per image (n-best or samples)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument("--save-attention", metavar="DIR", help="write one attention PNG per image to DIR")
    bulk = parser.add_argument_group("bulk captioning (vitcap.cli.bulk): Lightning's predict loop on every device")
    bulk.add_argument("--out", metavar="FILE", help="append JSON lines to FILE; a rerun skips images already in it")
    bulk.add_argument("--files-from", metavar="LIST", help="also caption the image paths listed in LIST (one a line)")
    bulk.add_argument("--devices", type=int, default=None, help="processes / GPUs to caption on (needs --out)")
    bulk.add_argument("--accelerator", default="cpu", help="cpu (default), gpu, auto, ... (with --out)")
    bulk.add_argument("--num-workers", type=int, default=1, help="image-decoding workers per process (with --out)")
    bulk.add_argument("--sidecars", action="store_true", help="also write KEY.txt next to each image file")
    bulk.add_argument("--out-shards", metavar="DIR", help="copies of the input shards with KEY.caption.txt added")
    return parser


def decoding_options(args: argparse.Namespace) -> dict[str, Any]:
    """The `GenerationConfig` fields the decoding options ask for (the rest keep the checkpoint's defaults)."""
    decoding: dict[str, Any] = {"num_return_sequences": args.num_captions}
    if args.beams is not None:
        decoding["num_beams"] = args.beams
    if args.num_captions > 1 and not args.sample:
        decoding["num_beams"] = max(decoding.get("num_beams", 1), args.num_captions)
    if args.max_length is not None:
        decoding["max_length"] = args.max_length
    if args.sample:
        decoding.update(
            do_sample=True,
            num_beams=1,
            temperature=args.temperature,
            top_k=args.top_k,
            top_p=args.top_p,
            seed=args.seed,
        )
    return decoding


def main(argv: list[str]) -> int:
    """`vitcap caption`: caption images or folders of images with a trained checkpoint."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.images and not args.files_from:
        parser.error("give images, folders or shards to caption")
    from vitcap.data.shards.index import is_shard_spec  # torch-free

    shards = any(is_shard_spec(i) for i in args.images)
    bulk = args.devices or args.files_from or args.sidecars or args.out_shards or shards
    if args.out or bulk:
        if args.runtime == "onnx":
            return fail("--out, shards, --files-from and --devices run Lightning's predict loop: use --runtime torch")
        if not args.out:
            return fail("shards, --files-from, --devices, --sidecars and --out-shards need --out results.jsonl")
        from vitcap.cli.bulk import run_bulk  # Lightning's predict loop, one process per device

        return run_bulk(args, decoding_options(args))
    if args.runtime == "onnx":
        for flag, value in (("--sample", args.sample), ("--save-attention", args.save_attention)):
            if value:
                return fail(f"{flag} needs --runtime torch (the ONNX runtime does greedy and beam search)")
    decoding = decoding_options(args)

    def handle(pipeline: Any, paths: list[Path], images: list[Any]) -> None:
        results = pipeline.caption(images, return_attention=bool(args.save_attention), **decoding)
        for path, image, result in zip(paths, images, results):
            if args.json:
                row = {"image": str(path), "caption": result.caption, "score": result.score,
                       "alternatives": result.alternatives}  # fmt: skip
                print(json.dumps(row, ensure_ascii=False), flush=True)
            else:
                print(f"{path}\t{result.caption}", flush=True)
            if args.save_attention:
                from vitcap.viz import caption_attention_figure

                out = Path(args.save_attention) / f"{path.stem}.png"
                caption_attention_figure(image, result.words, result.attention, out, result.caption)

    return run_on_images(args, "captioning", handle)
