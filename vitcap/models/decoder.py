"""The text decoder: token + position embeddings, a stack of ``DecoderBlock``s, and a (tied) output head."""

from __future__ import annotations

import math
from typing import Literal

from torch import Tensor, nn

from vitcap.layers.blocks import DecoderBlock
from vitcap.layers.cross_attention import CrossAttentionKind
from vitcap.layers.kv_cache import CrossKV, KVCache
from vitcap.layers.mlp import Act
from vitcap.layers.pos_embed import LearnedPositionEmbedding, SinusoidalPositionEmbedding

__all__ = ["DecoderCache", "TextDecoder"]

PosEmbedKind = Literal["sinusoidal", "learned"]


class DecoderCache:
    """The self-attention caches of every decoder layer for one batch of sequences being decoded.

    Args:
        layers: One ``KVCache`` per decoder block.
        batch_size: Rows the cache holds (``B * g`` when g beams share an image).
    """

    def __init__(self, layers: list[KVCache], batch_size: int) -> None:
        self.layers = layers
        self.batch_size = batch_size

    @property
    def length(self) -> int:
        """Number of positions decoded so far (the position of the next token)."""
        return self.layers[0].length if self.layers else 0

    def reorder(self, index: Tensor) -> None:
        """Select rows in place: row ``i`` becomes old row ``index[i]`` (``index`` is ``(B_new,)`` long)."""
        for layer in self.layers:
            layer.reorder(index)
        self.batch_size = index.shape[0]


class TextDecoder(nn.Module):
    """Autoregressive transformer decoder over text tokens, cross-attending to image tokens.

    Token embeddings are scaled by ``sqrt(D)`` (Vaswani et al.) and initialised with std ``D**-0.5``, so tokens and
    sinusoidal positions enter at the same scale and a tied head starts with unit-scale logits.

    Args:
        vocab_size: Vocabulary size V.
        embed_dim: Width D.
        depth: Number of blocks.
        num_heads: Attention heads H.
        mlp_ratio: MLP hidden width as a multiple of D.
        max_len: Longest sequence for ``pos_embed="learned"``; sinusoidal positions have no limit.
        pos_embed: ``"sinusoidal"`` (fixed) or ``"learned"``.
        norm_first: Pre-norm blocks plus a final ``norm`` (True) or post-norm blocks without one (False).
        dropout: Dropout in training, in three places: after the embeddings (timm's ``drop_rate``), on every
            sub-layer output before its residual add and after the MLP activation (timm's ``proj_drop``; the
            blocks' ``proj_drop``). Called ``dropout`` like ``torch.nn.TransformerDecoderLayer``'s (and the
            ``decoder.dropout`` config key), but it leaves attention probabilities to ``attn_drop``.
        attn_drop: Dropout in training on the attention probabilities of every self- and cross-attention (timm's
            ``attn_drop``; the linear cross-attention has no probabilities and ignores it).
        cross_attn: Cross-attention kind: ``"scaled_dot"``, ``"additive"`` or ``"linear"``.
        tie_weights: Share the output head's weight with the token embedding.
        memory_dim: Width of the image tokens; defaults to D.
        pad_id: Id of the padding token (recorded for callers; right padding needs no mask in a causal decoder).
        act: MLP activation.
    """

    def __init__(
        self,
        vocab_size: int,
        embed_dim: int = 256,
        depth: int = 4,
        num_heads: int = 4,
        mlp_ratio: float = 4.0,
        max_len: int = 64,
        pos_embed: PosEmbedKind = "sinusoidal",
        norm_first: bool = True,
        dropout: float = 0.0,
        attn_drop: float = 0.0,
        cross_attn: CrossAttentionKind = "scaled_dot",
        tie_weights: bool = True,
        memory_dim: int | None = None,
        pad_id: int = 0,
        act: Act = "gelu",
    ) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.embed_dim = embed_dim
        self.memory_dim = memory_dim or embed_dim
        self.max_len = max_len
        self.pad_id = pad_id
        self.norm_first = norm_first
        self.tok_embed = nn.Embedding(vocab_size, embed_dim)
        self.embed_scale = math.sqrt(embed_dim)
        if pos_embed == "sinusoidal":
            self.pos_embed: nn.Module = SinusoidalPositionEmbedding(embed_dim)
        elif pos_embed == "learned":
            self.pos_embed = LearnedPositionEmbedding(max_len, embed_dim)
        else:
            raise ValueError(f"unknown pos_embed {pos_embed!r}; expected 'sinusoidal' or 'learned'")
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            DecoderBlock(
                embed_dim,
                num_heads,
                mlp_ratio=mlp_ratio,
                proj_drop=dropout,
                attn_drop=attn_drop,
                norm_first=norm_first,
                cross_attn=cross_attn,
                kv_dim=self.memory_dim,
                act=act,
            )
            for _ in range(depth)
        )
        # Post-norm blocks already end in a LayerNorm; pre-norm ones leave the residual stream unnormalised.
        self.norm = nn.LayerNorm(embed_dim) if norm_first else nn.Identity()
        self.head = nn.Linear(embed_dim, vocab_size, bias=False)
        self.apply(self._init_weights)
        nn.init.normal_(self.tok_embed.weight, std=embed_dim**-0.5)
        if tie_weights:
            self.head.weight = self.tok_embed.weight

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    def embed(self, tokens: Tensor, offset: int = 0) -> Tensor:
        """Embed tokens ``(B, T)`` at positions ``offset .. offset + T - 1``; return ``(B, T, D)``."""
        x = self.tok_embed(tokens) * self.embed_scale
        x = x + self.pos_embed(tokens.shape[1], offset).to(x.dtype)  # (T, D) broadcast over B
        return self.drop(x)

    def project_memory(self, memory: Tensor, memory_padding_mask: Tensor | None = None) -> list[CrossKV]:
        """Project image tokens once into every layer's cross-attention keys/values.

        Args:
            memory: Image tokens ``(B, N, memory_dim)``.
            memory_padding_mask: Optional bool ``(B, N)``, True = ignore that image token.

        Returns:
            One ``CrossKV`` (keys/values ``(B, H, N, Dh)``) per block.
        """
        return [blk.cross_attn.project_kv(memory, memory_padding_mask) for blk in self.blocks]

    def _cross_kv(
        self, memory: Tensor | None, memory_padding_mask: Tensor | None, cross_kv: list[CrossKV] | None
    ) -> list[CrossKV]:
        if cross_kv is None:
            if memory is None:
                raise ValueError("the decoder needs image tokens: pass memory or cross_kv=project_memory(memory)")
            return self.project_memory(memory, memory_padding_mask)
        if len(cross_kv) != len(self.blocks):
            raise ValueError(f"cross_kv has {len(cross_kv)} entries; the decoder has {len(self.blocks)} blocks")
        return cross_kv

    def forward_features(
        self,
        tokens: Tensor,
        memory: Tensor | None = None,
        memory_padding_mask: Tensor | None = None,
        cross_kv: list[CrossKV] | None = None,
    ) -> Tensor:
        """Causal hidden states after the final norm, ``(B, T, D)`` (arguments as in ``forward``)."""
        cross_kv = self._cross_kv(memory, memory_padding_mask, cross_kv)
        x = self.embed(tokens)
        for blk, kv in zip(self.blocks, cross_kv, strict=True):
            x, _ = blk(x, kv)
        return self.norm(x)

    def forward(
        self,
        tokens: Tensor,
        memory: Tensor | None = None,
        memory_padding_mask: Tensor | None = None,
        cross_kv: list[CrossKV] | None = None,
    ) -> Tensor:
        """Teacher-forced logits for every position.

        Args:
            tokens: Token ids ``(B, T)``; position ``t`` sees tokens ``0 .. t``.
            memory: Image tokens ``(B_img, N, memory_dim)``; not needed when ``cross_kv`` is given.
            memory_padding_mask: Optional bool ``(B_img, N)``, True = ignore that image token.
            cross_kv: Precomputed ``project_memory(memory)``.

        Returns:
            Logits ``(B, T, V)``. ``B`` may be a multiple of ``B_img`` (grouped rows, see ``Attention``).
        """
        return self.head(self.forward_features(tokens, memory, memory_padding_mask, cross_kv))

    def init_cache(self, batch_size: int) -> DecoderCache:
        """An empty cache for decoding ``batch_size`` rows (``B * g`` with g beams per image)."""
        return DecoderCache([KVCache() for _ in self.blocks], batch_size)

    def forward_step(
        self,
        tokens: Tensor,
        cross_kv: list[CrossKV],
        cache: DecoderCache,
        need_weights: bool = False,
    ) -> tuple[Tensor, list[Tensor] | None]:
        """Decode the next ``t`` tokens of every row, reusing and extending ``cache``.

        Args:
            tokens: New token ids ``(B', t)`` at positions ``cache.length .. cache.length + t - 1``; ``B'`` is the
                number of images in ``cross_kv`` times g, rows ``b * g .. b * g + g - 1`` belonging to image ``b``.
            cross_kv: ``project_memory(memory)``, computed once per batch of images.
            cache: The rows' cache; appended to.
            need_weights: Also return each layer's cross-attention weights.

        Returns:
            Logits ``(B', t, V)`` and, if requested, one ``(B', t, N)`` weight tensor per layer (else None).
        """
        if tokens.shape[0] != cache.batch_size:
            raise ValueError(f"tokens have {tokens.shape[0]} rows but the cache holds {cache.batch_size}")
        cross_kv = self._cross_kv(None, None, cross_kv)
        x = self.embed(tokens, offset=cache.length)
        weights: list[Tensor] = []
        for blk, kv, layer_cache in zip(self.blocks, cross_kv, cache.layers, strict=True):
            x, w = blk(x, kv, cache=layer_cache, need_weights=need_weights)
            if w is not None:
                weights.append(w)
        return self.head(self.norm(x)), weights if need_weights else None
