import pytest
import torch
from torch import nn
from torch.testing import assert_close

from tests.layers.torch_reference import copy_block
from vitcap.layers import DecoderBlock, KVCache, Mlp

D, H = 32, 4


@pytest.mark.parametrize(("norm_first", "act"), [(False, "relu"), (True, "gelu")])
def test_block_equals_torch_decoder_layer(norm_first: bool, act: str) -> None:
    torch.manual_seed(0)
    block = DecoderBlock(D, H, mlp_ratio=2.0, norm_first=norm_first, act=act).eval()
    layer = nn.TransformerDecoderLayer(
        D, H, dim_feedforward=2 * D, dropout=0.0, activation=act, batch_first=True, norm_first=norm_first
    ).eval()
    copy_block(layer, block)
    x, memory = torch.randn(2, 6, D), torch.randn(2, 5, D)
    causal = nn.Transformer.generate_square_subsequent_mask(6)
    ref = layer(x, memory, tgt_mask=causal, tgt_is_causal=True)
    out, weights = block(x, block.cross_attn.project_kv(memory))
    assert weights is None
    assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_block_cache_and_weights() -> None:
    torch.manual_seed(0)
    block = DecoderBlock(D, H, cross_attn="additive").eval()
    x, memory = torch.randn(2, 4, D), torch.randn(2, 5, D)
    kv = block.cross_attn.project_kv(memory)
    full, _ = block(x, kv)
    cache = KVCache()
    steps = [block(x[:, t : t + 1], kv, cache=cache, need_weights=True) for t in range(4)]
    assert_close(torch.cat([out for out, _ in steps], dim=1), full, atol=1e-5, rtol=1e-5)
    assert all(w.shape == (2, 1, 5) for _, w in steps)


def test_mlp() -> None:
    mlp = Mlp(D, 64, act="relu")
    x = torch.randn(3, D)
    assert_close(mlp(x), mlp.fc2(torch.relu(mlp.fc1(x))))
    with pytest.raises(ValueError, match="activation"):
        Mlp(D, 64, act="swish")  # type: ignore[arg-type]
