"""Additive (Bahdanau) cross-attention: ``v^T tanh(W_q q + W_k k)`` scores over the image tokens."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from vitcap.layers.attention import CrossAttention
from vitcap.layers.kv_cache import CrossKV

__all__ = ["AdditiveCrossAttention"]


class AdditiveCrossAttention(CrossAttention):
    """Additive (Bahdanau, Show-Attend-Tell) cross-attention, multi-head.

    Per head, ``score(t, n) = w^T tanh(W_q x_t + W_k m_n)``, softmax over the N image tokens, then a weighted sum
    of values ``W_v m_n`` and the output projection. ``W_q`` is ``q``, ``W_k``/``W_v`` are ``kv`` and ``w`` is
    ``score`` ``(H, Dh)``. Memory: the tanh term is a ``(B, H, T, N, Dh)`` intermediate (T times the memory of
    the keys), fine at caption sizes but quadratic-ish for long queries, unlike the fused scaled-dot path.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        kv_dim: int | None = None,
    ) -> None:
        super().__init__(dim, num_heads, qkv_bias, attn_drop, proj_drop, kv_dim)
        self.score = nn.Parameter(torch.empty(num_heads, self.head_dim))
        # Scores start near unit scale so W_q / W_k get useful gradients from the first step.
        nn.init.normal_(self.score, std=self.head_dim**-0.5)

    def _attend_cross(
        self, q: Tensor, kv: CrossKV, key_padding_mask: Tensor | None, need_weights: bool
    ) -> tuple[Tensor, Tensor | None]:
        hidden = torch.tanh(q.unsqueeze(3) + kv.k.unsqueeze(2))  # (B, H, T', 1, Dh) + (B, H, 1, N, Dh)
        scores = torch.einsum("bhtnd,hd->bhtn", hidden, self.score)  # (B, H, T', N)
        if key_padding_mask is not None:
            scores = scores.masked_fill(key_padding_mask[:, None, None, :], float("-inf"))
        attn = scores.softmax(dim=-1)
        out = self.attn_drop(attn) @ kv.v  # (B, H, T', Dh)
        return out, attn.mean(dim=1) if need_weights else None
