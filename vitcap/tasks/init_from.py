"""Weights from a checkpoint into a model, by name and shape: what `--model.init_from CKPT` does.

Unlike `--ckpt_path` (which resumes a run: optimiser, schedule, epoch counter), `init_from` only copies tensors.
`load_matching` compares the checkpoint's state dict with the model's, tensor by tensor, and either copies every
selected tensor or raises one `CheckpointError` naming the first that does not fit. `only` selects part of the
model by name prefix (e.g. `("encoder.",)` to seed a captioner's encoder from a classifier), and the returned
`LoadReport` says which tensors were loaded and which were left as initialised.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from vitcap.errors import CheckpointError

__all__ = ["LoadReport", "load_matching"]


@dataclass
class LoadReport:
    """What `load_matching` did.

    Attributes:
        source: The checkpoint (file or export folder).
        loaded: Model tensors (state-dict names) copied from the checkpoint, in model order.
        kept: Model tensors outside the selection, left as they were.
        unused: Checkpoint tensors that were not copied (outside the selection).
    """

    source: str
    loaded: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line: how many tensors were loaded, and which were left new."""
        text = (
            f"loaded {len(self.loaded)} of the model's {len(self.loaded) + len(self.kept)} tensors from {self.source}"
        )
        if self.kept:
            parts = sorted({name.split(".", 1)[0] for name in self.kept})
            text += f"; left new: {len(self.kept)} tensors ({', '.join(parts)})"
        return "; ".join([text, *self.notes])


def _shape(tensor: Tensor) -> str:
    return "(" + ", ".join(str(d) for d in tensor.shape) + ")"


def load_matching(
    model: nn.Module,
    state: Mapping[str, Tensor],
    source: str | os.PathLike,
    *,
    only: Sequence[str] | None = None,
) -> LoadReport:
    """Copy the tensors of `state` into `model` (parameters and buffers), all of them or none.

    Every selected model tensor must be in `state` with the same shape; with `only=None` every tensor of `state`
    must also have a place in the model. Checked before anything is copied, so a mismatch leaves the model as it
    was.

    Args:
        model: The model to initialise.
        state: A state dict with names relative to `model` (`vitcap.checkpoint.read_checkpoint`'s).
        source: Where `state` came from, for messages.
        only: Name prefixes of the model tensors to load (e.g. `("encoder.",)`); None loads the whole model.

    Returns:
        A `LoadReport`.

    Raises:
        CheckpointError: naming `source` and the first tensor that is missing, extra or of another shape.
    """
    source = str(source)
    target = model.state_dict()
    selected = [k for k in target if only is None or k.startswith(tuple(only))]
    if only is not None and not selected:
        raise CheckpointError(f"the model has no tensors under {list(only)}", path=source)
    for name in selected:
        if name not in state:
            raise CheckpointError(
                f"does not fit the model: its parameter {name} {_shape(target[name])} is not in the checkpoint "
                "(another architecture?)",
                path=source,
            )
        if state[name].shape != target[name].shape:
            raise CheckpointError(
                f"does not fit the model: parameter {name} has shape {_shape(state[name])} in the checkpoint but "
                f"{_shape(target[name])} in the model (another architecture?)",
                path=source,
            )
    chosen = set(selected)
    unused = [k for k in state if k not in chosen]
    if only is None and unused:
        raise CheckpointError(
            f"does not fit the model: checkpoint tensor {unused[0]} {_shape(state[unused[0]])} has no place in the "
            "model (another architecture?)",
            path=source,
        )
    with torch.no_grad():
        for name in selected:
            target[name].copy_(state[name])  # state_dict() tensors share storage with the parameters/buffers
    return LoadReport(source, loaded=selected, kept=[k for k in target if k not in chosen], unused=unused)
