"""Bulk captioning and shard training throughput. Prints one JSON line.

1. Captions/s of `vitcap caption --out results.jsonl --devices D --num-workers W` (Lightning's predict loop, one
   process per device, decoding workers) against the one-process `vitcap caption DIR` on the same images, both
   as whole commands (start-up included) and as the captioning rate the bulk run reports itself. Runs alternate,
   so a load spike on a shared machine hits both; the ratio is the median of the per-round ratios.
2. Memory: the summed PSS of the bulk run's processes (launcher, device processes, workers), sampled every 0.2 s
   with the rows written so far; the PSS once 10 % / 50 % / 90 % of the images are done shows whether it is flat.
3. Training images/s of the same captioner from tar shards vs from the image folder they were written from
   (same images, transforms, batch size and workers), timed from the 4th training step on, alternating.

The one-process command runs twice per round: as a user runs it (torch's default threads) and with
`OMP_NUM_THREADS=1`, since part of the bulk gain on few cores is processes instead of intra-op threads.

Whole commands include a fixed start-up (imports, model load; for the bulk run also its processes and process
group), which 2,000 small images do not amortise. So both commands also caption the first `--head` images alone,
and the marginal rate, (images - head) / (seconds - seconds on the head), is what a larger corpus would see; the
start-up is what is left of the head run.

    python bench/bulk.py --images 2000 --devices 2 --num-workers 0 --batch-size 16

A tiny captioner (preset `tiny`, 64 px) is trained for one short epoch first; its captions are not the point,
only their cost. Everything is written under `--work` (default: a temporary folder).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import cpu_name, load_avg, machine  # noqa: E402

VITCAP = [sys.executable, "-m", "vitcap.cli.main"]


def tree_pss_mb(pid: int) -> float:
    """Proportional set size of a process and all its descendants (from /proc), in MB.

    PSS, not RSS: forked processes share their parent's pages, which RSS would count once per process.
    """
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                total += next(int(line.split()[1]) for line in f if line.startswith("Pss:"))
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    stack.extend(int(c) for c in f.read().split())
        except (OSError, StopIteration, ValueError):
            continue
    return total / 1024


def clear(out: Path) -> None:
    """Remove a bulk run's results and part files, so the next run captions every image again."""
    for p in [out, *out.parent.glob(out.name + ".part*")]:
        p.unlink(missing_ok=True)


def rows_written(out: Path) -> int:
    return sum(p.read_bytes().count(b"\n") for p in out.parent.glob(out.name + "*") if p.is_file())


def run(cmd: list[str], env: dict[str, str], out: Path | None = None) -> tuple[float, str, list[tuple[int, float]]]:
    """Wall seconds, stderr, and (rows written, PSS MB) samples every 0.2 s when `out` is given."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    samples: list[tuple[int, float]] = []
    if out is not None:

        def sample() -> None:
            while proc.poll() is None:
                samples.append((rows_written(out), tree_pss_mb(proc.pid)))
                time.sleep(0.2)

        threading.Thread(target=sample, daemon=True).start()
    _, err = proc.communicate()
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err[-3000:]}")
    return seconds, err, samples


def reported_rate(stderr: str) -> float:
    """The images/s the bulk run prints in its summary line."""
    line = next(line for line in stderr.splitlines() if "vitcap: captioned" in line)
    return float(line.split("(")[1].split(" images/s")[0])


def train_checkpoint(work: Path, data: Path, env: dict[str, str]) -> Path:
    root = work / "train"
    if list(root.rglob("last.ckpt")):  # a --work folder from an earlier run
        return next(root.rglob("last.ckpt"))
    cmd = [sys.executable, "train.py", "fit", "--seed_everything", "0", "--model", "vitcap.tasks.CaptioningTask",
           "--model.preset", "tiny", "--data", "vitcap.data.CaptionDataModule", "--data.data", str(data),
           "--data.img_size", "64", "--data.batch_size", "32", "--data.max_length", "24", "--trainer.max_steps", "30",
           "--trainer.limit_val_batches", "0", "--trainer.enable_progress_bar", "false",
           "--trainer.default_root_dir", str(root), "--trainer.logger.init_args.save_dir", str(root)]  # fmt: skip
    subprocess.run(cmd, env=env, check=True, capture_output=True, cwd=Path(__file__).resolve().parents[1])
    return next(root.rglob("last.ckpt"))


def training_rate(data: str, steps: int, batch_size: int, workers: int, preset: str) -> float:
    """Training images/s (steps 4..`steps`) of the tiny captioner on `data` (shards or a caption folder)."""
    import lightning as L

    from vitcap.cli.train import lightning_cli

    marks: list[float] = []

    class Clock(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # noqa: ANN001
            marks.append(time.perf_counter())

    with tempfile.TemporaryDirectory() as root:
        args = ["--seed_everything", "0", "--model", "vitcap.tasks.CaptioningTask", "--model.preset", preset,
                "--data", "vitcap.data.CaptionDataModule", "--data.data", data, "--data.img_size", "64",
                "--data.batch_size", str(batch_size), "--data.num_workers", str(workers), "--data.max_length", "24",
                "--trainer.max_steps", str(steps), "--trainer.limit_val_batches", "0", "--trainer.logger", "false",
                "--trainer.enable_checkpointing", "false", "--trainer.enable_progress_bar", "false",
                "--trainer.enable_model_summary", "false", "--trainer.default_root_dir", root]  # fmt: skip
        cli = lightning_cli(args, run=False)
        cli.trainer.callbacks.append(Clock())
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    return (len(marks) - 4) * batch_size / (marks[-1] - marks[3])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--devices", type=int, default=2)
    parser.add_argument("--num-workers", type=int, default=0, help="bulk: decoding workers per process")
    parser.add_argument("--batch-size", type=int, default=16, help="both commands (the one-process default is 16)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--head", type=int, default=100, help="images of the short runs behind the marginal rates")
    parser.add_argument("--train-steps", type=int, default=40)
    parser.add_argument("--train-workers", type=int, default=1)
    parser.add_argument("--train-preset", default="tiny", help="model of the training comparison (toy: data-bound)")
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--parts", default="caption,train", help="caption, train or both (comma-separated)")
    args = parser.parse_args()

    work = args.work or Path(tempfile.mkdtemp(prefix="vitcap-bulk-"))
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    eval_n = max(1, args.images // 10)
    if not (work / "shapes").is_dir():
        subprocess.run([*VITCAP, "data", "shapes", "--out", str(work / "shapes"), "--num", str(args.images),
                        "--num-eval", str(eval_n), "--tasks", "caption"], check=True, env=env)  # fmt: skip
        subprocess.run([*VITCAP, "data", "shards", "--out", str(work / "shards"), "--per-shard", "100",
                        str(work / "shapes" / "captions")], check=True, env=env, capture_output=True)  # fmt: skip
    images = work / "images"  # exactly --images files to caption: the training split's
    if not images.is_dir():
        images.mkdir()
        for p in sorted((work / "shapes" / "captions" / "images").glob("train_*.png")):
            os.link(p, images / p.name)
    ckpt = train_checkpoint(work, work / "shapes" / "captions", env)

    result = {"bench": "bulk", "cpu": cpu_name(), "threads": os.cpu_count(), "images": args.images}
    if "caption" in args.parts:
        result.update(caption_part(args, ckpt, images, work, env))
        print(json.dumps(result), file=sys.stderr, flush=True)  # kept if the training part fails
    if "train" in args.parts:
        result.update(train_part(args, work))
    result["load_avg"] = load_avg()
    for key, value in machine().items():  # CPU flags and linear backend, so figures compare across machines
        result.setdefault(key, value)
    print(json.dumps(result))
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)


def caption_part(args: argparse.Namespace, ckpt: Path, images: Path, work: Path, env: dict[str, str]) -> dict:
    one = [*VITCAP, "caption", "--checkpoint", str(ckpt), "--batch-size", str(args.batch_size), str(images)]
    out = work / "results.jsonl"
    bulk = [*VITCAP, "caption", "--checkpoint", str(ckpt), "--batch-size", str(args.batch_size), str(images),
            "--out", str(out), "--devices", str(args.devices), "--num-workers", str(args.num_workers)]  # fmt: skip
    one_s, one1_s, bulk_s, rates, memory = [], [], [], [], []
    head_dir = work / f"images_head{args.head}"  # the first --head images, for the marginal rates
    if not head_dir.is_dir():
        head_dir.mkdir()
        for p in sorted(images.iterdir())[: args.head]:
            os.link(p, head_dir / p.name)
    one_head, bulk_head = ([str(head_dir) if a == str(images) else a for a in cmd] for cmd in (one, bulk))
    one_head_s, bulk_head_s = [], []
    one_thread = dict(env, OMP_NUM_THREADS="1")
    runs = [("one", one, env), ("one-1-thread", one, one_thread), ("bulk", bulk, env)]
    for round_ in range(args.repeats):
        for name, cmd, cmd_env in runs[round_ % 3 :] + runs[: round_ % 3]:  # the order rotates every round
            if name == "bulk":
                clear(out)
                seconds, err, samples = run(cmd, cmd_env, out)
                assert sum(1 for _ in open(out)) == args.images, "bulk run did not caption every image"
                bulk_s.append(seconds)
                rates.append(reported_rate(err))
                memory.append(samples)
            else:
                (one_s if name == "one" else one1_s).append(run(cmd, cmd_env)[0])
        clear(out)
        pair = [(one_head, one_head_s), (bulk_head, bulk_head_s)]
        for cmd, times in pair if round_ % 2 == 0 else pair[::-1]:
            times.append(run(cmd, env)[0])
            clear(out)
    samples = max(memory, key=len)
    rest = args.images - args.head
    one_marginal = [rest / (a - b) for a, b in zip(one_s, one_head_s)]
    bulk_marginal = [rest / (a - b) for a, b in zip(bulk_s, bulk_head_s)]

    def pss_at(fraction: float) -> float:  # memory once `fraction` of the images were written
        return round(next((m for rows, m in samples if rows >= fraction * args.images), samples[-1][1]), 1)

    return {
        "devices": args.devices, "num_workers": args.num_workers, "batch_size": args.batch_size,
        "one_process_s": [round(s, 2) for s in one_s], "one_process_1_thread_s": [round(s, 2) for s in one1_s],
        "bulk_s": [round(s, 2) for s in bulk_s],
        "one_process_captions_per_s": round(args.images / statistics.median(one_s), 1),
        "one_process_1_thread_captions_per_s": round(args.images / statistics.median(one1_s), 1),
        "bulk_captions_per_s": round(args.images / statistics.median(bulk_s), 1),
        "bulk_reported_captions_per_s": round(statistics.median(rates), 1),
        "head_images": args.head, "one_process_head_s": [round(s, 2) for s in one_head_s],
        "bulk_head_s": [round(s, 2) for s in bulk_head_s],
        "one_process_marginal_captions_per_s": round(statistics.median(one_marginal), 1),
        "bulk_marginal_captions_per_s": round(statistics.median(bulk_marginal), 1),
        "speedup_marginal": round(statistics.median(b / a for a, b in zip(one_marginal, bulk_marginal)), 2),
        "startup_s": {"one_process": round(statistics.median(h - args.head / r for h, r in zip(one_head_s, one_marginal)), 2),
                      "bulk": round(statistics.median(h - args.head / r for h, r in zip(bulk_head_s, bulk_marginal)), 2)},
        "speedup": round(statistics.median(a / b for a, b in zip(one_s, bulk_s)), 2),
        "speedup_vs_1_thread": round(statistics.median(a / b for a, b in zip(one1_s, bulk_s)), 2),
        "bulk_pss_mb_at_images": {f"{int(q * 100)}%": pss_at(q) for q in (0.1, 0.5, 0.9)},
        "bulk_pss_peak_mb": round(max(m for _, m in samples), 1), "caption_load_avg": load_avg(),
    }  # fmt: skip


def train_part(args: argparse.Namespace, work: Path) -> dict:
    shards_rates, folder_rates = [], []
    pair = [("shards", str(work / "shards")), ("folder", str(work / "shapes" / "captions"))]
    for round_ in range(args.repeats):
        for name, data in pair if round_ % 2 == 0 else pair[::-1]:
            rate = training_rate(data, args.train_steps, 32, args.train_workers, args.train_preset)
            (shards_rates if name == "shards" else folder_rates).append(rate)
    return {
        "train_workers": args.train_workers, "train_preset": args.train_preset,
        "train_images_per_s": {"shards": [round(r, 1) for r in shards_rates],
                               "folder": [round(r, 1) for r in folder_rates]},
        "train_shards_over_folder": round(statistics.median(shards_rates) / statistics.median(folder_rates), 2),
    }  # fmt: skip


if __name__ == "__main__":
    main()
