"""Optimisation shared by every task: `OptimConfig`, parameter groups and the default warm-up + cosine schedule."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, LRScheduler

from vitcap.errors import ConfigError

OptimizerFactory = Callable[[Iterable], Optimizer]
SchedulerFactory = Callable[[Optimizer], LRScheduler]


@dataclass
class OptimConfig:
    """The default optimiser (fused AdamW) and schedule (linear warm-up, then cosine decay), stepped per batch.

    A config that injects its own `optimizer` / `scheduler` (`class_path` + `init_args`) replaces them; `lr` and
    `weight_decay` then come from that optimizer's own arguments.

    Attributes:
        lr: Peak learning rate.
        weight_decay: Decoupled weight decay (never applied to norms, biases, embeddings, position tables, tokens).
        warmup: Warm-up length: a fraction of all optimizer steps when < 1, else a number of steps.
        min_lr_ratio: Final learning rate of the cosine decay, as a fraction of `lr`.
        encoder_lr_mult: The encoder's learning rate as a multiple of `lr` (transfer learning: e.g. 0.1).
        layer_decay: Layer-wise learning-rate decay of a ViT encoder (timm's `param_groups_layer_decay`): block
            `i` of `depth` learns at `layer_decay ** (depth + 1 - i)` of the encoder's rate, the patch embedding
            at the smallest. None: one rate for the whole encoder.
    """

    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup: float = 0.05
    min_lr_ratio: float = 0.01
    encoder_lr_mult: float = 1.0
    layer_decay: float | None = None

    def __post_init__(self) -> None:
        if not self.lr > 0:
            raise ConfigError(f"expected a positive learning rate, got {self.lr}", key="model.optim.lr")
        if self.weight_decay < 0:
            raise ConfigError(f"expected >= 0, got {self.weight_decay}", key="model.optim.weight_decay")
        if self.warmup < 0:
            raise ConfigError(f"expected >= 0, got {self.warmup}", key="model.optim.warmup")
        if self.encoder_lr_mult < 0:
            raise ConfigError(f"expected >= 0, got {self.encoder_lr_mult}", key="model.optim.encoder_lr_mult")
        if self.layer_decay is not None and not 0 < self.layer_decay <= 1:
            raise ConfigError(f"expected a factor in (0, 1], got {self.layer_decay}", key="model.optim.layer_decay")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ConfigError(f"expected a fraction in [0, 1], got {self.min_lr_ratio}", key="model.optim.min_lr_ratio")


# Parameter names (last component or a prefix component) that must not be weight-decayed: embeddings, position
# tables and class/register tokens (as in timm's `no_weight_decay`), besides every bias and norm weight.
NO_DECAY_NAMES = ("pos_embed", "cls_token", "reg_token", "dist_token", "tok_embed", "pos_embedding", "position")


def _no_decay(name: str, param: nn.Parameter) -> bool:
    if param.ndim <= 1:  # biases, LayerNorm/BatchNorm weights, 1-D scales
        return True
    parts = name.split(".")
    return any(part.startswith(key) for part in parts for key in NO_DECAY_NAMES)


def param_groups(module: nn.Module, include_frozen: bool = False) -> list[dict]:
    """Split trainable parameters into a decayed and a non-decayed group.

    Norms, biases, embeddings, position tables and class tokens get no weight decay; a tied parameter (output head
    sharing the token embedding) is counted once and follows its first name. The decayed group carries no
    `weight_decay` key, so it takes the optimizer's own setting (whatever optimizer the config injects).

    Args:
        module: The model whose parameters are grouped.
        include_frozen: Also group parameters that do not require gradients (an encoder that unfreezes later).

    Returns:
        Parameter groups for a torch optimizer.
    """
    decay, no_decay = [], []
    for name, param in module.named_parameters():  # named_parameters de-duplicates tied weights
        if not param.requires_grad and not include_frozen:
            continue
        (no_decay if _no_decay(name, param) else decay).append(param)
    return [
        {"params": decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


# Devices with a fused (one kernel for all parameters) AdamW in every torch release vitcap supports.
_FUSED_ADAMW_DEVICES = ("cpu", "cuda")


def adamw(groups: list[dict], lr: float, weight_decay: float, fused: bool = True) -> torch.optim.AdamW:
    """The default optimizer: AdamW, fused into one kernel per step where torch has one for the device.

    torch's own default on CPU is a Python loop of ~6 small ops per parameter tensor; the fused kernel does the
    same update (same algorithm and hyper-parameters; float rounding may differ in the last bit) ~3x faster on
    the demo captioner. Parameters must already be on their training device (Lightning moves the model before
    ``configure_optimizers``).

    Args:
        groups: Parameter groups, e.g. ``param_groups(model)``.
        lr: Learning rate.
        weight_decay: Decoupled weight decay of groups that do not set their own.
        fused: Use the fused kernel where the device has one; False keeps torch's default implementation (what
            Lightning needs to clip gradients under mixed precision).
    """
    devices = {p.device.type for g in groups for p in g["params"]}
    fused = fused and bool(devices) and devices <= set(_FUSED_ADAMW_DEVICES)
    return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay, fused=fused or None)


def warmup_cosine(
    optimizer: Optimizer,
    total_steps: int,
    warmup: float | int = 0.05,
    min_lr_ratio: float = 0.01,
    budget: Callable[[], float] | None = None,
    scales: list[Callable[[], float] | None] | None = None,
) -> LambdaLR:
    """Linear warm-up followed by cosine decay to `min_lr_ratio` of the base learning rate, stepped per batch.

    With a time budget (`budget`: the fraction of it spent so far, 0..1), progress through the schedule is the
    larger of the step fraction and the budget fraction, so a run that can do only part of its steps in its time
    still warms up, decays and ends annealed when the budget runs out; a run whose steps all fit follows the
    step schedule.

    Args:
        optimizer: The optimizer whose groups are scheduled.
        total_steps: Optimizer steps of the whole run.
        warmup: Warm-up length: a fraction of the schedule when < 1, else a number of steps.
        min_lr_ratio: Final learning rate as a fraction of the base one.
        budget: Fraction of the time budget spent, read at every step; None for a schedule by steps alone.
        scales: Per parameter group, an extra factor read at every step (None: 1), e.g. the warm-up of an encoder
            that unfreezes part-way.
    """
    total_steps = max(1, int(total_steps))
    warmup_steps = int(warmup * total_steps) if warmup < 1 else int(warmup)
    warmup_steps = min(warmup_steps, total_steps - 1) if total_steps > 1 else 0

    def cosine(progress: float) -> float:
        return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        return cosine((step - warmup_steps) / max(1, total_steps - warmup_steps))

    def budgeted(step: int) -> float:
        spent = min(1.0, budget())
        if spent <= step / total_steps:  # the steps lead: the plain step schedule
            return factor(step)
        ramp = warmup_steps / total_steps
        if spent < ramp:
            return max(spent / ramp, 1 / (warmup_steps + 1))
        return cosine((spent - ramp) / max(1e-9, 1 - ramp))

    schedule = factor if budget is None else budgeted
    if not scales or all(scale is None for scale in scales):
        return LambdaLR(optimizer, schedule)

    def scaled(scale: Callable[[], float] | None) -> Callable[[int], float]:
        return schedule if scale is None else (lambda step: schedule(step) * scale())

    return LambdaLR(optimizer, [scaled(scale) for scale in scales])
