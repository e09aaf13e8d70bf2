"""Linear (efficient) cross-attention of Shen et al. (2021): time and memory linear in the image tokens."""

from __future__ import annotations

from torch import Tensor

from vitcap.layers.attention import CrossAttention
from vitcap.layers.kv_cache import CrossKV

__all__ = ["LinearCrossAttention"]


class LinearCrossAttention(CrossAttention):
    """Efficient (linear) cross-attention of Shen et al. (2021), multi-head.

    Per head, queries are softmax-normalised over their Dh features and keys over the N positions; the image
    context ``K^T V`` is ``(Dh, Dh)`` and the output is ``softmax(Q) @ context``, so memory and time are linear in
    N. The implied attention over image tokens, ``softmax(Q) @ softmax(K)^T``, sums to 1 over N and is what
    ``need_weights`` returns. ``attn_drop`` is unused: there is no attention matrix on the hot path to drop.
    """

    def _attend_cross(
        self, q: Tensor, kv: CrossKV, key_padding_mask: Tensor | None, need_weights: bool
    ) -> tuple[Tensor, Tensor | None]:
        k = kv.k
        if key_padding_mask is not None:
            k = k.masked_fill(key_padding_mask[:, None, :, None], float("-inf"))  # mask (B, 1, N, 1)
        k = k.softmax(dim=-2)  # over the N image tokens
        q = q.softmax(dim=-1)  # over the Dh features
        context = k.transpose(-2, -1) @ kv.v  # (B, H, Dh, Dh)
        out = q @ context  # (B, H, T', Dh)
        weights = (q @ k.transpose(-2, -1)).mean(dim=1) if need_weights else None  # (B, T', N)
        return out, weights
