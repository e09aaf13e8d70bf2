"""The transformer feed-forward sub-layer."""

from __future__ import annotations

from typing import Literal

from torch import Tensor, nn

__all__ = ["Mlp", "make_act"]

Act = Literal["gelu", "relu"]


def make_act(act: Act) -> nn.Module:
    """Build an activation module from its name (``"gelu"`` or ``"relu"``)."""
    if act == "gelu":
        return nn.GELU()
    if act == "relu":
        return nn.ReLU()
    raise ValueError(f"unknown activation {act!r}; expected 'gelu' or 'relu'")


class Mlp(nn.Module):
    """``fc2(drop(act(fc1(x))))``, the position-wise feed-forward network (timm naming).

    Args:
        dim: Input and output width D.
        hidden: Hidden width (usually ``mlp_ratio * dim``).
        drop: Dropout after the activation (where ``torch.nn.TransformerDecoderLayer`` puts it).
        act: Activation name.
    """

    def __init__(self, dim: int, hidden: int, drop: float = 0.0, act: Act = "gelu") -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = make_act(act)
        self.drop = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        """Map ``(..., D)`` to ``(..., D)``."""
        return self.fc2(self.drop(self.act(self.fc1(x))))
