"""Transformer building blocks in plain PyTorch: attention, MLP, decoder block, position embeddings, CPU GEMM."""

from vitcap.layers.additive_attention import AdditiveCrossAttention
from vitcap.layers.attention import Attention, CrossAttention
from vitcap.layers.blocks import DecoderBlock
from vitcap.layers.cross_attention import CrossAttentionKind, build_cross_attention
from vitcap.layers.gemm import OneDNNLinear, use_onednn_linear
from vitcap.layers.kv_cache import CrossKV, KVCache
from vitcap.layers.linear_attention import LinearCrossAttention
from vitcap.layers.mlp import Mlp
from vitcap.layers.pos_embed import (
    LearnedPositionEmbedding,
    SinusoidalPositionEmbedding,
    build_2d_sincos,
    sinusoidal_embedding,
)
from vitcap.layers.sdpa import scaled_dot_attention

__all__ = [
    "AdditiveCrossAttention",
    "Attention",
    "CrossAttention",
    "CrossAttentionKind",
    "CrossKV",
    "DecoderBlock",
    "KVCache",
    "LearnedPositionEmbedding",
    "LinearCrossAttention",
    "Mlp",
    "OneDNNLinear",
    "SinusoidalPositionEmbedding",
    "build_2d_sincos",
    "build_cross_attention",
    "scaled_dot_attention",
    "sinusoidal_embedding",
    "use_onednn_linear",
]
