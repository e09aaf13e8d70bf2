"""Keys and values kept across decoding steps: the self-attention ``KVCache`` and the image ``CrossKV``."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

__all__ = ["CrossKV", "KVCache"]


class CrossKV(NamedTuple):
    """Cross-attention keys and values of a batch of images, projected once and reused at every decoding step.

    Attributes:
        k: Keys ``(B, H, N, Dh)``.
        v: Values ``(B, H, N, Dh)``.
        key_padding_mask: Optional bool ``(B, N)``, True = image token to ignore.
    """

    k: Tensor
    v: Tensor
    key_padding_mask: Tensor | None = None


class KVCache:
    """Self-attention keys and values of one layer, grown by one decoding step at a time.

    Concatenating per step costs O(T^2) copies over a whole caption, which is negligible for caption lengths
    (tens of tokens) and keeps the cache exactly as long as what was decoded (no preallocated ``max_len``).
    """

    def __init__(self) -> None:
        self.k: Tensor | None = None  # (B, H, L, Dh)
        self.v: Tensor | None = None  # (B, H, L, Dh)

    @property
    def length(self) -> int:
        """Number of cached positions L."""
        return 0 if self.k is None else self.k.shape[2]

    def append(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Append ``(B, H, t, Dh)`` keys/values; return all cached keys/values ``(B, H, L + t, Dh)``."""
        if self.k is None or self.v is None:
            self.k, self.v = k, v
        else:
            self.k = torch.cat([self.k, k], dim=2)
            self.v = torch.cat([self.v, v], dim=2)
        return self.k, self.v

    def reorder(self, index: Tensor) -> None:
        """Select batch rows in place: row ``i`` becomes old row ``index[i]`` (beam search reordering)."""
        if self.k is not None and self.v is not None:
            self.k = self.k.index_select(0, index)
            self.v = self.v.index_select(0, index)
