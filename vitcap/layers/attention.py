"""Multi-head attention for self- and cross-attention, with a KV cache and shared (grouped) image keys/values.

One module serves both roles (timm's ``Attention`` naming: ``qkv``/``q``/``kv``/``proj``). The hot path is
``F.scaled_dot_product_attention``; ``need_weights=True`` takes an explicit softmax path that the tests compare
against and that attention maps come from. Two alternative cross-attention scorers (additive, linear) share the
cross-attention interface so the decoder can swap them.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "AdditiveCrossAttention",
    "Attention",
    "CrossAttentionKind",
    "CrossKV",
    "KVCache",
    "LinearCrossAttention",
    "build_cross_attention",
    "scaled_dot_attention",
]

CrossAttentionKind = Literal["scaled_dot", "additive", "linear"]


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

    def select(self, index: Tensor) -> CrossKV:
        """Keep the images at ``index`` (a ``(B_new,)`` long tensor), e.g. to drop finished images."""
        mask = None if self.key_padding_mask is None else self.key_padding_mask.index_select(0, index)
        return CrossKV(self.k.index_select(0, index), self.v.index_select(0, index), mask)


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


class Attention(nn.Module):
    """Multi-head attention; self-attention (``qkv``) or cross-attention (``q`` + ``kv``), output ``proj``.

    Args:
        dim: Query width D (and output width).
        num_heads: Number of heads H; ``dim`` must be divisible by it.
        qkv_bias: Bias on the query/key/value projections.
        attn_drop: Dropout on the attention probabilities.
        proj_drop: Dropout after the output projection.
        cross: Cross-attention: queries from ``x``, keys/values from ``memory`` (or a precomputed ``CrossKV``).
        kv_dim: Width of ``memory`` (cross-attention only); defaults to ``dim``.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        cross: bool = False,
        kv_dim: int | None = None,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"attention width dim={dim} is not divisible by num_heads={num_heads}")
        if kv_dim is not None and not cross:
            raise ValueError("kv_dim is only meaningful for cross-attention (cross=True)")
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.cross = cross
        if cross:
            self.q = nn.Linear(dim, dim, bias=qkv_bias)
            self.kv = nn.Linear(kv_dim or dim, 2 * dim, bias=qkv_bias)
        else:
            self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(
        self,
        x: Tensor,
        *,
        kv: CrossKV | None = None,
        memory: Tensor | None = None,
        is_causal: bool = False,
        key_padding_mask: Tensor | None = None,
        cache: KVCache | None = None,
        need_weights: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """Attend from ``x``.

        Args:
            x: Queries ``(B, T, D)``. For cross-attention ``B`` may be ``B_img * g``: the ``g`` contiguous rows
                ``b * g .. b * g + g - 1`` (e.g. beams) all attend to image ``b`` of ``kv``.
            kv: Precomputed cross-attention keys/values from ``project_kv`` (cross-attention).
            memory: Image tokens ``(B_img, N, kv_dim)``, projected here when ``kv`` is not given (cross-attention).
            is_causal: Causal self-attention; with a cache, the new queries follow the cached positions.
            key_padding_mask: Bool, True = ignore that key. Self-attention: ``(B, S)`` over all keys including
                cached ones; cross-attention: ``(B_img, N)``, overriding the mask stored in ``kv``.
            cache: Self-attention ``KVCache``; the new keys/values are appended to it.
            need_weights: Return attention weights averaged over heads (explicit softmax path).

        Returns:
            Output ``(B, T, D)`` and weights ``(B, T, S)`` (self) / ``(B, T, N)`` (cross), or None.
        """
        if self.cross:
            if cache is not None or is_causal:
                raise ValueError("cross-attention takes neither a cache nor is_causal; pass kv=project_kv(memory)")
            return self._forward_cross(x, kv, memory, key_padding_mask, need_weights)
        if kv is not None or memory is not None:
            raise ValueError("self-attention takes no kv/memory; build the module with cross=True")

        B, T, D = x.shape
        q, k, v = self.qkv(x).reshape(B, T, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        # q, k, v: (B, H, T, Dh)
        if cache is not None:
            k, v = cache.append(k, v)  # (B, H, L + T, Dh)
        attn_mask = None if key_padding_mask is None else ~key_padding_mask[:, None, None, :]  # (B, 1, 1, S)
        out, weights = scaled_dot_attention(
            q,
            k,
            v,
            attn_mask=attn_mask,
            is_causal=is_causal,
            dropout_p=self.attn_drop.p if self.training else 0.0,
            need_weights=need_weights,
        )
        out = out.transpose(1, 2).reshape(B, T, D)  # (B, H, T, Dh) -> (B, T, D)
        return self.proj_drop(self.proj(out)), weights

    def project_kv(self, memory: Tensor, key_padding_mask: Tensor | None = None) -> CrossKV:
        """Project image tokens ``(B, N, kv_dim)`` to keys/values ``(B, H, N, Dh)``, once per image.

        Args:
            memory: Image tokens ``(B, N, kv_dim)``.
            key_padding_mask: Optional bool ``(B, N)``, True = ignore; stored with the keys/values so every
                decoding step applies it.
        """
        if not self.cross:
            raise ValueError("project_kv is for cross-attention; build the module with cross=True")
        B, N, _ = memory.shape
        k, v = self.kv(memory).reshape(B, N, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        # k, v: (B, H, N, Dh)
        return CrossKV(k, v, key_padding_mask)

    def _forward_cross(
        self,
        x: Tensor,
        kv: CrossKV | None,
        memory: Tensor | None,
        key_padding_mask: Tensor | None,
        need_weights: bool,
    ) -> tuple[Tensor, Tensor | None]:
        if kv is None:
            if memory is None:
                raise ValueError("cross-attention needs kv=project_kv(memory) or memory")
            kv = self.project_kv(memory, key_padding_mask)
        if key_padding_mask is None:
            key_padding_mask = kv.key_padding_mask
        B, T, D = x.shape
        num_images = kv.k.shape[0]
        if B % num_images:
            raise ValueError(f"query batch of {B} rows is not a multiple of the {num_images} images in kv")
        g = B // num_images
        q = self.q(x).reshape(B, T, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, T, Dh)
        # The g query rows of one image become extra query positions of that image, so they all read one copy
        # of its keys/values instead of g repeated copies.
        q = q.reshape(num_images, g, self.num_heads, T, self.head_dim).transpose(1, 2)  # (B_img, H, g, T, Dh)
        q = q.reshape(num_images, self.num_heads, g * T, self.head_dim)  # (B_img, H, g*T, Dh)
        out, weights = self._attend_cross(q, kv, key_padding_mask, need_weights)
        out = out.reshape(num_images, self.num_heads, g, T, self.head_dim)  # (B_img, H, g, T, Dh)
        out = out.permute(0, 2, 3, 1, 4).reshape(B, T, D)  # (B_img, g, T, H, Dh) -> (B, T, D)
        if weights is not None:
            weights = weights.reshape(B, T, -1)  # (B_img, g*T, N) -> (B, T, N)
        return self.proj_drop(self.proj(out)), weights

    def _attend_cross(
        self, q: Tensor, kv: CrossKV, key_padding_mask: Tensor | None, need_weights: bool
    ) -> tuple[Tensor, Tensor | None]:
        """Attend grouped queries (B_img, H, T', Dh) to kv; return (B_img, H, T', Dh) and (B_img, T', N) or None."""
        attn_mask = None if key_padding_mask is None else ~key_padding_mask[:, None, None, :]  # (B_img, 1, 1, N)
        return scaled_dot_attention(
            q,
            kv.k,
            kv.v,
            attn_mask=attn_mask,
            dropout_p=self.attn_drop.p if self.training else 0.0,
            need_weights=need_weights,
        )


class AdditiveCrossAttention(Attention):
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
        super().__init__(dim, num_heads, qkv_bias, attn_drop, proj_drop, cross=True, kv_dim=kv_dim)
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


class LinearCrossAttention(Attention):
    """Efficient (linear) cross-attention of Shen et al. (2021), multi-head.

    Per head, queries are softmax-normalised over their Dh features and keys over the N positions; the image
    context ``K^T V`` is ``(Dh, Dh)`` and the output is ``softmax(Q) @ context``, so memory and time are linear in
    N. The implied attention over image tokens, ``softmax(Q) @ softmax(K)^T``, sums to 1 over N and is what
    ``need_weights`` returns. ``attn_drop`` is unused: there is no attention matrix on the hot path to drop.
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
        super().__init__(dim, num_heads, qkv_bias, attn_drop, proj_drop, cross=True, kv_dim=kv_dim)

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


def build_cross_attention(
    kind: CrossAttentionKind,
    dim: int,
    num_heads: int,
    kv_dim: int | None = None,
    qkv_bias: bool = True,
    attn_drop: float = 0.0,
    proj_drop: float = 0.0,
) -> Attention:
    """Build a cross-attention module: ``"scaled_dot"`` (default), ``"additive"`` or ``"linear"``."""
    if kind == "scaled_dot":
        return Attention(dim, num_heads, qkv_bias, attn_drop, proj_drop, cross=True, kv_dim=kv_dim)
    if kind == "additive":
        return AdditiveCrossAttention(dim, num_heads, qkv_bias, attn_drop, proj_drop, kv_dim=kv_dim)
    if kind == "linear":
        return LinearCrossAttention(dim, num_heads, qkv_bias, attn_drop, proj_drop, kv_dim=kv_dim)
    raise ValueError(f"unknown cross-attention kind {kind!r}; expected 'scaled_dot', 'additive' or 'linear'")
