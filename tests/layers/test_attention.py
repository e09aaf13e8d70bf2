import pytest
import torch
from torch import nn
from torch.testing import assert_close

from tests.layers.torch_reference import copy_attention
from vitcap.layers import Attention, CrossKV, KVCache, build_cross_attention

D, H = 32, 4
KINDS = ["scaled_dot", "additive", "linear"]


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _padding_mask(B: int, S: int) -> torch.Tensor:
    mask = torch.zeros(B, S, dtype=torch.bool)
    mask[0, -2:] = True  # row 0 ignores its last two keys, row 1 nothing
    return mask


@pytest.mark.parametrize("is_causal", [False, True])
@pytest.mark.parametrize("padded", [False, True])
def test_self_attention_fused_equals_explicit(is_causal: bool, padded: bool) -> None:
    attn = Attention(D, H).eval()
    x = torch.randn(2, 6, D)
    mask = _padding_mask(2, 6) if padded else None
    fused, no_weights = attn(x, is_causal=is_causal, key_padding_mask=mask)
    explicit, weights = attn(x, is_causal=is_causal, key_padding_mask=mask, need_weights=True)
    assert no_weights is None
    assert_close(fused, explicit, atol=1e-5, rtol=1e-5)
    assert weights.shape == (2, 6, 6)
    assert_close(weights.sum(-1), torch.ones(2, 6))
    if is_causal:
        assert torch.all(weights.triu(diagonal=1) == 0)
    if padded:
        assert torch.all(weights[0, :, -2:] == 0)


@pytest.mark.parametrize("padded", [False, True])
def test_cross_attention_fused_equals_explicit(padded: bool) -> None:
    attn = Attention(D, H, cross=True, kv_dim=24).eval()
    x, memory = torch.randn(2, 5, D), torch.randn(2, 7, 24)
    mask = _padding_mask(2, 7) if padded else None
    fused, _ = attn(x, memory=memory, key_padding_mask=mask)
    explicit, weights = attn(x, memory=memory, key_padding_mask=mask, need_weights=True)
    assert_close(fused, explicit, atol=1e-5, rtol=1e-5)
    assert weights.shape == (2, 5, 7)


def test_self_attention_equals_torch_multihead_attention() -> None:
    attn = Attention(D, H).eval()
    mha = nn.MultiheadAttention(D, H, batch_first=True).eval()
    copy_attention(mha, attn)
    x = torch.randn(2, 6, D)
    mask = _padding_mask(2, 6)
    causal = torch.ones(6, 6, dtype=torch.bool).triu(diagonal=1)  # torch: True = not allowed
    ref, ref_weights = mha(x, x, x, attn_mask=causal, key_padding_mask=mask)
    out, weights = attn(x, is_causal=True, key_padding_mask=mask, need_weights=True)
    assert_close(out, ref, atol=1e-5, rtol=1e-5)
    assert_close(weights, ref_weights, atol=1e-6, rtol=1e-5)
    assert_close(attn(x, is_causal=True, key_padding_mask=mask)[0], ref, atol=1e-5, rtol=1e-5)


def test_cross_attention_equals_torch_multihead_attention() -> None:
    attn = Attention(D, H, cross=True).eval()
    mha = nn.MultiheadAttention(D, H, batch_first=True).eval()
    copy_attention(mha, attn)
    x, memory = torch.randn(2, 5, D), torch.randn(2, 7, D)
    mask = _padding_mask(2, 7)
    ref, ref_weights = mha(x, memory, memory, key_padding_mask=mask)
    out, weights = attn(x, kv=attn.project_kv(memory, mask), need_weights=True)
    assert_close(out, ref, atol=1e-5, rtol=1e-5)
    assert_close(weights, ref_weights, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("need_weights", [False, True])
def test_cached_chunks_equal_full_causal_attention(need_weights: bool) -> None:
    # Chunks of 3, 1 and 2 new queries: chunks longer than one need the bottom-right aligned causal mask.
    attn = Attention(D, H).eval()
    x = torch.randn(2, 6, D)
    full, _ = attn(x, is_causal=True)
    cache = KVCache()
    parts = []
    for start, stop in [(0, 3), (3, 4), (4, 6)]:
        out, _ = attn(x[:, start:stop], is_causal=True, cache=cache, need_weights=need_weights)
        parts.append(out)
        assert cache.length == stop
    assert_close(torch.cat(parts, dim=1), full, atol=1e-5, rtol=1e-5)


def test_self_attention_is_permutation_equivariant() -> None:
    attn = Attention(D, H).eval()
    x = torch.randn(2, 6, D)
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    out, _ = attn(x)
    out_perm, _ = attn(x[:, perm])
    assert_close(out_perm, out[:, perm], atol=1e-5, rtol=1e-5)
    # The causal mask depends on order, so it must break the symmetry.
    causal, _ = attn(x[:, perm], is_causal=True)
    assert not torch.allclose(causal, attn(x, is_causal=True)[0][:, perm], atol=1e-3)


def test_kv_cache_reorder_selects_rows() -> None:
    cache = KVCache()
    k, v = torch.randn(3, H, 2, 8), torch.randn(3, H, 2, 8)
    cache.append(k, v)
    cache.reorder(torch.tensor([2, 2, 0]))
    assert torch.equal(cache.k, k[[2, 2, 0]])
    assert torch.equal(cache.v, v[[2, 2, 0]])
    assert cache.length == 2


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("need_weights", [False, True])
def test_grouped_cross_attention_equals_repeated_memory(kind: str, need_weights: bool) -> None:
    # 2 images x 3 beams: rows 0..2 belong to image 0 and rows 3..5 to image 1.
    attn = build_cross_attention(kind, D, H, kv_dim=24).eval()
    g = 3
    x, memory = torch.randn(2 * g, 4, D), torch.randn(2, 7, 24)
    mask = _padding_mask(2, 7)
    grouped, grouped_w = attn(x, kv=attn.project_kv(memory, mask), need_weights=need_weights)
    repeated_kv = attn.project_kv(memory.repeat_interleave(g, dim=0), mask.repeat_interleave(g, dim=0))
    repeated, repeated_w = attn(x, kv=repeated_kv, need_weights=need_weights)
    assert_close(grouped, repeated, atol=1e-5, rtol=1e-5)
    if need_weights:
        assert grouped_w.shape == (2 * g, 4, 7)
        assert_close(grouped_w, repeated_w, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_cross_weights_sum_to_one_over_image_tokens(kind: str) -> None:
    attn = build_cross_attention(kind, D, H).eval()
    x, memory = torch.randn(2, 5, D), torch.randn(2, 7, D)
    mask = _padding_mask(2, 7)
    out, weights = attn(x, memory=memory, key_padding_mask=mask, need_weights=True)
    assert out.shape == (2, 5, D)
    assert_close(weights.sum(-1), torch.ones(2, 5))
    assert torch.all(weights >= 0)
    assert torch.all(weights[0, :, -2:] == 0)
    # The ignored tokens really are ignored: changing them leaves the output unchanged.
    changed = memory.clone()
    changed[0, -2:] = 100.0
    assert_close(attn(x, memory=changed, key_padding_mask=mask)[0], out)


@pytest.mark.parametrize("kind", ["additive", "linear"])
def test_cross_attention_variant_learns_to_find_marked_token(kind: str) -> None:
    # The target is the one image token marked in feature 0; the variant must learn to attend to it.
    B, N = 16, 8
    memory = torch.randn(B, N, D)
    memory[..., 0] = 0.0
    marked = torch.randint(0, N, (B,))
    memory[torch.arange(B), marked, 0] = 4.0
    target = memory[torch.arange(B), marked][:, None].expand(B, 3, D)
    x = torch.randn(B, 3, D)
    attn = build_cross_attention(kind, D, H)
    optimizer = torch.optim.Adam(attn.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        out, _ = attn(x, memory=memory)
        loss = torch.nn.functional.mse_loss(out, target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.25 * losses[0], losses


def test_misuse_raises_clear_errors() -> None:
    with pytest.raises(ValueError, match="divisible"):
        Attention(30, 4)
    cross = Attention(D, H, cross=True)
    with pytest.raises(ValueError, match="cache"):
        cross(torch.randn(1, 2, D), memory=torch.randn(1, 3, D), cache=KVCache())
    kv = cross.project_kv(torch.randn(2, 3, D))
    with pytest.raises(ValueError, match="multiple"):
        cross(torch.randn(3, 2, D), kv=kv)
    with pytest.raises(ValueError, match="unknown cross-attention"):
        build_cross_attention("dot", D, H)  # type: ignore[arg-type]
    assert isinstance(kv, CrossKV) and kv.k.shape == (2, H, 3, D // H)
