"""Transfer learning: a frozen or scheduled-unfreeze encoder, per-part learning rates, encoder weights from another task.

- `EncoderFreeze` (a Lightning `BaseFinetuning` callback): `freeze_encoder: true` keeps the encoder frozen (a
  linear probe / frozen features); a number N unfreezes it at the start of epoch N, after which its learning rate
  warms up over `OptimConfig.warmup` of the remaining schedule. While frozen, the encoder's BatchNorm layers stay in
  eval mode (running statistics used and left untouched), so frozen parameters and buffers are bit-identical
  after training.
- `param_groups_for`: the optimizer groups. The encoder's learning rate is `encoder_lr_mult` x the base rate; with
  `layer_decay` (ViT encoders) each block's rate is scaled by `layer_decay ** (depth + 1 - layer)` after timm's
  `param_groups_layer_decay` (patch embedding and early blocks smallest). No weight decay on norms, biases,
  position embeddings and class tokens. Every group is named (`encoder.layer_3`, `head`, ...), which is what the
  learning-rate monitor logs.
- `resize_pos_embed`: a ViT checkpoint's position embeddings resampled to another image size (timm's
  `resample_abs_pos_embed`), so an encoder trained at one size seeds a model at another.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import BaseFinetuning
from timm.layers import resample_abs_pos_embed
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.optim import Optimizer

from vitcap.errors import ConfigError
from vitcap.tasks.optim import param_groups

__all__ = ["EncoderFreeze", "encoder_warmup", "param_groups_for", "resize_pos_embed"]

POS_EMBED = "encoder.model.pos_embed"  # a ViT encoder's table, relative to the model


class EncoderFreeze(BaseFinetuning):
    """Freeze `pl_module.model.encoder` before training; unfreeze it at epoch `unfreeze_at` (None: never).

    Args:
        unfreeze_at: Epoch at whose start the encoder becomes trainable; None keeps it frozen.
    """

    def __init__(self, unfreeze_at: int | None = None) -> None:
        super().__init__()
        self.unfreeze_at = unfreeze_at

    def freeze_before_training(self, pl_module: pl.LightningModule) -> None:
        encoder = pl_module.model.encoder
        for param in encoder.parameters():
            param.requires_grad = False
        pl_module.encoder_frozen = True

    def finetune_function(self, pl_module: pl.LightningModule, epoch: int, optimizer: Optimizer) -> None:
        if self.unfreeze_at is not None and epoch >= self.unfreeze_at and pl_module.encoder_frozen:
            # The encoder's parameters are in the optimizer from the start (without gradients, AdamW skips them),
            # so the schedule keeps one lambda per group; here they start to learn, warming up from this step.
            self.make_trainable(pl_module.model.encoder)
            pl_module.encoder_frozen = False
            pl_module.encoder_unfrozen_step = pl_module.trainer.global_step

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, idx: int) -> None:
        # Lightning puts the whole model in train mode each epoch (and after validation); frozen BN stays in eval.
        if pl_module.encoder_frozen:
            for module in pl_module.model.encoder.modules():
                if isinstance(module, _BatchNorm):
                    module.eval()


def encoder_warmup(pl_module: Any, total_steps: int, warmup: float) -> float:
    """Learning-rate factor of the encoder groups: 0 while frozen, then a linear ramp after the unfreeze."""
    if getattr(pl_module, "encoder_frozen", False):
        return 0.0
    start = getattr(pl_module, "encoder_unfrozen_step", None)
    if start is None:  # never frozen
        return 1.0
    steps = max(1, int(warmup * max(1, total_steps - start)) if warmup < 1 else int(warmup))
    return min(1.0, (pl_module.trainer.global_step - start + 1) / steps)


def _named(groups: list[dict], name: str, scale: float) -> list[dict]:
    out = []
    for group in groups:
        if not group["params"]:
            continue
        decays = group.get("weight_decay", None) != 0.0
        out.append({**group, "name": f"{name}{'' if decays else '.no_decay'}", "lr_scale": scale})
    return out


def param_groups_for(
    model: nn.Module, weight_decay: float, encoder_lr_mult: float = 1.0, layer_decay: float | None = None
) -> list[dict]:
    """Named parameter groups with an `lr_scale` each (see the module docstring); frozen parameters included."""
    encoder = model.encoder
    rest = nn.ModuleDict({name: child for name, child in model.named_children() if name != "encoder"})
    groups = _named(param_groups(rest, include_frozen=True), "head" if hasattr(model, "head") else "decoder", 1.0)
    if layer_decay is None:
        return _named(param_groups(encoder, include_frozen=True), "encoder", encoder_lr_mult) + groups
    vit = getattr(encoder, "model", None)
    if vit is None or not hasattr(vit, "blocks") or not hasattr(vit, "group_matcher"):
        raise ConfigError("layer-wise decay needs a ViT encoder", key="model.optim.layer_decay")
    from timm.optim import param_groups_layer_decay

    frozen = [p for p in vit.parameters() if not p.requires_grad]
    for p in frozen:  # timm groups trainable parameters only; a scheduled-unfreeze encoder must be in them
        p.requires_grad = True
    try:
        timm_groups = param_groups_layer_decay(
            vit, weight_decay=weight_decay, no_weight_decay_list=vit.no_weight_decay(), layer_decay=layer_decay
        )
    finally:
        for p in frozen:
            p.requires_grad = False
    # timm numbers the layers (patch embedding first, the last block with the final norm last) and scales block
    # `i` of `n` by layer_decay ** (n - 1 - i); the groups are named after that rank.
    ranks = {scale: rank for rank, scale in enumerate(sorted({g["lr_scale"] for g in timm_groups}))}
    encoder_groups = []
    for group in timm_groups:
        scale = group.pop("lr_scale", 1.0)
        decays = group.get("weight_decay", weight_decay) != 0.0
        name = f"encoder.layer_{ranks[scale]}" + ("" if decays else ".no_decay")
        encoder_groups.append({**group, "name": name, "lr_scale": scale * encoder_lr_mult})
    return encoder_groups + groups


def resize_pos_embed(state: dict[str, Tensor], model: nn.Module) -> bool:
    """Resample `state`'s ViT position embeddings to `model`'s grid in place; True when it did."""
    own = model.state_dict().get(POS_EMBED)
    if own is None or POS_EMBED not in state or state[POS_EMBED].shape == own.shape:
        return False
    vit = model.encoder.model
    prefix = 0 if getattr(vit, "no_embed_class", False) else vit.num_prefix_tokens
    state[POS_EMBED] = resample_abs_pos_embed(
        state[POS_EMBED], new_size=list(vit.patch_embed.grid_size), num_prefix_tokens=prefix
    )
    return True
