"""Copy vitcap weights into the matching ``torch.nn`` reference modules for equivalence tests."""

from __future__ import annotations

import torch
from torch import nn

from vitcap.layers import Attention, DecoderBlock


@torch.no_grad()
def copy_attention(mha: nn.MultiheadAttention, attn: Attention) -> None:
    """Load ``attn``'s weights into ``mha`` (``in_proj`` rows are q, k, v in that order, as in ``qkv``/``kv``)."""
    if attn.cross:
        mha.in_proj_weight.copy_(torch.cat([attn.q.weight, attn.kv.weight]))
        mha.in_proj_bias.copy_(torch.cat([attn.q.bias, attn.kv.bias]))
    else:
        mha.in_proj_weight.copy_(attn.qkv.weight)
        mha.in_proj_bias.copy_(attn.qkv.bias)
    mha.out_proj.weight.copy_(attn.proj.weight)
    mha.out_proj.bias.copy_(attn.proj.bias)


@torch.no_grad()
def copy_block(layer: nn.TransformerDecoderLayer, block: DecoderBlock) -> None:
    """Load ``block``'s weights into a ``torch.nn.TransformerDecoderLayer``."""
    copy_attention(layer.self_attn, block.attn)
    copy_attention(layer.multihead_attn, block.cross_attn)
    layer.linear1.load_state_dict(block.mlp.fc1.state_dict())
    layer.linear2.load_state_dict(block.mlp.fc2.state_dict())
    for name in ("norm1", "norm2", "norm3"):
        getattr(layer, name).load_state_dict(getattr(block, name).state_dict())
