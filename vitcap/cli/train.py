"""The training command line: one LightningCLI behind `train.py` and `vitcap fit|validate|test|predict`.

The data module knows what the model needs before it is built (tokenizer, caption length, class names,
preprocessing); `VitcapCLI` links those, so configs never repeat them. It also adds vitcap's checkpoint defaults
(best + always-fresh last), crash-safe checkpoint files, exact resume and signal handling.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vitcap.cli.errors import VitcapArgumentParser, fail, settings_errors, user_error, user_error_message
from vitcap.errors import CheckpointError

__all__ = ["DATA_LINKS", "default_checkpoints", "lightning_cli", "run_lightning"]

# Data-module attribute -> task argument: the one link by which what the data decides reaches the model.
DATA_LINKS = {
    "tokenizer_json": "tokenizer",  # vocabulary and special ids
    "max_length": "max_length",  # caption rows, BOS and EOS included
    "class_names": "class_names",  # their number is the number of classes
    "preprocessing": "preprocessing",  # image size, channels, normalisation
}


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
    rewrites `last.ckpt` every that many optimizer steps (mid-epoch; resumes exactly, see `vitcap.training.callbacks`),
    also next to a config's own checkpoints.
    """

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
    from vitcap.training.callbacks import best_and_last_checkpoints

    return [*best_and_last_checkpoints(monitor, mode, str(dirpath)), *steps]


def _with_checkpoint_io(plugins: Any, config: dict[str, Any]) -> Any:
    """Add vitcap's atomic CheckpointIO to the trainer plugins unless the config brings its own (or runs on XLA)."""
    from lightning.fabric.plugins import CheckpointIO

    from vitcap.training.checkpoint_io import AtomicCheckpointIO

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

    from vitcap.tasks import VitcapTask
    from vitcap.training.callbacks import JsonPredictionWriter, ResumeState, StopOnSignal

    class VitcapCLI(LightningCLI):
        def add_arguments_to_parser(self, parser: Any) -> None:
            # The data module knows these before the model is built; linking them keeps YAMLs from repeating them.
            for source, target in DATA_LINKS.items():
                parser.link_arguments(f"data.{source}", f"model.init_args.{target}", apply_on="instantiate")

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
            with settings_errors("trainer"):
                trainer = super()._instantiate_trainer(config, callbacks)
            # Sizing the loops against the data (val_check_interval past the epoch, ...) checks settings too.
            setup_data = trainer.fit_loop.setup_data

            def checked_setup_data() -> None:
                with settings_errors("trainer"):
                    setup_data()

            trainer.fit_loop.setup_data = checked_setup_data
            return trainer

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


def run_lightning(args: Sequence[str] | None = None) -> int:
    """`lightning_cli` with vitcap's exit statuses: errors a user can fix print one line (`vitcap: error: ...`, 2).

    SIGTERM / SIGINT end the run with 143 / 130 (after saving `last.ckpt` when training; see
    `vitcap.training.callbacks.StopOnSignal`). Any other exception (a bug) keeps its traceback.
    """
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from vitcap.runtime import keep_freed_memory
    from vitcap.training.signals import TrainingInterrupted, interrupt_on_signals

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
        if user_error(e) is None:
            raise
        return fail(user_error_message(e))
    return 0


def train_main() -> None:
    """Entry point of `train.py`: the LightningCLI alone, with `run_lightning`'s error handling and exit status."""
    sys.exit(run_lightning())
