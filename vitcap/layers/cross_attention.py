"""The cross-attention kinds a decoder can use, and ``build_cross_attention`` to pick one by name.

All kinds share one interface (``project_kv(memory) -> CrossKV``, ``forward(x, kv=...)``, grouped query rows):
``"scaled_dot"`` is :class:`~vitcap.layers.attention.CrossAttention` (fused SDPA), ``"additive"``
:class:`~vitcap.layers.additive_attention.AdditiveCrossAttention` (Bahdanau) and ``"linear"``
:class:`~vitcap.layers.linear_attention.LinearCrossAttention` (Shen et al. efficient attention).
"""

from __future__ import annotations

from typing import Literal

from vitcap.layers.additive_attention import AdditiveCrossAttention
from vitcap.layers.attention import CrossAttention
from vitcap.layers.linear_attention import LinearCrossAttention

__all__ = ["CrossAttentionKind", "build_cross_attention"]

CrossAttentionKind = Literal["scaled_dot", "additive", "linear"]

_CLASSES: dict[str, type[CrossAttention]] = {
    "scaled_dot": CrossAttention,
    "additive": AdditiveCrossAttention,
    "linear": LinearCrossAttention,
}


def build_cross_attention(
    kind: CrossAttentionKind,
    dim: int,
    num_heads: int,
    kv_dim: int | None = None,
    qkv_bias: bool = True,
    attn_drop: float = 0.0,
    proj_drop: float = 0.0,
) -> CrossAttention:
    """Build a cross-attention module: ``"scaled_dot"`` (default), ``"additive"`` or ``"linear"``.

    Args:
        kind: The scorer.
        dim: Query width D (and output width).
        num_heads: Number of heads H.
        kv_dim: Width of the image tokens; defaults to ``dim``.
        qkv_bias: Bias on the query/key/value projections.
        attn_drop: Dropout on the attention probabilities (unused by ``"linear"``, which has none).
        proj_drop: Dropout after the output projection.

    Raises:
        ValueError: If ``kind`` is unknown.
    """
    if kind not in _CLASSES:
        raise ValueError(f"unknown cross-attention kind {kind!r}; expected 'scaled_dot', 'additive' or 'linear'")
    return _CLASSES[kind](dim, num_heads, qkv_bias, attn_drop, proj_drop, kv_dim)
