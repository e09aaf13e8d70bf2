"""`vitcap classify`: class names with probabilities for images or folders of images."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from vitcap.cli.images import run_on_images


def main(argv: list[str]) -> int:
    """`vitcap classify`: class names with probabilities for images or folders of images."""
    parser = argparse.ArgumentParser(prog="vitcap classify", description="Classify images with a trained checkpoint.")
    parser.add_argument("images", nargs="+", help="image files or folders of images")
    parser.add_argument("--checkpoint", required=True, help=".ckpt from training or a `vitcap export` folder")
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument("--save-attention", metavar="DIR", help="write attention-rollout PNGs (ViT) to DIR")
    args = parser.parse_args(argv)

    def handle(pipeline: Any, paths: list[Path], images: list[Any]) -> None:
        tops = pipeline.classify(images, top_k=args.top_k)
        rollouts = pipeline.rollout(images) if args.save_attention else None
        for i, (path, top) in enumerate(zip(paths, tops)):
            if args.json:
                row = {"image": str(path), "label": top[0][0], "top": [{"label": n, "prob": p} for n, p in top]}
                print(json.dumps(row, ensure_ascii=False), flush=True)
            else:
                print(f"{path}\t" + "\t".join(f"{n} {p:.3f}" for n, p in top), flush=True)
            if rollouts is not None:
                from vitcap.viz import rollout_figure

                out = Path(args.save_attention) / f"{path.stem}.png"
                rollout_figure(images[i], rollouts[i].cpu(), out, f"{top[0][0]} ({top[0][1]:.2f})")

    return run_on_images(args, "classification", handle)
