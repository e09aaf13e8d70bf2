"""Bulk captioning: `vitcap caption --out results.jsonl` over folders, file lists and tar shards, on every device.

Lightning's predict loop runs one process per device (`--devices N`: DDP processes on CPU or GPUs); in each, a
DataLoader with `--num-workers` workers decodes and preprocesses images in parallel while the model captions
batches. Each process reads its own share of the inputs (every `world`-th file or shard, then every worker's
share of that), so nothing is captioned twice and no process waits for another.

Results are appended as they are produced, one JSON line per image (`image`, `caption`, `score`, and `shard` /
`key` for shard samples), to `results.jsonl.part<rank>` beside `--out`; when the run ends they are moved into
`--out`. Rerunning the same command skips every image already in `--out` or a part file, so a killed run
continues where it stopped. Unreadable images are listed at the end (exit status 1) and retried by a rerun.
Optional outputs: `KEY.txt` sidecars next to image files (`--sidecars`), and copies of input shards with each
sample's caption added as `KEY.caption.txt` (`--out-shards DIR`).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from vitcap.cli import fail
from vitcap.errors import ConfigError, DataError, UserError, one_line

__all__ = ["BulkCaptioner", "BulkImages", "done_ids", "gather_inputs", "run_bulk"]


# ------------------------------------------------------------------------------------------------------ inputs
def gather_inputs(items: list[str], files_from: str | None) -> tuple[list[str], list[str]]:
    """(image files, shard URLs): folders expanded recursively, `--files-from` read, shard patterns expanded."""
    from vitcap.cli.images import expand_images
    from vitcap.data.shards.index import expand_shards, is_shard_spec

    files: list[str] = []
    shards: list[str] = []
    for item in items:
        if is_shard_spec(item):
            shards.extend(expand_shards(item))
        else:
            files.extend(str(p) for p in expand_images([item]))
    if files_from:
        try:
            lines = Path(files_from).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise DataError(f"cannot read the file list ({e})", path=files_from) from None
        files.extend(line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#"))
    return list(dict.fromkeys(files)), list(dict.fromkeys(shards))


def _parts(out: Path) -> list[Path]:
    return sorted(out.parent.glob(out.name + ".part*"))


def _rows(path: Path) -> Iterator[dict[str, Any]]:
    """The complete JSON lines of a results file (a line cut short by a killed run is dropped)."""
    if not path.is_file():
        return
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.endswith("\n"):
                try:
                    yield json.loads(line)
                except ValueError:
                    continue


def _repair(path: Path) -> None:
    """Cut a results file back to its last complete line, so appended lines start on a line of their own."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    data = path.read_bytes()
    if not data.endswith(b"\n"):
        with open(path, "r+b") as f:
            f.truncate(data.rfind(b"\n") + 1)


def done_ids(out: Path) -> set[str]:
    """Images already captioned in `out` and its part files (rows without an `error`)."""
    return {r["image"] for p in [out, *_parts(out)] for r in _rows(p) if "caption" in r and "image" in r}


# ------------------------------------------------------------------------------------------------------- data
class BulkImages(IterableDataset):
    """Preprocessed images of this process's share of the inputs; unreadable ones come as `error` samples.

    Args:
        files: Image files (ids: the path as given).
        shards: Shard URLs (ids: `URL#KEY`).
        done: Ids to skip (already in the results).
        transform: The checkpoint's evaluation preprocessing.
        rank: This process's rank.
        world_size: Number of processes.
    """

    def __init__(self, files: list[str], shards: list[str], done: set[str], transform: Any, rank: int = 0,
                 world_size: int = 1) -> None:  # fmt: skip
        self.files, self.shards, self.done, self.transform = files, shards, done, transform
        self.rank, self.world_size = rank, world_size

    def __iter__(self) -> Iterator[dict[str, Any]]:
        from vitcap.data.images import load_image
        from vitcap.data.shards.reader import SkipSample, iter_shard, sample_image

        info = get_worker_info()
        readers = self.world_size * (info.num_workers if info else 1)
        me = self.rank * (info.num_workers if info else 1) + (info.id if info else 0)
        for path in self.files[me::readers]:
            try:
                yield {"image": self.transform(load_image(path)), "id": path}
            except UserError as e:
                yield {"id": path, "error": one_line(e)}
        by_shard = len(self.shards) >= readers
        index = -1
        for url in self.shards[me::readers] if by_shard else self.shards:
            for sample in iter_shard(url):
                index += 1
                key = f"{url}#{sample['__key__']}"
                if (not by_shard and index % readers != me) or key in self.done:
                    continue
                try:
                    yield {"image": self.transform(sample_image(sample)), "id": key}
                except SkipSample as e:
                    yield {"id": key, "error": str(e)}


def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    good = [s for s in samples if "error" not in s]
    return {
        "images": torch.stack([s["image"] for s in good]) if good else None,  # (B, C, H, W)
        "ids": [s["id"] for s in good],
        "failed": [(s["id"], s["error"]) for s in samples if "error" in s],
    }


class BulkData(L.LightningDataModule):
    """The predict loader of each process, built after the processes started (so it knows its rank)."""

    def __init__(self, files: list[str], shards: list[str], done: set[str], transform: Any, batch_size: int,
                 num_workers: int) -> None:  # fmt: skip
        super().__init__()
        self.inputs = (files, shards, done, transform)
        self.batch_size, self.num_workers = batch_size, num_workers

    def predict_dataloader(self) -> DataLoader:
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)
        dataset = BulkImages(*self.inputs, rank=rank, world_size=world)
        return DataLoader(dataset, batch_size=self.batch_size, num_workers=self.num_workers, collate_fn=collate)


# ------------------------------------------------------------------------------------------------------ model
def cpu_share(processes: int) -> int:
    """Intra-op threads for one of `processes` CPU processes on this machine: its share of the usable cores.

    Lightning sizes the threads of CPU processes only when `OMP_NUM_THREADS` is unset; with it set for one process
    (say to the core count), 2 processes x 2 threads on 2 cores captioned 7x slower than one process.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // processes)


class BulkCaptioner(L.LightningModule):
    """Captions batches with a checkpoint's `CaptionPipeline`, loaded in each process (`setup`), not inherited."""

    def __init__(self, checkpoint: str, decoding: dict[str, Any]) -> None:
        super().__init__()
        self.checkpoint, self.decoding = checkpoint, decoding
        self.pipeline: Any = None

    def setup(self, stage: str) -> None:
        from vitcap.inference import load

        trainer = self.trainer
        if trainer.strategy.root_device.type == "cpu" and trainer.num_devices > 1:
            torch.set_num_threads(cpu_share(trainer.num_devices))
        if self.pipeline is None:
            self.pipeline = load(self.checkpoint, task="captioning")
            self.model = self.pipeline.model  # a submodule, so Lightning moves it to this process's device

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = [{"image": i, "error": e} for i, e in batch["failed"]]
        if batch["images"] is None:
            return rows
        self.pipeline.device = self.device
        for image_id, result in zip(batch["ids"], self.pipeline.caption(batch["images"], **self.decoding)):
            row = {"image": image_id, "caption": result.caption, "score": round(result.score, 5)}
            if "#" in image_id and ".tar" in image_id:
                row["shard"], row["key"] = image_id.rsplit("#", 1)
            if result.alternatives:
                row["alternatives"] = result.alternatives
            rows.append(row)
        return rows


class JsonlWriter(BasePredictionWriter):
    """Appends each batch's rows to this process's part file (flushed), writes sidecars, draws rank 0's progress."""

    def __init__(self, out: Path, total: int, sidecars: bool) -> None:
        super().__init__(write_interval="batch")
        self.out, self.total, self.sidecars = out, total, sidecars
        self._file: Any = None
        self._progress: Any = None

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        part = self.out.with_name(f"{self.out.name}.part{trainer.global_rank}")
        _repair(part)
        self._file = open(part, "a", encoding="utf-8")  # noqa: SIM115 - closed in on_predict_end
        if trainer.global_rank == 0 and sys.stderr.isatty():
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            self._progress = Progress(
                TextColumn("captioning"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                TextColumn("{task.fields[rate]} images/s"),
                TimeRemainingColumn(), transient=True,
            )  # fmt: skip
            self._progress.start()
            self._task = self._progress.add_task("captioning", total=self.total, rate="-")
            self._start = time.perf_counter()

    def write_on_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, prediction: Any,
                           batch_indices: Any, batch: Any, batch_idx: int, dataloader_idx: int) -> None:  # fmt: skip
        for row in prediction:
            self._file.write(json.dumps(row, ensure_ascii=False) + "\n")
            if self.sidecars and "caption" in row and "shard" not in row:
                Path(row["image"]).with_suffix(".txt").write_text(row["caption"] + "\n", encoding="utf-8")
        self._file.flush()
        if self._progress is not None:  # rank 0 sees its own batches: the world's progress is about N times that
            done = self._progress.tasks[0].completed + len(prediction) * trainer.world_size
            rate = done / max(time.perf_counter() - self._start, 1e-9)
            self._progress.update(self._task, completed=min(done, self.total), rate=f"{rate:.1f}")

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._progress is not None:
            self._progress.stop()
        if self._file is not None:
            self._file.close()


# -------------------------------------------------------------------------------------------------- the command
def _merge(out: Path) -> tuple[int, list[tuple[str, str]]]:
    """Move the part files' rows into `out`; returns (captioned rows moved, [(image, error)] of failed ones)."""
    captioned, failed = 0, []
    _repair(out)
    with open(out, "a", encoding="utf-8") as f:
        for part in _parts(out):
            for row in _rows(part):
                if "caption" in row:
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
                    captioned += 1
                else:
                    failed.append((row.get("image", "?"), row.get("error", "?")))
            f.flush()
            os.fsync(f.fileno())
            part.unlink()
    return captioned, failed


def _write_shards(out: Path, shards: list[str], out_dir: str) -> int:
    """Copies of the input shards with each captioned sample's caption added as `KEY.caption.txt`."""
    from webdataset import TarWriter

    from vitcap.data.shards.reader import iter_shard

    captions = {r["image"]: r["caption"] for r in _rows(out) if "caption" in r}
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    written = 0
    for url in shards:
        with TarWriter(str(Path(out_dir) / Path(url).name), mtime=0) as sink:
            for sample in iter_shard(url):
                caption = captions.get(f"{url}#{sample['__key__']}")
                if caption is None:
                    continue
                members = {k: v for k, v in sample.items() if not k.startswith("__") or k == "__key__"}
                sink.write({**members, "caption.txt": caption.encode("utf-8")})
                written += 1
    return written


def _shard_samples(shards: list[str]) -> int:
    """Samples in the shards (for the progress bar); 0 where no index or local scan can tell."""
    from vitcap.data.shards.index import shard_set

    try:
        return shard_set("::".join(shards)).num_samples if shards else 0
    except UserError:
        return 0


def _quiet() -> None:
    """Keep Lightning's start-up chatter (hardware lines, tips, inference warnings) out of a tool's output."""
    import logging
    import warnings

    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.pytorch.accelerators.cuda",
                 "lightning.fabric.utilities.distributed"):  # fmt: skip
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*(infer the batch indices|LeafSpec|does not have many workers).*")


def _strategy(accelerator: str, devices: int) -> str:
    if devices <= 1:
        return "auto"
    # CPU: fork (no re-import, the model is loaded after the fork); GPUs: spawn (CUDA must not be forked).
    return "ddp_fork" if accelerator == "cpu" else "ddp_spawn"


def run_bulk(args: Any, decoding: dict[str, Any]) -> int:
    """`vitcap caption ... --out results.jsonl [--devices N] [--num-workers W]` (see the module docstring)."""
    from vitcap.checkpoint import read_checkpoint
    from vitcap.data.transforms import build_eval_transform

    out = Path(args.out)
    devices = args.devices or 1
    start = time.perf_counter()
    try:
        meta, _ = read_checkpoint(args.checkpoint)  # the model itself is loaded in each process
        if not meta.serves("captioning"):
            raise ConfigError(f"{args.checkpoint}: a {meta.task} checkpoint; this command needs a captioning model")
        if args.save_attention:
            raise ConfigError("--save-attention is for single images, not bulk runs (--out)", key="--save-attention")
        if getattr(args, "runtime", "torch") != "torch":
            raise ConfigError("bulk runs (--out) use the torch runtime", key="--runtime")
        files, shards = gather_inputs(args.images, args.files_from)
        if args.out_shards and not shards:
            raise ConfigError("--out-shards copies input shards; no shard was given", key="--out-shards")
        out.parent.mkdir(parents=True, exist_ok=True)
        done = done_ids(out)
        earlier = sum(1 for part in _parts(out) for r in _rows(part) if "caption" in r)  # from a killed run
        files = [f for f in files if f not in done]
        in_shards = _shard_samples(shards)  # 0: unknown (remote shards without an index)
        left_in_shards = in_shards - sum(1 for d in done if d.rsplit("#", 1)[0] in set(shards))
        total = len(files) + (left_in_shards if in_shards else 0)
        transform = build_eval_transform(meta.preprocessing)
    except UserError as e:
        return fail(one_line(e))
    if not files and (not shards or (in_shards and left_in_shards <= 0)):
        print(f"vitcap: nothing to do: every image is already in {out}", file=sys.stderr)
    else:
        _quiet()
        trainer = L.Trainer(
            accelerator=args.accelerator, devices=devices, strategy=_strategy(args.accelerator, devices),
            logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
            callbacks=[JsonlWriter(out, total, args.sidecars)], use_distributed_sampler=False,
        )  # fmt: skip
        data = BulkData(files, shards, done, transform, args.batch_size, args.num_workers)
        try:
            trainer.predict(BulkCaptioner(args.checkpoint, decoding), datamodule=data, return_predictions=False)
        except UserError as e:
            return fail(one_line(e))
    captioned, failed = _merge(out)
    captioned -= earlier
    seconds = time.perf_counter() - start
    for image, error in failed:
        print(f"vitcap: skipped: {image}: {error}", file=sys.stderr)
    print(f"vitcap: captioned {captioned} images in {seconds:.1f} s ({captioned / max(seconds, 1e-9):.1f} images/s) "
          f"on {devices} {args.accelerator} device(s); results in {out}", file=sys.stderr)  # fmt: skip
    if args.out_shards:
        print(
            f"vitcap: wrote {_write_shards(out, shards, args.out_shards)} samples to {args.out_shards}", file=sys.stderr
        )
    if failed:
        print(f"vitcap: {len(failed)} images could not be read; rerun the command to retry them", file=sys.stderr)
    return 1 if failed else 0
