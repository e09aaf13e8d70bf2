"""Is one captioner's CIDEr-D really higher than another's on this split? A paired bootstrap over images.

Corpus CIDEr-D is the mean of per-image scores (document frequencies come from the references only), so resampling
images with replacement, the same images for both prediction files, gives the spread of the ratio
CIDEr-D(A) / CIDEr-D(B) that the choice of evaluation images alone causes. With the 113 images of flickr8k-mini's
dev split this says how large a gain must be before it is more than the split's noise.

    vitcap caption --checkpoint XE.ckpt --beams 3 --json --out xe.jsonl DEV_IMAGES...
    vitcap caption --checkpoint SCST.ckpt --beams 3 --json --out scst.jsonl DEV_IMAGES...
    python bench/paired_bootstrap.py --predictions scst.jsonl --baseline xe.jsonl --references captions.txt --split val

Prints one JSON line: both CIDEr-D (x100), the ratio, its 2.5/50/97.5 percentiles over `--rounds` resamples, and the
share of resamples in which A beats B by the `--target` ratio.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import cpu_name  # noqa: E402

from vitcap.cli.evaluate import read_predictions  # noqa: E402
from vitcap.data.captions import read_captions  # noqa: E402
from vitcap.metrics.cider import cider_d  # noqa: E402
from vitcap.metrics.tokenize import coco_tokenize, coco_tokenize_batch  # noqa: E402


def per_image(predictions: str, references: dict[str, list[str]]) -> dict[str, float]:
    """Per-image CIDEr-D (x100) of a predictions file, keyed by image file name."""
    preds = {Path(p.image).name: p.caption for p in read_predictions(predictions) if p.image is not None}
    names = sorted(references)
    missing = [n for n in names if n not in preds]
    if missing:
        raise SystemExit(f"{predictions}: no caption for {len(missing)} reference images, e.g. {missing[0]}")
    refs = [coco_tokenize_batch(references[n]) for n in names]
    _, scores = cider_d([coco_tokenize(preds[n]) for n in names], refs)
    return {n: 100 * s for n, s in zip(names, scores, strict=True)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--predictions", required=True, help="A: `vitcap caption --json` output")
    parser.add_argument("--baseline", required=True, help="B: the same for the baseline")
    parser.add_argument("--references", required=True, help="reference captions (any read_captions format)")
    parser.add_argument("--split", default=None, help="only this split's images (train, val, test)")
    parser.add_argument("--rounds", type=int, default=10000)
    parser.add_argument("--target", type=float, default=1.10, help="ratio whose probability to report")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    captions = read_captions(args.references)
    splits = captions.splits
    references = {
        Path(p).name: list(captions[p]) for p in captions.keys() if args.split is None or splits.get(p) == args.split
    }
    a, b = per_image(args.predictions, references), per_image(args.baseline, references)
    names = sorted(references)
    rng = random.Random(args.seed)
    ratios = []
    for _ in range(args.rounds):
        idx = [names[rng.randrange(len(names))] for _ in names]
        ratios.append(sum(a[n] for n in idx) / max(sum(b[n] for n in idx), 1e-9))
    ratios.sort()
    mean_a, mean_b = sum(a.values()) / len(a), sum(b.values()) / len(b)

    def pct(q: float) -> float:
        return round(ratios[min(len(ratios) - 1, int(q * len(ratios)))], 3)

    print(json.dumps({
        "bench": "paired_bootstrap", "cpu": cpu_name(), "images": len(names), "split": args.split,
        "cider_d": round(mean_a, 2), "baseline_cider_d": round(mean_b, 2), "ratio": round(mean_a / mean_b, 3),
        "ratio_p2.5": pct(0.025), "ratio_p50": pct(0.5), "ratio_p97.5": pct(0.975), "rounds": args.rounds,
        f"share_ratio>={args.target}": round(sum(r >= args.target for r in ratios) / len(ratios), 4),
        "share_ratio>1": round(sum(r > 1 for r in ratios) / len(ratios), 4),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
