"""What every Lightning task shares: optimisation (`OptimConfig` or injected factories), the monitored metric,
optional compile, and the checkpoint metadata that lets `vitcap.inference` rebuild the model without Lightning.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable

from vitcap import __version__
from vitcap.checkpoint import CHECKPOINT_KEY, CheckpointMeta, meta_of, plain
from vitcap.errors import CheckpointError, ConfigError
from vitcap.layers.gemm import use_onednn_linear
from vitcap.models.registry import EncoderConfig, ModelSpec
from vitcap.tasks.optim import OptimConfig, adamw, param_groups, warmup_cosine
from vitcap.training.callbacks import best_and_last_checkpoints

# Metrics where lower is better; every other logged metric (accuracy, BLEU, CIDEr-D, ...) is better higher.
LOWER_IS_BETTER = ("loss", "ppl")


def monitor_mode(monitor: str) -> str:
    """ "min" for losses and perplexities, "max" for everything else."""
    return "min" if monitor.rsplit("/", 1)[-1] in LOWER_IS_BETTER else "max"


def with_data_image_size(config: EncoderConfig, overrides: Any, preprocessing: dict[str, Any] | None) -> EncoderConfig:
    """The encoder's image size and channels, taken from the data's preprocessing (the one source of both).

    Raises:
        ConfigError: when the config also sets `model.encoder.img_size` / `in_chans` to another value.
    """
    if not preprocessing:
        return config
    resolved = {}
    for name in ("img_size", "in_chans"):
        data_value = preprocessing.get(name)
        if data_value is None:
            continue
        given = overrides.get(name) if isinstance(overrides, dict) else getattr(overrides, name, None)
        if given is not None and int(given) != int(data_value):
            raise ConfigError(
                f"{given} contradicts data.{name} ({data_value}): set it once, on the data",
                key=f"model.encoder.{name}",
            )
        resolved[name] = int(data_value)
    return dataclasses.replace(config, **resolved)


class VitcapTask(pl.LightningModule):
    """Base LightningModule: subclasses build `self.model` from a `ModelSpec` and define the steps.

    Args:
        optim: The default optimiser and schedule (`OptimConfig`: lr, weight_decay, warmup, min_lr_ratio).
        optimizer: Optimizer factory injected from the config (`class_path` + `init_args`), called with the
            parameter groups; replaces the default AdamW.
        scheduler: LR-scheduler factory injected from the config, called with the optimizer and stepped per
            epoch; replaces the default warm-up + cosine schedule (stepped per optimizer step).
        compile: Compile the model with `torch.compile` (off by default; useful on GPU).
        monitor: Metric the best checkpoint is chosen on (minimised for losses and perplexities, else maximised).
    """

    task_name: str = ""

    def __init__(
        self,
        optim: OptimConfig | None = None,
        optimizer: OptimizerCallable | None = None,
        scheduler: LRSchedulerCallable | None = None,
        compile: bool = False,
        monitor: str = "val/loss",
    ) -> None:
        super().__init__()
        self.optim = optim if optim is not None else OptimConfig()
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.compile_model = compile
        self.monitor = monitor
        self.monitor_mode = monitor_mode(monitor)
        self.model: torch.nn.Module
        self.spec: ModelSpec

    # ----------------------------------------------------------------------------------------------- optimisation
    def configure_optimizers(self) -> Any:
        groups = param_groups(self.model)
        if self.optimizer_factory is None:
            optimizer = adamw(groups, lr=self.optim.lr, weight_decay=self.optim.weight_decay)
        else:
            optimizer = self.optimizer_factory(groups)
        if self.scheduler_factory is not None:
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": self.scheduler_factory(optimizer)}}
        total = int(self.trainer.estimated_stepping_batches)
        schedule = warmup_cosine(optimizer, total, warmup=self.optim.warmup, min_lr_ratio=self.optim.min_lr_ratio)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def compile_targets(self) -> list[torch.nn.Module]:
        """The modules `compile=True` compiles in place.

        `nn.Module.compile` compiles only calls of the module itself (`module(...)`), not methods such as
        `encode`, so a task lists the modules its steps call.
        """
        return [self.model]

    def configure_model(self) -> None:
        # Large float32 CPU training matmuls on oneDNN instead of MKL's sgemm (see vitcap.layers.gemm). Parameters
        # and state-dict names are unchanged, and CUDA, autocast, compiled and inference calls keep F.linear.
        use_onednn_linear(self.model)
        if self.compile_model and not getattr(self, "_compiled", False):
            # In-place compile keeps parameter names, so checkpoints stay interchangeable with eager models.
            for module in self.compile_targets():
                module.compile()
            self._compiled = True

    def configure_callbacks(self) -> list[pl.Callback]:
        """Default callbacks: best checkpoint on `monitor`, an always-fresh `last.ckpt`, and LR logging.

        A config that sets its own monitored ModelCheckpoint keeps it (see `best_and_last_checkpoints`).
        """
        callbacks: list[pl.Callback] = []
        trainer = getattr(self, "_trainer", None)
        existing = trainer.callbacks if trainer is not None else []
        has_user_ckpt = any(isinstance(c, ModelCheckpoint) and c.monitor is not None for c in existing)
        if not has_user_ckpt and (trainer is None or trainer.checkpoint_callback is not None):
            callbacks += best_and_last_checkpoints(self.monitor, self.monitor_mode)
        if trainer is not None and trainer.logger is not None:
            if not any(isinstance(c, LearningRateMonitor) for c in existing):
                callbacks.append(LearningRateMonitor(logging_interval="step"))
        return callbacks

    # ------------------------------------------------------------------------------------------------- checkpoints
    def checkpoint_meta(self) -> CheckpointMeta:
        """What `vitcap.load` needs besides the weights; subclasses add tokenizer / class names."""
        return CheckpointMeta(task=self.task_name, model=self.spec.to_dict(), version=__version__)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Lightning stores hparams as AttributeDict; plain dicts keep `torch.load(weights_only=True)` working.
        for key in ("hyper_parameters", "datamodule_hyper_parameters"):
            if key in checkpoint:
                checkpoint[key] = plain(checkpoint[key])
        meta = self.checkpoint_meta()
        trainer = getattr(self, "_trainer", None)
        if trainer is not None:
            metrics = trainer.callback_metrics
            meta.metrics = {
                k: float(v) for k, v in metrics.items() if k.startswith(("val/", "test/")) and v.numel() == 1
            }
        checkpoint[CHECKPOINT_KEY] = meta.to_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # A CheckpointError is printed by the CLI as one line prefixed with the checkpoint's path.
        meta = meta_of(checkpoint, "checkpoint")
        if meta.task != self.task_name:
            raise CheckpointError(
                f"checkpoint was trained for the {meta.task!r} task, but the config builds a "
                f"{self.task_name!r} model: use a {meta.task} config or checkpoint"
            )
        self.check_compatible(meta)

    def check_compatible(self, meta: CheckpointMeta) -> None:
        """Raise `CheckpointError` when a checkpoint's vocabulary / classes differ from what the data module built."""
