"""What every Lightning task shares: optimisation (`OptimConfig` or injected factories), the monitored metric,
optional compile, and the checkpoint metadata that lets `vitcap.inference` rebuild the model without Lightning.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint, Timer
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.plugins.precision import MixedPrecision
from lightning.pytorch.utilities import rank_zero_info

from vitcap import __version__
from vitcap.checkpoint import CHECKPOINT_KEY, CheckpointMeta, meta_of, plain, read_checkpoint
from vitcap.errors import CheckpointError, ConfigError
from vitcap.models.registry import EncoderConfig, ModelSpec
from vitcap.tasks.finetune import EncoderFreeze, encoder_warmup, param_groups_for, resize_pos_embed
from vitcap.tasks.init_from import LoadReport, load_matching
from vitcap.tasks.optim import OptimConfig, adamw, warmup_cosine
from vitcap.training.callbacks import best_and_last_checkpoints
from vitcap.training.linear_backend import apply_linear_backend, choose_linear_backend

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
        init_from: A vitcap checkpoint (`.ckpt` or export folder) whose weights initialise the model: weights
            only, with a fresh optimiser, schedule and epoch counter (`--ckpt_path` resumes a run instead). A
            checkpoint of the same task must match the architecture; one of another task (a classifier for a
            captioner, or the reverse) gives the encoder only, and what the tasks share beyond it when they match (a
            joint model's decoder for a captioner of the same vocabulary, a classifier's head for a joint model of
            the same classes). ViT position embeddings are resampled when the
            image size differs. Subclasses load it at the end of `__init__` (`load_init_from`).
        freeze_encoder: `true` trains with the encoder frozen (its BatchNorm in eval mode), a number N unfreezes
            it at the start of epoch N (its learning rate then warms up again), `false` trains everything.
    """

    task_name: str = ""

    def __init__(
        self,
        optim: OptimConfig | None = None,
        optimizer: OptimizerCallable | None = None,
        scheduler: LRSchedulerCallable | None = None,
        compile: bool = False,
        monitor: str = "val/loss",
        init_from: str | None = None,
        freeze_encoder: bool | int = False,
    ) -> None:
        super().__init__()
        if not isinstance(freeze_encoder, bool) and freeze_encoder < 1:
            raise ConfigError(
                f"expected true, false or an epoch >= 1, got {freeze_encoder}", key="model.freeze_encoder"
            )
        self.optim = optim if optim is not None else OptimConfig()
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.compile_model = compile
        self.monitor = monitor
        self.monitor_mode = monitor_mode(monitor)
        self._budget_spent = 0.0  # fraction of trainer.max_time spent (budgeted schedules)
        self.init_from = init_from
        self.freeze_encoder = freeze_encoder
        self.encoder_frozen = False  # set by EncoderFreeze while the encoder is frozen
        self.encoder_unfrozen_step: int | None = None
        self.model: torch.nn.Module
        self.spec: ModelSpec

    # ----------------------------------------------------------------------------------------------- optimisation
    def configure_optimizers(self) -> Any:
        opt = self.optim
        groups = param_groups_for(self.model, opt.weight_decay, opt.encoder_lr_mult, opt.layer_decay)
        if self.freeze_encoder is True:  # a frozen encoder never trains: keep it out of the optimizer
            groups = [g for g in groups if not g["name"].startswith("encoder")]
        for group in groups:  # the group's own rate; the schedule multiplies it
            group["lr"] = opt.lr * group.pop("lr_scale")
        if self.optimizer_factory is None:
            # Lightning's mixed-precision plugin refuses to clip the gradients of a fused optimizer (it would unscale
            # them itself), so clipping under bf16/16-mixed takes the unfused AdamW: same update, slower kernel.
            plugin = self.trainer.precision_plugin
            clipped_amp = bool(self.trainer.gradient_clip_val) and isinstance(plugin, MixedPrecision)
            optimizer = adamw(groups, lr=self.optim.lr, weight_decay=self.optim.weight_decay, fused=not clipped_amp)
        else:
            optimizer = self.optimizer_factory(groups)
        if self.scheduler_factory is not None:
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": self.scheduler_factory(optimizer)}}
        total = int(self.trainer.estimated_stepping_batches)
        budget = (lambda: self._budget_spent) if self._time_budget() is not None else None
        # An encoder that unfreezes later warms up again from its unfreeze step (zero before it).
        delayed = not isinstance(self.freeze_encoder, bool)
        scales = [
            (lambda: encoder_warmup(self, total, opt.warmup))
            if delayed and g.get("name", "").startswith("encoder")
            else None
            for g in optimizer.param_groups
        ]
        schedule = warmup_cosine(
            optimizer, total, warmup=opt.warmup, min_lr_ratio=opt.min_lr_ratio, budget=budget, scales=scales
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def _time_budget(self) -> Timer | None:
        """Lightning's Timer when the run has a time budget (`trainer.max_time`), else None."""
        trainer = getattr(self, "_trainer", None)
        timers = [c for c in (trainer.callbacks if trainer else []) if isinstance(c, Timer)]
        return timers[0] if timers and timers[0].time_remaining() is not None else None

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        # A budgeted schedule follows the fraction of `max_time` spent. Every process must use the same value (else
        # their learning rates, and so their weights, drift apart): rank 0 measures, and under DDP it is
        # broadcast every 10 steps rather than at every step.
        timer = self._time_budget()
        if timer is None or (self.trainer.world_size > 1 and self.global_step % 10 and self._budget_spent):
            return
        elapsed = timer.time_elapsed()
        spent = elapsed / max(1e-9, elapsed + timer.time_remaining())
        self._budget_spent = float(self.trainer.strategy.broadcast(spent, src=0))

    def compile_targets(self) -> list[torch.nn.Module]:
        """The modules `compile=True` compiles in place.

        `nn.Module.compile` compiles only calls of the module itself (`module(...)`), not methods such as
        `encode`, so a task lists the modules its steps call.
        """
        return [self.model]

    def configure_model(self) -> None:
        if self._trains_on_cpu():
            self._choose_linear_backend()
        if self.compile_model and not getattr(self, "_compiled", False):
            # In-place compile keeps parameter names, so checkpoints stay interchangeable with eager models.
            for module in self.compile_targets():
                module.compile()
            self._compiled = True

    def _trains_on_cpu(self) -> bool:
        trainer = getattr(self, "_trainer", None)
        return (
            trainer is not None
            and trainer.state.fn == "fit"
            and trainer.strategy.root_device.type == "cpu"
            and not self.compile_model
        )

    def _choose_linear_backend(self) -> None:
        """Float32 CPU training linears on the faster of F.linear and oneDNN, measured on this machine (rank 0)."""
        trainer = self.trainer
        batch_size = int(getattr(trainer.datamodule, "batch_size", 0) or 32)
        choice = None
        if trainer.is_global_zero:
            choice = choose_linear_backend(self.model, self.training_example(batch_size))
            rank_zero_info(f"vitcap: {choice.describe()}")
        backend = trainer.strategy.broadcast(choice.backend if choice else None, src=0)
        apply_linear_backend(self.model, backend)
        self.linear_backend = backend

    def training_example(self, batch_size: int) -> tuple[torch.Tensor, ...]:
        """Model inputs shaped like one training batch (random values), for timing the linear backends."""
        example = self.example_input_array
        example = example if isinstance(example, tuple) else (example,)
        return tuple(x.expand(batch_size, *x.shape[1:]).contiguous() for x in example)

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
        if self.freeze_encoder is not False:
            callbacks.append(EncoderFreeze(None if self.freeze_encoder is True else int(self.freeze_encoder)))
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

    def load_init_from(self) -> LoadReport | None:
        """Copy the weights of the `init_from` checkpoint into `self.model` (nothing when it is unset).

        Raises:
            CheckpointError: naming the file, when it is not a vitcap checkpoint, was trained for another task or
                vocabulary, or does not fit the model (the first mismatching tensor is named).
        """
        if not self.init_from:
            return None
        path = str(self.init_from)
        try:
            meta, state = read_checkpoint(path)
            resized = resize_pos_embed(state, self.model)  # an encoder trained at another image size
            if meta.task == self.task_name:
                self.check_compatible(meta)
                report = load_matching(self.model, state, path)
            else:  # another task's checkpoint (a classifier for a captioner, ...): the parts both models have
                report = load_matching(self.model, state, path, only=self.shared_parts(meta))
            if resized:
                report.notes.append("position embeddings resampled to this image size")
        except CheckpointError as e:  # one line: "model.init_from: PATH: what does not fit"
            raise CheckpointError(str(e), path=e.path or path, key="model.init_from") from None
        rank_zero_info(f"model.init_from: {report.summary()}")
        return report

    def shared_parts(self, meta: CheckpointMeta) -> tuple[str, ...]:
        """Name prefixes of what a checkpoint of another task gives this model: the encoder (subclasses add the
        decoder or head when the other model has one for the same vocabulary or classes)."""
        return ("encoder.",)

    def check_compatible(self, meta: CheckpointMeta) -> None:
        """Raise `CheckpointError` when a checkpoint's vocabulary / classes differ from what the data module built."""
