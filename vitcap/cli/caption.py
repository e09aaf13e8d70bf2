"""`vitcap caption`: caption images or folders of images with a trained checkpoint or export folder."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from vitcap.cli.images import run_on_images


def build_parser() -> argparse.ArgumentParser:
    """The options of `vitcap caption` (built without importing torch, so `--help` is instant)."""
    parser = argparse.ArgumentParser(prog="vitcap caption", description="Caption images with a trained checkpoint.")
    parser.add_argument("images", nargs="+", help="image files or folders of images")
    parser.add_argument("--checkpoint", required=True, help=".ckpt from training or a `vitcap export` folder")
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
    args = build_parser().parse_args(argv)
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
