"""Position embeddings: fixed sinusoidal and learned (text), 2-D sin-cos (CNN feature grids)."""

from __future__ import annotations

import math

import torch
from timm.layers import build_sincos2d_pos_embed
from torch import Tensor, nn

__all__ = ["LearnedPositionEmbedding", "SinusoidalPositionEmbedding", "build_2d_sincos", "sinusoidal_embedding"]


def _inv_freq(dim: int, base: float = 10000.0) -> Tensor:
    if dim % 2:
        raise ValueError(f"sinusoidal position embeddings need an even width, got dim={dim}")
    return torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(base) / dim))  # (dim / 2,)


def sinusoidal_embedding(positions: Tensor, dim: int, base: float = 10000.0) -> Tensor:
    """Fixed sinusoidal embedding of Vaswani et al. (2017), interleaved ``sin, cos, sin, cos, ...``.

    Every ``(sin, cos)`` pair has unit norm, so every position has the same norm ``sqrt(dim / 2)``, and any
    position can be computed, including ones beyond the longest sequence seen in training.

    Args:
        positions: Integer or float positions of any shape ``(...)``.
        dim: Embedding width; must be even.
        base: Wavelength base (10000 in the paper).

    Returns:
        Float tensor of shape ``(..., dim)``.
    """
    inv_freq = _inv_freq(dim, base).to(positions.device)
    return _sincos(positions, inv_freq)


def _sincos(positions: Tensor, inv_freq: Tensor) -> Tensor:
    angles = positions.to(torch.float32)[..., None] * inv_freq  # (..., dim / 2)
    return torch.stack([angles.sin(), angles.cos()], dim=-1).flatten(-2)  # (..., dim / 2, 2) -> (..., dim)


class SinusoidalPositionEmbedding(nn.Module):
    """Fixed sinusoidal positions for a run of ``length`` positions starting at ``offset``; no length limit."""

    def __init__(self, dim: int, base: float = 10000.0) -> None:
        super().__init__()
        self.dim = dim
        self.base = base
        # Non-persistent buffer: follows the module's device, never stored in checkpoints.
        self.register_buffer("inv_freq", _inv_freq(dim, base), persistent=False)

    def forward(self, length: int, offset: int = 0) -> Tensor:
        """Return embeddings of positions ``offset .. offset + length - 1`` as a ``(length, dim)`` float32 tensor."""
        inv_freq = self.inv_freq
        if inv_freq.dtype != torch.float32:  # model.half() / .to(bf16) rounded the frequencies; far positions drift
            inv_freq = _inv_freq(self.dim, self.base).to(inv_freq.device)
        positions = torch.arange(offset, offset + length, device=inv_freq.device)
        return _sincos(positions, inv_freq)


class LearnedPositionEmbedding(nn.Module):
    """A learned table of ``max_len`` position vectors (GPT-2 style)."""

    def __init__(self, max_len: int, dim: int) -> None:
        super().__init__()
        self.max_len = max_len
        self.dim = dim
        self.weight = nn.Parameter(torch.empty(max_len, dim))
        nn.init.trunc_normal_(self.weight, std=0.02)

    def forward(self, length: int, offset: int = 0) -> Tensor:
        """Return embeddings of positions ``offset .. offset + length - 1`` as a ``(length, dim)`` tensor.

        Raises:
            ValueError: If a position reaches ``max_len``; a learned table has no vector for it.
        """
        if offset + length > self.max_len:
            raise ValueError(
                f"position {offset + length - 1} is beyond the learned position embedding (max_len={self.max_len}); "
                "build the decoder with a larger max_len, use pos_embed='sinusoidal', or generate fewer tokens"
            )
        return self.weight[offset : offset + length]


def build_2d_sincos(h: int, w: int, dim: int, device: torch.device | None = None) -> Tensor:
    """2-D sin-cos position embedding of an ``h x w`` grid, row-major (MAE / timm ``build_sincos2d_pos_embed``).

    Args:
        h: Grid height.
        w: Grid width.
        dim: Embedding width; must be divisible by 4 (a quarter each for sin/cos of the row and column).
        device: Where to build it.

    Returns:
        Float tensor of shape ``(h * w, dim)``; row ``i * w + j`` is grid cell ``(i, j)``.
    """
    if dim % 4:
        raise ValueError(f"2-D sin-cos position embeddings need a width divisible by 4, got dim={dim}")
    return build_sincos2d_pos_embed([h, w], dim=dim, device=device)
