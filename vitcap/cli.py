"""Command lines: one LightningCLI behind `train.py` / `vitcap fit|validate|test|predict`, and the `vitcap` tools.

`vitcap caption`, `classify`, `evaluate`, `data` and `export` are plain argparse programs mounted here, so every
entry point shares one dispatcher and one error style (a one-line message naming the file or key, exit status 2).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")

USAGE = """usage: vitcap COMMAND [ARGS]

training (LightningCLI; `python train.py COMMAND` is the same):
  fit        train a model from a YAML config:        vitcap fit --config configs/demo/shapes_caption_vit.yaml
  validate   evaluate a checkpoint on the validation split
  test       evaluate a checkpoint on the test split
  predict    write captions / class predictions of a checkpoint to a JSON file

tools:
  caption    caption images with a trained checkpoint
  classify   classify images with a trained checkpoint
  evaluate   score predicted captions against references (BLEU, ROUGE-L, CIDEr-D)
  data       write the built-in synthetic data set to disk (`vitcap data shapes --out DIR`)
  export     write a checkpoint as safetensors weights + a JSON config

`vitcap COMMAND --help` shows a command's options.
"""


def _quiet_lightning() -> None:
    # Lightning advertises a cloud logger on every run; it is noise in a research tool's output.
    import logging
    import warnings

    class _NoTip(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return "litlogger" not in str(record.msg)

    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_NoTip())
    warnings.filterwarnings("ignore", message=r".*args parameter is intended to run from within Python.*")
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")


def default_checkpoints(
    trainer_config: dict[str, Any], extra: list[Any], model: Any, every_n_steps: int | None = None
) -> list[Any]:
    """Best-on-metric and always-fresh last checkpoints in an unversioned folder, unless the config has its own.

    The folder is `{logger save_dir}/{logger name}/checkpoints` (not the per-version log folder), so
    `--ckpt_path last` finds the previous run's `last.ckpt`. `last.ckpt` is its own callback because Lightning's
    `save_last` refreshes it only when the monitored metric improved. With `every_n_steps`, a third callback also
    rewrites `last.ckpt` every that many optimizer steps (mid-epoch; resumes exactly, see `vitcap.reliability`),
    also next to a config's own checkpoints.
    """
    from pathlib import Path

    from lightning.pytorch.callbacks import ModelCheckpoint

    if trainer_config.get("enable_checkpointing") is False or trainer_config.get("fast_dev_run"):
        return []
    present = [c for c in list(trainer_config.get("callbacks") or []) + list(extra) if isinstance(c, ModelCheckpoint)]
    logger = trainer_config.get("logger")
    if present and present[0].dirpath:
        dirpath = Path(present[0].dirpath)
    elif hasattr(logger, "root_dir") and logger.root_dir:
        dirpath = Path(logger.root_dir) / "checkpoints"
    else:
        dirpath = Path(trainer_config.get("default_root_dir") or ".") / "checkpoints"
    steps = []
    if every_n_steps and not any(c._every_n_train_steps for c in present):
        every = ModelCheckpoint(
            dirpath=dirpath, filename="last", every_n_train_steps=every_n_steps, enable_version_counter=False
        )
        steps = [every]
    if present:
        return steps
    monitor, mode = getattr(model, "monitor", "val/loss"), getattr(model, "monitor_mode", "min")
    from vitcap.tasks.base import best_and_last_checkpoints

    return [*best_and_last_checkpoints(monitor, mode, str(dirpath)), *steps]


def _with_checkpoint_io(plugins: Any, config: dict[str, Any]) -> Any:
    """Add vitcap's atomic CheckpointIO to the trainer plugins unless the config brings its own (or runs on XLA)."""
    from lightning.fabric.plugins import CheckpointIO

    from vitcap.reliability import AtomicCheckpointIO

    listed = [] if plugins is None else list(plugins) if isinstance(plugins, (list, tuple)) else [plugins]
    hardware = f"{config.get('accelerator')} {config.get('strategy')}".lower()
    if any(isinstance(p, CheckpointIO) for p in listed) or "xla" in hardware or "tpu" in hardware:
        return plugins
    return [*listed, AtomicCheckpointIO()]


def lightning_cli(args: Sequence[str] | None = None, run: bool = True) -> Any:
    """Run the LightningCLI (fit/validate/test/predict) on `args` (default: sys.argv[1:])."""
    _quiet_lightning()
    from lightning.pytorch import LightningDataModule
    from lightning.pytorch.cli import LightningCLI

    from vitcap.inference import CheckpointError
    from vitcap.reliability import ResumeState, StopOnSignal, VitcapArgumentParser
    from vitcap.tasks import VitcapTask
    from vitcap.tasks.callbacks import JsonPredictionWriter

    class VitcapCLI(LightningCLI):
        def add_arguments_to_parser(self, parser: Any) -> None:
            # The data module knows these before the model is built; linking them keeps YAMLs from repeating them.
            for source, target in [
                ("data.vocab_size", "vocab_size"),
                ("data.pad_id", "pad_id"),
                ("data.bos_id", "bos_id"),
                ("data.eos_id", "eos_id"),
                ("data.tokenizer_json", "tokenizer"),
                ("data.num_classes", "num_classes"),
                ("data.class_names", "class_names"),
                ("data.in_chans", "in_chans"),
                ("data.img_size", "img_size"),
                ("data.preprocessing", "preprocessing"),
            ]:
                parser.link_arguments(source, f"model.init_args.{target}", apply_on="instantiate")

        def _prepare_subcommand_parser(self, klass: type, subcommand: str, **kwargs: Any) -> Any:
            parser = super()._prepare_subcommand_parser(klass, subcommand, **kwargs)
            if subcommand == "predict":
                parser.add_argument(
                    "--output", default="predictions.json", help="JSON file the predictions are written to"
                )
            if subcommand == "fit":
                parser.add_argument(
                    "--save_every_n_steps",
                    type=int | None,
                    default=None,
                    help="also rewrite last.ckpt every N optimizer steps, so a crash loses at most N steps "
                    "(resume mid-epoch with --ckpt_path last)",
                )
            return parser

        def _instantiate_trainer(self, config: dict[str, Any], callbacks: list[Any]) -> Any:
            config = dict(config)
            every = self._get(self.config_init, "save_every_n_steps") if self.subcommand == "fit" else None
            if every is not None and every < 1:
                raise ValueError(f"save_every_n_steps: expected a positive number of steps, got {every}")
            defaults = default_checkpoints(config, callbacks, self.model, every)
            config["callbacks"] = list(config.get("callbacks") or []) + defaults
            if self.subcommand in (None, "fit"):  # None: `run=False`, the caller fits
                # Random states in checkpoints (exact resume) and SIGTERM/SIGINT -> checkpoint + exit 143/130.
                config["callbacks"] += [ResumeState(), StopOnSignal()]
            config["plugins"] = _with_checkpoint_io(config.get("plugins"), config)
            return super()._instantiate_trainer(config, callbacks)

        def _run_subcommand(self, subcommand: str) -> None:
            try:
                super()._run_subcommand(subcommand)
            except CheckpointError as e:
                # A checkpoint the config cannot use (other task, other vocabulary): name the file it came from.
                path = getattr(self.trainer, "ckpt_path", None)
                if path and str(path) not in str(e):
                    raise CheckpointError(f"{path}: {e}") from None
                raise

        def _parse_ckpt_path(self) -> None:
            # Lightning would re-parse the checkpoint's hparams over the config (and swap in its model class);
            # vitcap keeps the YAML authoritative and checks the checkpoint against it in `on_load_checkpoint`.
            return

        def before_predict(self) -> None:
            output = self.config["predict"].get("output", "predictions.json")
            self.trainer.callbacks.append(JsonPredictionWriter(output))

    return VitcapCLI(
        VitcapTask,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        parser_class=VitcapArgumentParser,
        trainer_defaults={
            "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": "runs"}},
        },
        save_config_kwargs={"overwrite": True},
        args=list(args) if args is not None else None,
        run=run,
    )


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def expand_images(inputs: Sequence[str]) -> list[Path]:
    """Files as given; folders expand to their image files (sorted, not recursive)."""
    paths: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            paths.extend(sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES))
        else:
            paths.append(path)
    return paths


def _fail(message: str) -> int:
    print(f"vitcap: error: {message}", file=sys.stderr)
    return 2


def _progress(total: int):
    from rich.progress import Progress

    # Only worth drawing for many images, and only on a terminal (never in piped output or logs).
    return Progress(transient=True, disable=total < 16 or not sys.stderr.isatty(), console=None)


def _load_batches(pipeline: Any, paths: list[Path], batch_size: int):
    """Yield (paths, preprocessed batch, PIL images) of readable images; report unreadable ones on stderr."""
    from vitcap.data.images import ImageLoadError, load_image

    good: list[tuple[Path, Any]] = []
    failed = 0
    for i, path in enumerate(paths):
        try:
            good.append((path, load_image(path)))
        except ImageLoadError as e:
            print(f"vitcap: skipped: {e}", file=sys.stderr)
            failed += 1
        if len(good) == batch_size or (i == len(paths) - 1 and good):
            images = [img for _, img in good]
            yield [p for p, _ in good], images, failed
            good, failed = [], 0
    if failed:
        yield [], [], failed


def _run_on_images(args: Any, kind: str, handle_batch: Callable[[Any, list[Path], list[Any]], None]) -> int:
    """Load the checkpoint, check it is a `kind` model, and feed readable images to `handle_batch` in batches.

    Unreadable images are reported on stderr one line each and the rest still processed; the exit status is 1 if
    any failed, 2 for a checkpoint that cannot be used, 0 otherwise.
    """
    from vitcap.inference import CaptionPipeline, CheckpointError, ClassifyPipeline, load

    try:
        pipeline = load(args.checkpoint, device=args.device)
    except CheckpointError as e:
        return _fail(str(e))
    wanted = {"captioning": CaptionPipeline, "classification": ClassifyPipeline}[kind]
    if not isinstance(pipeline, wanted):
        return _fail(f"{args.checkpoint}: a {pipeline.meta['task']} checkpoint; this command needs a {kind} model")
    paths = expand_images(args.images)
    if not paths:
        return _fail("no images found in " + " ".join(args.images))
    failures = 0
    try:
        with _progress(len(paths)) as progress:
            bar = progress.add_task(kind, total=len(paths))
            for batch_paths, images, failed in _load_batches(pipeline, paths, args.batch_size):
                failures += failed
                progress.advance(bar, len(batch_paths) + failed)
                if batch_paths:
                    handle_batch(pipeline, batch_paths, images)
    except ValueError as e:
        return _fail(str(e))
    if failures:
        print(f"vitcap: {failures} of {len(paths)} images could not be read", file=sys.stderr)
    return 1 if failures else 0


def caption_main(argv: list[str]) -> int:
    """`vitcap caption`: caption images or folders of images with a trained checkpoint."""
    import argparse
    import json

    parser = argparse.ArgumentParser(prog="vitcap caption", description="Caption images with a trained checkpoint.")
    parser.add_argument("images", nargs="+", help="image files or folders of images")
    parser.add_argument("--checkpoint", required=True, help=".ckpt from training or a `vitcap export` folder")
    parser.add_argument("--beams", type=int, default=None, help="beam size (default: the checkpoint's setting)")
    parser.add_argument("--max-length", type=int, default=None, help="maximum caption length in tokens")
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
    args = parser.parse_args(argv)

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

    return _run_on_images(args, "captioning", handle)


def classify_main(argv: list[str]) -> int:
    """`vitcap classify`: class names with probabilities for images or folders of images."""
    import argparse
    import json

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

    return _run_on_images(args, "classification", handle)


def export_main(argv: list[str]) -> int:
    """`vitcap export`: a checkpoint as safetensors weights + JSON config that `vitcap.load` reads without pickle."""
    import argparse

    parser = argparse.ArgumentParser(prog="vitcap export", description=export_main.__doc__)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--out", required=True, help="output folder")
    args = parser.parse_args(argv)
    from vitcap.inference import CheckpointError, export

    try:
        out = export(args.checkpoint, args.out)
    except CheckpointError as e:
        return _fail(str(e))
    print(f"exported {args.checkpoint} to {out}")
    return 0


def _tool(module: str, name: str = "main") -> Callable[[list[str]], int]:
    def run(argv: list[str]) -> int:
        import importlib

        return importlib.import_module(module).__dict__[name](argv)

    return run


def _data_main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: vitcap data shapes --out DIR [--num N] [--seed S] [--img-size P]")
        return 0 if argv else 2
    if argv[0] != "shapes":
        print(f"vitcap data: unknown data set {argv[0]!r}; available: shapes", file=sys.stderr)
        return 2
    from vitcap.data.shapes import shapes_main

    return shapes_main(argv[1:])


TOOLS: dict[str, Callable[[list[str]], int]] = {
    "caption": lambda argv: caption_main(argv),
    "classify": lambda argv: classify_main(argv),
    "evaluate": _tool("vitcap.metrics.evaluate"),
    "data": lambda argv: _data_main(argv),
    "export": lambda argv: export_main(argv),
}


def run_lightning(args: Sequence[str] | None = None) -> int:
    """`lightning_cli` with vitcap's exit statuses: errors a user can fix print one line (`vitcap: error: ...`, 2).

    SIGTERM / SIGINT end the run with 143 / 130 (after saving `last.ckpt` when training; see
    `vitcap.reliability.StopOnSignal`). Any other exception (a bug) keeps its traceback.
    """
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from vitcap.reliability import TrainingInterrupted, interrupt_on_signals, is_user_error, user_error_message
    from vitcap.runtime import keep_freed_memory

    keep_freed_memory()  # CPU training steps reuse freed buffers instead of page-faulting them in (see vitcap.runtime)
    try:
        with interrupt_on_signals():
            lightning_cli(args)
    except TrainingInterrupted as e:
        print(f"vitcap: {e}", file=sys.stderr, flush=True)
        return int(e.code)
    except SIGTERMException:  # Lightning's own SIGTERM stop (before training starts) would exit with status 0
        print("vitcap: interrupted by SIGTERM", file=sys.stderr, flush=True)
        return 143
    except Exception as e:
        if not is_user_error(e):
            raise
        return _fail(user_error_message(e))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `vitcap` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command in LIGHTNING_COMMANDS:
        return run_lightning([command, *rest])
    if command not in TOOLS:
        print(f"vitcap: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    try:
        return TOOLS[command](rest)
    except BrokenPipeError:
        # The reader went away (`vitcap caption DIR | head`): stop quietly, as Unix tools do, instead of a traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


def train_main() -> None:
    """Entry point of `train.py`: the LightningCLI alone, with `run_lightning`'s error handling and exit status."""
    sys.exit(run_lightning())


if __name__ == "__main__":
    sys.exit(main())
