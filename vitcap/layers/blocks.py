"""The text decoder block: masked self-attention -> cross-attention -> MLP."""

from __future__ import annotations

from torch import Tensor, nn

from vitcap.layers.attention import Attention
from vitcap.layers.cross_attention import CrossAttentionKind, build_cross_attention
from vitcap.layers.kv_cache import CrossKV, KVCache
from vitcap.layers.mlp import Act, Mlp

__all__ = ["DecoderBlock"]


class DecoderBlock(nn.Module):
    """One transformer decoder layer, laid out like ``torch.nn.TransformerDecoderLayer``.

    Each sub-layer (``attn``, ``cross_attn``, ``mlp``) has a residual connection and a LayerNorm (``norm1``,
    ``norm2``, ``norm3``). Pre-norm (``norm_first=True``) normalises the sub-layer input, ``x + f(norm(x))``,
    which trains stably without warm-up and needs a final norm after the stack; post-norm, the 2017 original,
    normalises the sum, ``norm(x + f(x))``.

    Dropout follows timm's names. ``proj_drop`` is what ``torch.nn.TransformerDecoderLayer`` calls ``dropout``
    (minus its attention dropout): each sub-layer output before the residual add (``attn.proj_drop``,
    ``cross_attn.proj_drop``, ``mlp_drop``) and the MLP hidden activations (``mlp.drop``). ``attn_drop`` drops
    attention probabilities in ``attn`` and ``cross_attn`` (the linear kind has none to drop).

    Args:
        dim: Width D.
        num_heads: Attention heads H (self- and cross-attention).
        mlp_ratio: MLP hidden width as a multiple of D.
        qkv_bias: Bias on the attention projections.
        proj_drop: Dropout on each sub-layer's output (residual branch) and after the MLP activation.
        attn_drop: Dropout on the attention probabilities.
        norm_first: Pre-norm (True) or post-norm (False).
        cross_attn: Cross-attention kind (see ``build_cross_attention``).
        kv_dim: Width of the image tokens; defaults to D.
        act: MLP activation.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        proj_drop: float = 0.0,
        attn_drop: float = 0.0,
        norm_first: bool = True,
        cross_attn: CrossAttentionKind = "scaled_dot",
        kv_dim: int | None = None,
        act: Act = "gelu",
    ) -> None:
        super().__init__()
        self.norm_first = norm_first
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=proj_drop)
        self.norm2 = nn.LayerNorm(dim)
        self.cross_attn = build_cross_attention(cross_attn, dim, num_heads, kv_dim, qkv_bias, attn_drop, proj_drop)
        self.norm3 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=proj_drop, act=act)
        # After fc2, where timm's Mlp has its second dropout; ours drops only after the activation, like torch's.
        self.mlp_drop = nn.Dropout(proj_drop)

    def forward(
        self,
        x: Tensor,
        cross_kv: CrossKV,
        *,
        cache: KVCache | None = None,
        need_weights: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """Run the block causally over ``x``.

        Args:
            x: Text hidden states ``(B, T, D)``; with a cache, the ``T`` newest positions.
            cross_kv: The image keys/values for this block (``cross_attn.project_kv``); ``B`` may be a multiple
                of its image count (grouped rows, see ``Attention``).
            cache: This block's self-attention cache, appended to.
            need_weights: Also return the cross-attention weights ``(B, T, N)``.

        Returns:
            Hidden states ``(B, T, D)`` and cross-attention weights or None.
        """
        if self.norm_first:
            x = x + self.attn(self.norm1(x), is_causal=True, cache=cache)[0]
            y, weights = self.cross_attn(self.norm2(x), kv=cross_kv, need_weights=need_weights)
            x = x + y
            x = x + self.mlp_drop(self.mlp(self.norm3(x)))
        else:
            x = self.norm1(x + self.attn(x, is_causal=True, cache=cache)[0])
            y, weights = self.cross_attn(x, kv=cross_kv, need_weights=need_weights)
            x = self.norm2(x + y)
            x = self.norm3(x + self.mlp_drop(self.mlp(x)))
        return x, weights
