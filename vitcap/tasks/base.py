"""What both Lightning tasks share: optimizer/scheduler injection, optional compile, and checkpoint hygiene."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable

from vitcap import __version__
from vitcap.layers.linear import use_onednn_linear
from vitcap.tasks.optim import adamw, param_groups, warmup_cosine

CHECKPOINT_KEY = "vitcap"


def plain(value: Any) -> Any:
    """Convert config values to plain Python containers so checkpoints load with `weights_only=True`."""
    if isinstance(value, dict):  # also AttributeDict and jsonargparse Namespace-derived dicts
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if hasattr(value, "as_dict"):  # jsonargparse Namespace
        return plain(value.as_dict())
    if hasattr(value, "__dataclass_fields__"):
        import dataclasses

        return plain(dataclasses.asdict(value))
    return str(value)


def best_and_last_checkpoints(monitor: str, mode: str, dirpath: str | None = None) -> list[ModelCheckpoint]:
    """`best.ckpt` on `monitor` and a `last.ckpt` rewritten every epoch, both without version suffixes.

    `last.ckpt` is its own callback because Lightning's `save_last` only refreshes it when the monitored
    checkpoint improved, which would make `--ckpt_path last` resume from a stale epoch.
    """
    return [
        ModelCheckpoint(dirpath=dirpath, filename="best", monitor=monitor, mode=mode, enable_version_counter=False),
        ModelCheckpoint(dirpath=dirpath, filename="last", save_top_k=1, enable_version_counter=False),
    ]


class VitcapTask(pl.LightningModule):
    """Base LightningModule: subclasses build `self.model` and define the steps.

    Args:
        lr: Peak learning rate of the default AdamW optimizer (ignored when `optimizer` is given).
        weight_decay: Weight decay of the default optimizer (never applied to norms, biases, embeddings, tokens).
        warmup: Warm-up of the default cosine schedule: fraction of all steps when < 1, else a number of steps.
        min_lr_ratio: Final learning rate of the default cosine schedule, as a fraction of `lr`.
        optimizer: Optimizer factory injected from the config (`class_path` + `init_args`); called with the
            parameter groups.
        scheduler: LR-scheduler factory injected from the config; called with the optimizer, stepped per epoch.
            None: the default warm-up + cosine, stepped per optimizer step.
        compile: Compile the model with `torch.compile` (off by default; useful on GPU).
        monitor: Metric the default ModelCheckpoint selects the best checkpoint on.
        monitor_mode: "max" or "min" for `monitor`.
    """

    task_name: str = ""

    def __init__(
        self,
        lr: float = 1e-3,
        weight_decay: float = 0.05,
        warmup: float = 0.05,
        min_lr_ratio: float = 0.01,
        optimizer: OptimizerCallable | None = None,
        scheduler: LRSchedulerCallable | None = None,
        compile: bool = False,
        monitor: str = "val/loss",
        monitor_mode: str = "min",
    ) -> None:
        super().__init__()
        if monitor_mode not in ("min", "max"):
            raise ValueError(f"model.monitor_mode: expected 'min' or 'max', got {monitor_mode!r}")
        self.lr = lr
        self.weight_decay = weight_decay
        self.warmup = warmup
        self.min_lr_ratio = min_lr_ratio
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.compile_model = compile
        self.monitor = monitor
        self.monitor_mode = monitor_mode
        self.model: torch.nn.Module

    # ----------------------------------------------------------------------------------------------- optimisation
    def configure_optimizers(self) -> Any:
        groups = param_groups(self.model)
        if self.optimizer_factory is None:
            optimizer = adamw(groups, lr=self.lr, weight_decay=self.weight_decay)
        else:
            optimizer = self.optimizer_factory(groups)
        if self.scheduler_factory is not None:
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": self.scheduler_factory(optimizer)}}
        total = int(self.trainer.estimated_stepping_batches)
        schedule = warmup_cosine(optimizer, total, warmup=self.warmup, min_lr_ratio=self.min_lr_ratio)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def compile_targets(self) -> list[torch.nn.Module]:
        """The modules `compile=True` compiles in place.

        `nn.Module.compile` compiles only calls of the module itself (`module(...)`), not methods such as
        `encode`, so a task lists the modules its steps call.
        """
        return [self.model]

    def configure_model(self) -> None:
        # Large float32 CPU training matmuls on oneDNN instead of MKL's sgemm (~1.4x faster steps on the AMD
        # development CPU; see vitcap.layers.linear). Parameters and state-dict names are unchanged, and CUDA,
        # autocast, compiled and inference calls keep F.linear.
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
    def checkpoint_meta(self) -> dict[str, Any]:
        """What `vitcap.load` needs besides the weights; subclasses add tokenizer / class names."""
        return {"task": self.task_name, "version": __version__}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Lightning stores hparams as AttributeDict; plain dicts keep `torch.load(weights_only=True)` working.
        for key in ("hyper_parameters", "datamodule_hyper_parameters"):
            if key in checkpoint:
                checkpoint[key] = plain(checkpoint[key])
        checkpoint[CHECKPOINT_KEY] = plain(self.checkpoint_meta())

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # CheckpointError (a ValueError): the CLI prints it as one line prefixed with the checkpoint's path.
        from vitcap.inference import CheckpointError

        meta = checkpoint.get(CHECKPOINT_KEY)
        if meta is None:
            raise CheckpointError("checkpoint was not written by vitcap (no 'vitcap' metadata)")
        if meta.get("task") != self.task_name:
            raise CheckpointError(
                f"checkpoint was trained for the {meta.get('task')!r} task, but the config builds a "
                f"{self.task_name!r} model: use a {meta.get('task')} config or checkpoint"
            )
        try:
            self.check_compatible(meta)
        except ValueError as e:
            raise CheckpointError(str(e)) from None

    def check_compatible(self, meta: dict[str, Any]) -> None:
        """Raise a clear error when a checkpoint's vocabulary / classes differ from what the data module built."""
