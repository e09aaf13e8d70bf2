"""Self-critical training, end to end: cross-entropy recipe -> SCST stage -> dev metrics, and the cost of a step.

For each data set (flickr8k-mini, the built-in shapes): train the cross-entropy (XE) recipe, run the SCST recipe
from its best checkpoint (`--model.init_from`), then score both best checkpoints on the validation split (Flickr:
the official dev split of `splits.csv`) with the same decoding (beam 3): CIDEr-D, BLEU-4 and the distinct-caption
share (distinct captions / images). Then times XE and SCST training steps on the same model, interleaved (images
per second, and the share of an SCST step spent computing rewards). Prints one JSON line.

    python bench/scst.py --out /tmp/scst_bench
    python bench/scst.py --only shapes --shapes-xe-epochs 4

The runs go through the real command line (`train.py fit|validate`, in process), so the recorded command is the
recipe a user runs, with the overrides below. Sizes are chosen for 2 shared CPU cores (see docs/BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import cpu_name, interleaved, load_avg, machine, median  # noqa: E402

from vitcap.cli.train import lightning_cli  # noqa: E402
from vitcap.tasks.captioning import caption_loss  # noqa: E402
from vitcap.tasks.optim import adamw, param_groups  # noqa: E402
from vitcap.tasks.scst import ScstReward, scst_step  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


def run_cli(args: list[str]):
    return lightning_cli([*args, *QUIET])


def fit(config: str, root: Path, overrides: list[str]) -> tuple[str, float]:
    """Train a recipe; return its best checkpoint and the wall seconds of `fit`."""
    start = time.perf_counter()
    cli = run_cli(["fit", "--config", str(REPO / config), "--trainer.logger.init_args.save_dir", str(root), *overrides])
    seconds = time.perf_counter() - start
    best = cli.trainer.checkpoint_callback.best_model_path
    if not best:
        raise RuntimeError(f"{config}: no best checkpoint under {root}")
    return best, seconds


def train_log(root: Path, name: str) -> list[float]:
    """One logged training column of the run under `root` (CSVLogger's metrics.csv)."""
    import csv

    path = next(root.rglob("metrics.csv"))
    with open(path) as f:
        return [float(r[name]) for r in csv.DictReader(f) if r.get(name)]


def evaluate(config: str, ckpt: str, root: Path, overrides: list[str], beams: int) -> dict[str, float]:
    """Validation-split CIDEr-D / BLEU-4 (x100) and distinct-caption share of a checkpoint, decoded with `beams`."""
    cli = run_cli(
        [
            "validate",
            "--config",
            str(REPO / config),
            "--trainer.logger.init_args.save_dir",
            str(root),
            *overrides,
            "--model.generation",
            json.dumps({"num_beams": beams}),
            "--ckpt_path",
            ckpt,
        ]
    )
    m = cli.trainer.callback_metrics
    return {
        "cider_d": round(float(m["val/cider_d"]), 2),
        "bleu4": round(float(m["val/bleu4"]), 2),
        "distinct_ratio": round(float(m["val/distinct_ratio"]), 4),
        "mean_length": round(float(m["val/mean_length"]), 2),
    }


def step_speed(xe_config: str, scst_config: str, ckpt: str, overrides: list[str], repeats: int) -> dict:
    """XE vs SCST training steps (forward, backward, AdamW) on the same weights, interleaved.

    XE is timed twice: as its recipe trains (one caption per image and row, "pairs"), and with all of an image's
    references in one step ("grouped", `data.group_captions`: as many caption rows per image as SCST's samples).
    """
    common = [*overrides, "--model.init_from", ckpt]
    xe = lightning_cli(["--config", str(REPO / xe_config), *common], run=False)
    grouped = lightning_cli(
        ["--config", str(REPO / xe_config), *common, "--data.group_captions", "true", "--data.batch_size", "32"],
        run=False,
    )
    sc = lightning_cli(["--config", str(REPO / scst_config), *common], run=False)
    tasks = {"xe": xe.model, "xe_grouped": grouped.model, "scst": sc.model}
    batches = {}
    for name, cli in (("xe", xe), ("xe_grouped", grouped), ("scst", sc)):
        cli.datamodule.setup("fit")
        batches[name] = itertools.cycle(list(itertools.islice(iter(cli.datamodule.train_dataloader()), 4)))
    train = sc.datamodule.sources["train"]
    task = tasks["scst"]
    reward = ScstReward(task.tokenizer, train.ids, train.captions, task.scst.include_eos)
    optims = {k: adamw(param_groups(t.model), lr=1e-6, weight_decay=0.0) for k, t in tasks.items()}
    reward_seconds: list[float] = []

    def xe_step(name: str) -> None:
        t, batch = tasks[name], next(batches[name])
        memory = t.model.encode(batch["images"])
        logits = t.model.forward_memory(memory, batch["tokens"][:, :-1], batch["caption_index"])
        loss, _ = caption_loss(logits, batch["tokens"][:, 1:], t.pad_id, t.label_smoothing)
        loss.backward()
        optims[name].step()
        optims[name].zero_grad(set_to_none=True)

    def scst_train_step() -> None:
        t, batch = tasks["scst"], next(batches["scst"])
        out = scst_step(
            t.model,
            t.model.encode(batch["images"]),
            batch["ids"],
            reward,
            t.scst,
            t.generation,
            bos_id=t.bos_id,
            eos_id=t.eos_id,
            pad_id=t.pad_id,
        )
        out.loss.backward()
        optims["scst"].step()
        optims["scst"].zero_grad(set_to_none=True)
        reward_seconds.append(out.reward_seconds)

    for t in tasks.values():
        t.train()
        if t.freeze_encoder is True:  # as `EncoderFreeze` trains it: no encoder gradients, BatchNorm in eval mode
            t.model.encoder.requires_grad_(False)
            for module in t.model.encoder.modules():
                if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                    module.eval()
    steps = {"xe": lambda: xe_step("xe"), "xe_grouped": lambda: xe_step("xe_grouped"), "scst": scst_train_step}
    times = interleaved(steps, repeats, 2, torch.device("cpu"))
    out: dict = {"samples_per_image": task.scst.num_samples, "sample_method": task.scst.sample_method,
                 "scst_encoder_frozen": task.freeze_encoder is True}  # fmt: skip
    ips = {}
    for name in steps:
        images = next(batches[name])["images"].shape[0]
        ips[name] = images / median(times[name])
        out[f"{name}_batch_images"] = images
        out[f"{name}_step_s"] = round(median(times[name]), 4)
        out[f"{name}_images_per_s"] = round(ips[name], 1)
    out["scst_cost_per_image_vs_xe"] = round(ips["xe"] / ips["scst"], 2)
    out["scst_cost_per_image_vs_xe_grouped"] = round(ips["xe_grouped"] / ips["scst"], 2)
    out["reward_share_of_scst_step"] = round(median(reward_seconds[-repeats:]) / median(times["scst"]), 4)
    return out


def run_dataset(name: str, spec: dict, out: Path, beams: int, speed_repeats: int) -> dict:
    root = out / name
    data = spec["data"]
    xe_ckpt, xe_s = fit(spec["xe"], root / "xe", [*data, "--trainer.max_epochs", str(spec["xe_epochs"])])
    scst_args = [*data, "--trainer.max_epochs", str(spec["scst_epochs"]), "--model.init_from", xe_ckpt]
    scst_ckpt, scst_s = fit(spec["scst"], root / "scst", scst_args)
    result: dict = {
        "xe_config": spec["xe"],
        "scst_config": spec["scst"],
        "overrides": data,
        "xe_epochs": spec["xe_epochs"],
        "scst_epochs": spec["scst_epochs"],
        "xe_fit_s": round(xe_s, 1),
        "scst_fit_s": round(scst_s, 1),
        "decoding": f"beam {beams}",
    }
    result["xe"] = evaluate(spec["xe"], xe_ckpt, root / "eval_xe", data, beams)
    result["scst"] = evaluate(spec["xe"], scst_ckpt, root / "eval_scst", data, beams)
    result["cider_d_gain"] = round(result["scst"]["cider_d"] / max(result["xe"]["cider_d"], 1e-9), 3)
    shares = train_log(root / "scst", "train/scst_reward_time_share")
    result["reward_share_of_step_in_training"] = round(median(shares), 4) if shares else None
    result["speed"] = step_speed(spec["xe"], spec["scst"], xe_ckpt, data, speed_repeats)
    result["targets_met"] = {
        "cider_d>=1.10x": result["cider_d_gain"] >= 1.10,
        "distinct_not_lower": result["scst"]["distinct_ratio"] >= result["xe"]["distinct_ratio"],
        "step_cost<=3x": result["speed"]["scst_cost_per_image_vs_xe"] <= 3.0,
    }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="/tmp/scst_bench", help="folder for the runs' logs and checkpoints")
    parser.add_argument("--flickr", default=str(REPO.parent / "shared" / "data" / "flickr8k-mini" / "captions.txt"))
    parser.add_argument("--only", choices=["flickr", "shapes"], default=None)
    parser.add_argument("--flickr-img-size", type=int, default=64, help="XE and SCST image side (recipe: 128)")
    parser.add_argument("--flickr-xe-epochs", type=int, default=12)
    parser.add_argument("--flickr-scst-epochs", type=int, default=4)
    parser.add_argument("--shapes-num-train", type=int, default=2000)
    parser.add_argument("--shapes-xe-epochs", type=int, default=3)
    parser.add_argument("--shapes-scst-epochs", type=int, default=3)
    parser.add_argument("--beams", type=int, default=3)
    parser.add_argument("--speed-repeats", type=int, default=6)
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "2")))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    specs = {
        "flickr": {
            "xe": "configs/flickr8k_caption_vit.yaml",
            "scst": "configs/flickr8k_caption_vit_scst.yaml",
            "data": ["--data.data", args.flickr, "--data.img_size", str(args.flickr_img_size)],
            "xe_epochs": args.flickr_xe_epochs,
            "scst_epochs": args.flickr_scst_epochs,
        },
        "shapes": {
            "xe": "configs/demo/shapes_caption_cnn.yaml",
            "scst": "configs/demo/shapes_caption_scst.yaml",
            "data": ["--data.num_train", str(args.shapes_num_train)],
            "xe_epochs": args.shapes_xe_epochs,
            "scst_epochs": args.shapes_scst_epochs,
        },
    }
    out = Path(args.out)
    record: dict = {
        "bench": "scst",
        "cpu": cpu_name(),
        "threads": args.threads,
        "torch": torch.__version__,
        "load_avg_1m_before": load_avg(),
    }
    start = time.perf_counter()
    for name, spec in specs.items():
        if args.only in (None, name):
            record[name] = run_dataset(name, spec, out, args.beams, args.speed_repeats)
    record["total_s"] = round(time.perf_counter() - start, 1)
    record["load_avg_1m_after"] = load_avg()
    for key, value in machine().items():  # CPU flags and linear backend, so figures compare across machines
        record.setdefault(key, value)
    print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
