"""Transformer building blocks in plain PyTorch: attention, MLP, decoder block, position embeddings."""

from vitcap.layers.attention import (
    AdditiveCrossAttention,
    Attention,
    CrossAttentionKind,
    CrossKV,
    KVCache,
    LinearCrossAttention,
    build_cross_attention,
    scaled_dot_attention,
)
from vitcap.layers.blocks import DecoderBlock
from vitcap.layers.linear import OneDNNLinear, use_onednn_linear
from vitcap.layers.mlp import Mlp
from vitcap.layers.pos_embed import (
    LearnedPositionEmbedding,
    SinusoidalPositionEmbedding,
    build_2d_sincos,
    sinusoidal_embedding,
)

__all__ = [
    "AdditiveCrossAttention",
    "Attention",
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
