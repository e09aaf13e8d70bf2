"""Transfer between tasks on the built-in shapes: three routes to a ViT captioner at equal captioning steps.

(a) scratch: `configs/demo/shapes_caption_vit.yaml` from random weights;
(b) classify, then caption: `configs/demo/shapes_classify_vit_scenes.yaml` (one- and two-object scenes, 60 classes
    naming the first-named object's size, colour and shape; `--classifier` picks another) trained first, its best
    checkpoint seeding the captioner's encoder (`--model.init_from`), frozen for the first epoch and then unfrozen
    with its own warm-up (`--model.freeze_encoder 1`); `classifier_init` runs (a)'s steps, `classifier_init_half`
    half of them on its own (shorter) schedule;
(c) joint: `configs/demo/shapes_joint_vit.yaml`, one encoder trained for captions and classes at once.

Every captioning route runs the same optimizer steps (the configs' schedule, or `--steps`), validates every
`--val-every` steps (200 validation images, greedy), and is scored on the 500 test images from its best
checkpoint. The JSON line reports per route: test BLEU-4 / CIDEr-D, the validation BLEU-4 curve, the first step at
which the validation BLEU-4 reached (a)'s best (the issue's target: a (b) route gets there in at most half the steps
(a) needed), the fit wall time, and the training compute (optimizer steps x
FLOPs per step, torch's FLOP counter; (b) includes its classifier stage), against the budget the issue set for the
ViT captioner: the CNN demo's compute when it was filed (54.3 TFLOP: 64 px, resnet18 to layer2, 1,564 steps of 64;
the demo now needs 13.3).

    python bench/transfer.py --out /tmp/transfer
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import cpu_name, load_avg, machine  # noqa: E402
from demo_compute import measure  # noqa: E402
from scst import fit  # noqa: E402  (train a recipe: its best checkpoint and the wall seconds of `fit`)

from vitcap.cli.train import lightning_cli  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
CLASSIFY = "configs/demo/shapes_classify_vit_scenes.yaml"
CNN_DEMO = "configs/demo/shapes_caption_cnn.yaml"
BUDGET_TFLOP = 54.3  # the CNN demo's training compute when the transfer issue was filed (bench/demo_compute.py)
ROUTES = {
    "scratch": ("configs/demo/shapes_caption_vit.yaml", []),
    "classifier_init": ("configs/demo/shapes_caption_vit.yaml", ["--model.freeze_encoder", "1"]),
    "classifier_init_half": ("configs/demo/shapes_caption_vit.yaml", ["--model.freeze_encoder", "1"]),  # half the steps
    "joint": ("configs/demo/shapes_joint_vit.yaml", []),
}


def test(config: str, ckpt: str, root: Path, overrides: list[str]) -> dict[str, float]:
    cli = lightning_cli(
        [
            "test",
            "--config",
            str(REPO / config),
            "--trainer.logger.init_args.save_dir",
            str(root / "test"),
            *overrides,
            "--ckpt_path",
            ckpt,
            *QUIET,
        ]
    )
    m = cli.trainer.callback_metrics
    out = {k.split("/", 1)[1]: round(float(m[k]), 2) for k in ("test/bleu4", "test/cider_d") if k in m}
    if "test/acc" in m:
        out["acc"] = round(float(m["test/acc"]), 4)
    return out


def val_curve(root: Path, metric: str = "val/bleu4") -> list[tuple[int, float]]:
    """(optimizer step, value) of every validation of the run under `root` (CSVLogger's metrics.csv)."""
    path = next(p for p in root.rglob("metrics.csv") if "test" not in p.parts)
    with open(path) as f:
        return [(int(r["step"]), round(float(r[metric]), 2)) for r in csv.DictReader(f) if r.get(metric)]


def first_step_reaching(curve: list[tuple[int, float]], target: float) -> int | None:
    return next((step + 1 for step, value in curve if value >= target), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("/tmp/vitcap_transfer"))
    parser.add_argument("--steps", type=int, default=None, help="captioning optimizer steps (default: the configs')")
    parser.add_argument("--val-every", type=int, default=98, help="optimizer steps between validations")
    parser.add_argument("--routes", nargs="+", default=list(ROUTES), choices=list(ROUTES))
    parser.add_argument("--classifier", default=CLASSIFY, help="config of route (b)'s classifier stage")
    parser.add_argument("--seed", type=int, default=None, help="seed_everything of every stage (default: configs')")
    parser.add_argument("--classify-args", default="", help="overrides of the classifier stage, one string")
    args = parser.parse_args()
    seed = ["--seed_everything", str(args.seed)] if args.seed is not None else []
    args.classify_args = [*seed, *args.classify_args.split()]
    start = time.perf_counter()
    result: dict = {"bench": "transfer", "cpu": cpu_name(), "threads": torch.get_num_threads(),
                    "torch": torch.__version__, "load_avg_1m_before": load_avg()}  # fmt: skip
    steps = ["--trainer.max_steps", str(args.steps)] if args.steps else []
    common = [*seed, *steps, "--trainer.val_check_interval", str(args.val_every)]
    cnn = measure(["--config", str(REPO / CNN_DEMO)])
    result["cnn_demo_tflop"] = round(cnn["total_pflop"] * 1000, 2)
    result["budget_tflop"] = BUDGET_TFLOP

    scratch_steps = measure(["--config", str(REPO / ROUTES["scratch"][0]), *steps])["optimizer_steps"]
    classifier = None
    if any(r.startswith("classifier_init") for r in args.routes):
        root = args.out / "classifier"
        best, seconds = fit(args.classifier, root, args.classify_args)
        seconds = round(seconds, 1)
        flops = measure(["--config", str(REPO / args.classifier), *args.classify_args])
        cli = lightning_cli(
            [
                "validate",
                "--config",
                str(REPO / args.classifier),
                "--trainer.logger",
                "false",
                *args.classify_args,
                "--ckpt_path",
                best,
                *QUIET,
            ]
        )
        classifier = best
        result["classifier_stage"] = {
            "config": args.classifier, "overrides": args.classify_args, "fit_s": seconds,
            "val_acc": round(float(cli.trainer.callback_metrics["val/acc"]), 4),
            "steps": flops["optimizer_steps"], "tflop": round(flops["total_pflop"] * 1000, 2),
        }  # fmt: skip

    routes = {}
    for name in args.routes:
        config, extra = ROUTES[name]
        overrides = [*common, *extra]
        if name == "classifier_init_half":  # a schedule of its own over half of (a)'s steps, annealed by then
            overrides += ["--trainer.max_steps", str(scratch_steps // 2)]
        if name.startswith("classifier_init"):
            overrides += ["--model.init_from", classifier]
        root = args.out / name
        best, seconds = fit(config, root, overrides)
        seconds = round(seconds, 1)
        flops = measure(["--config", str(REPO / config), *overrides])
        tflop = flops["total_pflop"] * 1000
        if name.startswith("classifier_init"):
            tflop += result["classifier_stage"]["tflop"]
        routes[name] = {
            "config": config, "overrides": [o if o != classifier else "CLASSIFIER_BEST" for o in overrides],
            "steps": flops["optimizer_steps"], "gflop_per_step": flops["gflop_per_step"],
            "tflop_total": round(tflop, 2), "fit_s": seconds, "val_bleu4": val_curve(root),
            "test": test(config, best, root, [*common, *extra]),
        }  # fmt: skip
    result["routes"] = routes
    if "scratch" in routes:
        bar = max(v for _, v in routes["scratch"]["val_bleu4"])
        result["scratch_best_val_bleu4"] = bar
        for r in routes.values():
            r["steps_to_scratch_best_val"] = first_step_reaching(r["val_bleu4"], bar)
        steps_b = [r["steps_to_scratch_best_val"] for n, r in routes.items() if n.startswith("classifier_init")]
        if steps_b:  # the target: half the steps (a) needed for its best
            first = min((s for s in steps_b if s is not None), default=None)
            result["classifier_init_steps_to_scratch_best_val"] = first
            half = routes["scratch"]["steps_to_scratch_best_val"] / 2
            result["target_classifier_init_half_steps"] = first is not None and first <= half
    best = max(routes.items(), key=lambda kv: kv[1]["test"].get("bleu4", 0.0))
    result["best_route"] = best[0]
    result["target_vit_bleu4_90_within_cnn_compute"] = bool(
        best[1]["test"].get("bleu4", 0) >= 90 and best[1]["tflop_total"] <= BUDGET_TFLOP
    )
    result["total_s"] = round(time.perf_counter() - start, 1)
    result["load_avg_1m_after"] = load_avg()
    for key, value in machine().items():  # CPU flags and linear backend, so figures compare across machines
        result.setdefault(key, value)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
