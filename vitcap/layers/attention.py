"""Multi-head attention for self- and cross-attention, with grouped (shared) image keys/values.

One module serves both roles (timm's ``Attention`` naming: ``qkv``/``q``/``kv``/``proj``). The hot path is
``F.scaled_dot_product_attention`` (:mod:`vitcap.layers.sdpa`); ``need_weights=True`` takes an explicit softmax
path that the tests compare against and that attention maps come from. ``CrossAttention`` is the cross-attention
role as a class, the base of the other scorers, which override ``_attend_cross``:

- :mod:`vitcap.layers.kv_cache`: ``KVCache`` (self-attention, per step) and ``CrossKV`` (images, projected once);
- :mod:`vitcap.layers.additive_attention`: ``AdditiveCrossAttention`` (Bahdanau);
- :mod:`vitcap.layers.linear_attention`: ``LinearCrossAttention`` (Shen et al. efficient attention);
- :mod:`vitcap.layers.cross_attention`: ``CrossAttentionKind`` and ``build_cross_attention``.
"""

from __future__ import annotations

from torch import Tensor, nn

from vitcap.layers.kv_cache import CrossKV, KVCache
from vitcap.layers.sdpa import padding_to_attn_mask, scaled_dot_attention

__all__ = ["Attention", "CrossAttention", "CrossKV", "KVCache", "scaled_dot_attention"]


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
        attn_mask = padding_to_attn_mask(key_padding_mask)  # (B, 1, 1, S)
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
        attn_mask = padding_to_attn_mask(key_padding_mask)  # (B_img, 1, 1, N)
        return scaled_dot_attention(
            q,
            kv.k,
            kv.v,
            attn_mask=attn_mask,
            dropout_p=self.attn_drop.p if self.training else 0.0,
            need_weights=need_weights,
        )


class CrossAttention(Attention):
    """Scaled dot-product cross-attention, ``Attention(..., cross=True)`` as a class.

    The constructor every cross-attention kind shares; the additive and linear scorers subclass it and override
    ``_attend_cross`` (grouped queries ``(B_img, H, T', Dh)`` against a ``CrossKV``).

    Args are those of ``Attention`` without ``cross``; ``kv_dim`` is the width of the image tokens.
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
