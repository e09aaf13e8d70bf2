"""How high CIDEr-D can go on an evaluation split: the references scored as if they were the captions.

For the splits that `bench/scst.py` scores (the built-in shapes' validation and test scenes of the demo data, and
flickr8k-mini's official dev split when `../shared/data` is there), with the evaluation's own tokenisation
(`coco_tokenize`) and CIDEr-D (`vitcap.metrics.cider.cider_d`, document frequencies of the split's references, as
validation computes them):

- `best_reference`: every image captioned with the one of its references that scores highest against all its
  references (itself included, as any caption that reproduces a reference is). On the shapes, whose five references
  are fixed templates of the same content, this is the ceiling for a captioner that gets every scene right;
- `each_reference`: the mean over the five choices "always the k-th reference";
- `human_leave_one_out`: each reference scored against the other references of its image (humans against
  humans, the usual human CIDEr-D), averaged;
- shapes only, `best_of_12_phrasings`: every scene said the best of twelve ways the grammar's parts allow (each
  prefix before the forward or the reversed phrase), to see whether a caption that is not a reference scores higher.

Prints one JSON line. No model, no training; seconds.

    python bench/cider_ceiling.py
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import cpu_name  # noqa: E402

from vitcap.data.captions import read_captions  # noqa: E402
from vitcap.data.shapes import make_scene  # noqa: E402
from vitcap.metrics.cider import cider_d  # noqa: E402
from vitcap.metrics.tokenize import coco_tokenize_batch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def ceiling(references: list[list[str]]) -> dict[str, float]:
    """CIDEr-D (x100, as the logs show it) of the references used as captions; see the module docstring."""
    refs = [coco_tokenize_batch(list(r)) for r in references]
    k = min(len(r) for r in refs)
    per_choice = [cider_d([r[j] for r in refs], refs)[1] for j in range(k)]
    best = [max(p[i] for p in per_choice) for i in range(len(refs))]
    # leave one out: reference j of each image against the others; document frequencies from those others
    loo = [cider_d([r[j] for r in refs], [r[:j] + r[j + 1 :] for r in refs])[0] for j in range(k)]
    return {
        "images": len(refs),
        "references_per_image": k,
        "best_reference": round(100 * sum(best) / len(best), 1),
        "each_reference": round(100 * sum(sum(p) / len(p) for p in per_choice) / k, 1),
        "human_leave_one_out": round(100 * sum(loo) / k, 1),
    }


def shapes_phrasings(captions: list[str]) -> list[str]:
    """Twelve ways to say a shapes scene: each prefix of the grammar before its forward or reversed phrase."""
    there = next(c for c in captions if c.startswith("there "))
    verb, fwd = there.split(" ", 2)[1:]
    rev = next(c for c in captions if c.startswith("the picture shows "))[len("the picture shows ") :]
    prefixes = ["", f"there {verb} ", "an image of ", "the picture shows ", f"the picture shows there {verb} "]
    prefixes.append(f"an image of there {verb} ")
    return [p + body for body in (fwd, rev) for p in prefixes]


def best_phrasing(references: list[list[str]]) -> float:
    """CIDEr-D (x100) when every scene gets the best-scoring of its twelve phrasings (`shapes_phrasings`)."""
    refs = [coco_tokenize_batch(list(r)) for r in references]
    options = [coco_tokenize_batch(shapes_phrasings(r)) for r in references]
    per = [cider_d([o[j] for o in options], refs)[1] for j in range(len(options[0]))]
    return round(100 * sum(max(p[i] for p in per) for i in range(len(refs))) / len(refs), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flickr", default=str(REPO.parent / "shared" / "data" / "flickr8k-mini" / "captions.txt"))
    parser.add_argument("--seed", type=int, default=0, help="shapes seed (the demo's: 0)")
    args = parser.parse_args()
    result: dict = {"bench": "cider_ceiling", "cpu": cpu_name()}
    for split, num in (("val", 200), ("test", 500)):  # the demo data: configs/demo/shapes_caption_cnn.yaml
        scenes = [make_scene(args.seed, i, split, 32, 1, 2) for i in range(num)]
        references = [list(s.captions) for s in scenes]
        result[f"shapes_{split}"] = {**ceiling(references), "best_of_12_phrasings": best_phrasing(references)}
    if Path(args.flickr).exists():
        captions = read_captions(args.flickr)
        dev = [captions[p] for p, split in captions.splits.items() if split == "val"]
        result["flickr8k_mini_dev"] = ceiling(dev)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
