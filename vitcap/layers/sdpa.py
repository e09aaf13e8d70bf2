"""Scaled dot-product attention over heads: the fused kernel, or an explicit softmax when the weights are needed."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["padding_to_attn_mask", "scaled_dot_attention"]


def padding_to_attn_mask(key_padding_mask: Tensor | None) -> Tensor | None:
    """Turn a key padding mask ``(B, S)`` (True = ignore, torch's convention) into an SDPA mask ``(B, 1, 1, S)``.

    Returns:
        Bool mask broadcastable to ``(B, H, T, S)``, True = may attend; None when there is no padding mask.
    """
    return None if key_padding_mask is None else ~key_padding_mask[:, None, None, :]  # (B, 1, 1, S)


def scaled_dot_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    attn_mask: Tensor | None = None,
    is_causal: bool = False,
    dropout_p: float = 0.0,
    need_weights: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """Scaled dot-product attention, fused unless the weights are needed.

    Args:
        q: Queries ``(B, H, T, Dh)``.
        k: Keys ``(B, H, S, Dh)``.
        v: Values ``(B, H, S, Dh)``.
        attn_mask: Bool mask broadcastable to ``(B, H, T, S)``, True = may attend.
        is_causal: Causal mask aligned bottom-right: query ``i`` sees keys ``0 .. S - T + i``, which is what
            ``T`` new queries against a cache of ``S - T`` earlier positions need. (SDPA's own ``is_causal`` is
            top-left aligned, so it is used only when ``T == S``.)
        dropout_p: Dropout on the attention probabilities.
        need_weights: Take the explicit softmax path and return its weights averaged over heads.

    Returns:
        Output ``(B, H, T, Dh)`` and weights ``(B, T, S)`` (before dropout) or None.
    """
    T, S = q.shape[-2], k.shape[-2]
    if is_causal:
        if T == S and attn_mask is None and not need_weights:
            return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True), None
        if T > 1:  # a single newest query sees every cached key, so it needs no mask (and keeps the fast kernel)
            causal = torch.ones(T, S, dtype=torch.bool, device=q.device).tril(diagonal=S - T)  # (T, S)
            attn_mask = causal if attn_mask is None else attn_mask & causal
    if not need_weights:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p), None
    scores = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5  # (B, H, T, S)
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, float("-inf"))
    attn = scores.softmax(dim=-1)
    weights = attn.mean(dim=1)
    out = F.dropout(attn, dropout_p) @ v  # (B, H, T, Dh)
    return out, weights
