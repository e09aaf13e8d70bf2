"""Deployment benchmark: a checkpoint exported to ONNX, onnxruntime against PyTorch eager on the same CPU threads.

    python bench/deploy.py --checkpoint runs/demo_cnn/checkpoints/best.ckpt

Exports the checkpoint (`vitcap export --format onnx --quantize int8`, timed), writes held-out shapes images (the
test split of the training seed, never trained on) to disk, then measures, one JSON line on stdout:

- token identity: greedy and beam-3 (n-best 3) captions of the first 64 images, onnxruntime float32 vs PyTorch,
  with the largest score difference;
- single-image end-to-end latency (read the file, preprocess, encode, decode), median over rotating images,
  PyTorch eager vs onnxruntime float32 vs int8, greedy and beam 3, the runtimes taking turns round by round;
- batch-32 throughput (images/s), the same variants;
- a whole `vitcap caption --runtime torch|onnx FOLDER one.png` process (start-up included), median of 3;
- BLEU-4 (x100) of the float32 and int8 models on every written test image, with the checkpoint's decoding.

Both runtimes get `--threads` threads (PyTorch `set_num_threads`, onnxruntime `intra_op_num_threads`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import cpu_name, interleaved, load_avg, median  # noqa: E402

import vitcap  # noqa: E402
from vitcap.data.shapes import write_shapes  # noqa: E402
from vitcap.deploy import export_onnx, load_onnx  # noqa: E402
from vitcap.metrics import CaptionBLEU  # noqa: E402


def identity(reference, candidate, images: list[Path], **decoding) -> dict[str, float]:
    """How many of `images` get the same caption (and n-best) from both pipelines, and the largest score gap."""
    same, gap = 0, 0.0
    for i in range(0, len(images), 32):
        for a, b in zip(
            reference.caption(images[i : i + 32], **decoding), candidate.caption(images[i : i + 32], **decoding)
        ):
            alts = [x["caption"] for x in a.alternatives] == [x["caption"] for x in b.alternatives]
            same += int(a.tokens == b.tokens and alts)
            gaps = [abs(a.score - b.score)] + [
                abs(x["score"] - y["score"]) for x, y in zip(a.alternatives, b.alternatives)
            ]
            gap = max(gap, *gaps)
    return {"identical": same, "of": len(images), "max_score_diff": gap}


def bleu4(pipeline, images: list[Path], references: list[list[str]]) -> float:
    metric = CaptionBLEU()
    for i in range(0, len(images), 32):
        metric.update([r.caption for r in pipeline.caption(images[i : i + 32])], references[i : i + 32])
    return round(100 * float(metric.compute()["bleu4"]), 2)


def cold_start(folder: Path, image: Path, runtime: str, threads: int) -> float:
    """Wall seconds of a whole `vitcap caption --runtime RUNTIME FOLDER IMAGE` process."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    argv = [
        sys.executable,
        "-m",
        "vitcap.cli",
        "caption",
        "--checkpoint",
        str(folder),
        "--runtime",
        runtime,
        str(image),
    ]
    start = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True, env=env)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help=".ckpt or export folder of a captioner")
    parser.add_argument("--out", help="ONNX export folder to write (default: a temporary folder)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--num-test", type=int, default=500, help="held-out images written and scored")
    parser.add_argument("--seed", type=int, default=0, help="the training data seed (its test split is held out)")
    parser.add_argument("--max-objects", type=int, default=2, help="as the training data module's max_objects")
    parser.add_argument("--repeats", type=int, default=30, help="timed rounds per latency figure")
    parser.add_argument("--batch-repeats", type=int, default=5, help="timed rounds per throughput figure")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cpu = torch.device("cpu")
    work = Path(tempfile.mkdtemp(prefix="vitcap-deploy-"))
    out = Path(args.out) if args.out else work / "onnx"

    start = time.perf_counter()
    export_onnx(args.checkpoint, out, quantize="int8")
    export_s = time.perf_counter() - start

    pt = vitcap.load(out)
    ort32 = load_onnx(out, quantized=False, threads=args.threads)
    ort8 = load_onnx(out, quantized=True, threads=args.threads)
    size = int(pt.preprocessing["img_size"])
    write_shapes(work, seed=args.seed, img_size=size, splits={"test": args.num_test}, max_objects=args.max_objects,
                 tasks=("caption",))  # fmt: skip
    rows = [json.loads(line) for line in (work / "captions" / "captions.jsonl").read_text().splitlines()]
    images = [work / "captions" / "images" / row["image"] for row in rows]
    references = [row["captions"] for row in rows]

    same = {
        "greedy": identity(pt, ort32, images[:64], num_beams=1),
        "beam3": identity(pt, ort32, images[:64], num_beams=3, num_return_sequences=3),
    }

    latency, throughput = {}, {}
    variants = {"torch": pt, "onnx": ort32, "onnx_int8": ort8}
    for name, decoding in (("greedy", {"num_beams": 1}), ("beam3", {"num_beams": 3})):
        cursor = {"i": 0}

        def single(pipeline, decoding=decoding, cursor=cursor):
            def run() -> None:
                cursor["i"] += 1
                pipeline.caption([images[cursor["i"] % len(images)]], **decoding)

            return run

        times = interleaved({k: single(p) for k, p in variants.items()}, args.repeats, 3, cpu)
        latency[name] = {k: round(1000 * median(v), 2) for k, v in times.items()}
        latency[name]["onnx_vs_torch"] = round(median(times["onnx"]) / median(times["torch"]), 3)
        times = interleaved(
            {k: (lambda p=p, d=decoding: p.caption(images[:32], **d)) for k, p in variants.items()},
            args.batch_repeats,
            1,
            cpu,
        )
        throughput[name] = {k: round(32 / median(v), 1) for k, v in times.items()}

    starts: dict[str, list[float]] = {"torch": [], "onnx": []}
    for _ in range(3):  # alternating, so load drift hits both
        for runtime in starts:
            starts[runtime].append(cold_start(out, images[0], runtime, args.threads))
    process_s = {f"{k}_s": round(median(v), 2) for k, v in starts.items()}

    quality = {"bleu4_onnx": bleu4(ort32, images, references), "bleu4_int8": bleu4(ort8, images, references)}
    quality["int8_bleu4_loss"] = round(quality["bleu4_onnx"] - quality["bleu4_int8"], 2)
    sizes = {p.name: round(p.stat().st_size / 1e6, 2) for p in sorted(out.glob("*.onnx"))}
    import onnxruntime

    print(
        json.dumps(
            {
                "bench": "deploy",
                "checkpoint": str(args.checkpoint),
                "decoding": pt.meta.generation,
                "threads": args.threads,
                "export_s": round(export_s, 1),
                "token_identity": same,
                "latency_ms": latency,
                "throughput_img_s_batch32": throughput,
                "one_image_process": process_s,
                "quality_test": {"images": len(images), **quality},
                "onnx_mb": sizes,
                "cpu": cpu_name(),
                "load_avg": load_avg(),
                "torch": torch.__version__,
                "onnxruntime": onnxruntime.__version__,
                "python": platform.python_version(),
            }
        )
    )


if __name__ == "__main__":
    main()
