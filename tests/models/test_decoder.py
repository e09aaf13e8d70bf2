import itertools

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from tests.layers.torch_reference import copy_block
from vitcap.models import TextDecoder

V, D, H, N = 40, 32, 4, 6
KINDS = ["scaled_dot", "additive", "linear"]


def _decoder(**kwargs) -> TextDecoder:
    torch.manual_seed(0)
    defaults = {"vocab_size": V, "embed_dim": D, "depth": 2, "num_heads": H, "mlp_ratio": 2.0, "max_len": 16}
    return TextDecoder(**(defaults | kwargs)).eval()


def _inputs(B: int = 2, T: int = 7) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, V, (B, T), generator=g), torch.randn(B, N, D, generator=g)


@pytest.mark.parametrize(("norm_first", "act"), [(False, "relu"), (False, "gelu"), (True, "relu"), (True, "gelu")])
def test_decoder_stack_equals_torch_transformer_decoder(norm_first: bool, act: str) -> None:
    decoder = _decoder(norm_first=norm_first, act=act)
    layer = nn.TransformerDecoderLayer(
        D, H, dim_feedforward=2 * D, dropout=0.0, activation=act, batch_first=True, norm_first=norm_first
    )
    # torch's stack has no final norm unless given one; post-norm has none, like ours.
    final_norm = nn.LayerNorm(D) if norm_first else None
    reference = nn.TransformerDecoder(layer, num_layers=2, norm=final_norm).eval()
    for ref_layer, block in zip(reference.layers, decoder.blocks, strict=True):
        copy_block(ref_layer, block)
    if norm_first:
        reference.norm.load_state_dict(decoder.norm.state_dict())
    tokens, memory = _inputs()
    padding = torch.zeros(2, N, dtype=torch.bool)
    padding[1, :2] = True
    T = tokens.shape[1]
    expected = reference(
        decoder.embed(tokens),
        memory,
        tgt_mask=nn.Transformer.generate_square_subsequent_mask(T),
        tgt_is_causal=True,
        memory_key_padding_mask=padding,
    )
    hidden = decoder.forward_features(tokens, memory, memory_padding_mask=padding)
    assert_close(hidden, expected, atol=1e-5, rtol=1e-5)
    assert_close(decoder(tokens, memory, padding), decoder.head(hidden))


@pytest.mark.parametrize(
    ("pos_embed", "norm_first", "cross_attn"), list(itertools.product(["sinusoidal", "learned"], [True, False], KINDS))
)
def test_cached_steps_equal_full_recompute(pos_embed: str, norm_first: bool, cross_attn: str) -> None:
    decoder = _decoder(pos_embed=pos_embed, norm_first=norm_first, cross_attn=cross_attn)
    tokens, memory = _inputs()
    full = decoder(tokens, memory)
    cross_kv = decoder.project_memory(memory)
    # A 3-token prompt, then one token per step; every other step also asks for the attention weights.
    cache = decoder.init_cache(2)
    logits, weights = decoder.forward_step(tokens[:, :3], cross_kv, cache)
    assert weights is None
    steps = [logits]
    for t in range(3, tokens.shape[1]):
        logits, weights = decoder.forward_step(tokens[:, t : t + 1], cross_kv, cache, need_weights=t % 2 == 0)
        steps.append(logits)
        assert cache.length == t + 1
        if t % 2 == 0:
            assert len(weights) == 2 and weights[0].shape == (2, 1, N)
            assert_close(weights[-1].sum(-1), torch.ones(2, 1))
    assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("cross_attn", KINDS)
def test_grouped_beams_with_reorder_equal_repeated_images(cross_attn: str) -> None:
    decoder = _decoder(cross_attn=cross_attn)
    g = 3
    tokens, memory = _inputs(B=2 * g, T=5)
    memory = memory[:2]  # 2 images, rows 0..2 are beams of image 0, rows 3..5 of image 1
    grouped_kv = decoder.project_memory(memory)
    repeated_memory = memory.repeat_interleave(g, dim=0)
    cache = decoder.init_cache(2 * g)
    decoder.forward_step(tokens[:, :3], grouped_kv, cache)
    # Beam search keeps each image's beams in its own block of rows while reordering them.
    index = torch.tensor([2, 0, 0, 4, 5, 3])
    cache.reorder(index)
    history = torch.cat([tokens[index, :3], tokens[:, 3:]], dim=1)
    logits, weights = decoder.forward_step(history[:, 3:], grouped_kv, cache, need_weights=True)
    expected = decoder(history, repeated_memory)[:, 3:]
    assert_close(logits, expected, atol=1e-5, rtol=1e-5)
    repeated_cache = decoder.init_cache(2 * g)
    repeated_kv = decoder.project_memory(repeated_memory)
    _, repeated_weights = decoder.forward_step(history, repeated_kv, repeated_cache, need_weights=True)
    assert_close(weights[0], repeated_weights[0][:, 3:], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("cross_attn", KINDS)
def test_changing_a_later_token_never_changes_earlier_outputs(cross_attn: str) -> None:
    decoder = _decoder(cross_attn=cross_attn)
    tokens, memory = _inputs()
    logits = decoder(tokens, memory)
    for t in range(tokens.shape[1] - 1):
        changed = tokens.clone()
        changed[:, t + 1] = (changed[:, t + 1] + 1) % V
        changed_logits = decoder(changed, memory)
        assert torch.equal(changed_logits[:, : t + 1], logits[:, : t + 1])
        assert not torch.allclose(changed_logits[:, t + 1], logits[:, t + 1])


def test_sinusoidal_decodes_beyond_max_len_learned_raises() -> None:
    tokens, memory = _inputs(T=6)
    decoder = _decoder(max_len=4)
    cross_kv = decoder.project_memory(memory)
    cache = decoder.init_cache(2)
    steps = [decoder.forward_step(tokens[:, t : t + 1], cross_kv, cache)[0] for t in range(6)]
    assert_close(torch.cat(steps, dim=1), decoder(tokens, memory), atol=1e-5, rtol=1e-5)

    learned = _decoder(max_len=4, pos_embed="learned")
    with pytest.raises(ValueError, match="max_len=4"):
        learned(tokens, memory)
    cache = learned.init_cache(2)
    learned.forward_step(tokens[:, :4], learned.project_memory(memory), cache)
    with pytest.raises(ValueError, match="max_len=4"):
        learned.forward_step(tokens[:, 4:5], learned.project_memory(memory), cache)


def test_memory_padding_and_precomputed_cross_kv() -> None:
    decoder = _decoder(memory_dim=24)
    tokens = _inputs()[0]
    memory = torch.randn(2, N, 24)
    padding = torch.zeros(2, N, dtype=torch.bool)
    padding[0, -3:] = True
    logits = decoder(tokens, memory, padding)
    assert logits.shape == (2, 7, V)
    assert_close(decoder(tokens, cross_kv=decoder.project_memory(memory, padding)), logits)
    changed = memory.clone()
    changed[0, -3:] = 5.0
    assert_close(decoder(tokens, changed, padding), logits)
    assert not torch.allclose(decoder(tokens, changed), decoder(tokens, memory))


def test_tied_and_untied_heads() -> None:
    tied = _decoder()
    assert tied.head.weight is tied.tok_embed.weight
    untied = _decoder(tie_weights=False)
    assert untied.head.weight is not untied.tok_embed.weight
    n_tied = sum(p.numel() for p in tied.parameters())
    assert sum(p.numel() for p in untied.parameters()) == n_tied + V * D


def test_decoder_errors_name_the_problem() -> None:
    decoder = _decoder()
    tokens, memory = _inputs()
    with pytest.raises(ValueError, match="memory"):
        decoder(tokens)
    with pytest.raises(ValueError, match="rows"):
        decoder.forward_step(tokens, decoder.project_memory(memory), decoder.init_cache(3))
    with pytest.raises(ValueError, match="pos_embed"):
        _decoder(pos_embed="rotary")


@pytest.mark.parametrize("cross_attn", KINDS)
@pytest.mark.parametrize("setting", ["dropout", "attn_drop"])
def test_each_dropout_setting_acts_in_training_only(setting: str, cross_attn: str) -> None:
    tokens, memory = _inputs()
    plain = _decoder(cross_attn=cross_attn)
    dropped = _decoder(cross_attn=cross_attn, **{setting: 0.5})  # same seed, so the same weights
    assert torch.equal(dropped(tokens, memory), plain(tokens, memory))  # eval mode: dropout off
    plain.train()
    dropped.train()
    torch.manual_seed(2)
    reference = plain(tokens, memory)
    torch.manual_seed(2)
    assert not torch.allclose(dropped(tokens, memory), reference), f"{setting}=0.5 changes nothing in training"


@pytest.mark.parametrize("cross_attn", KINDS)
def test_every_dropout_module_is_set_and_applied(cross_attn: str) -> None:
    decoder = _decoder(cross_attn=cross_attn, dropout=0.5, attn_drop=0.5).train()
    dropouts = {name: m for name, m in decoder.named_modules() if isinstance(m, nn.Dropout)}
    # The settings reach every dropout module (none is left at p=0, where it could never act) ...
    assert dropouts and {name: m.p for name, m in dropouts.items()} == dict.fromkeys(dropouts, 0.5)
    # ... and each module, switched on alone, changes the training output.
    tokens, memory = _inputs()
    for m in dropouts.values():
        m.p = 0.0
    torch.manual_seed(2)
    reference = decoder(tokens, memory)
    for name, m in dropouts.items():
        if cross_attn == "linear" and name.endswith("cross_attn.attn_drop"):
            continue  # linear attention has no attention probabilities to drop (documented)
        m.p = 0.5
        torch.manual_seed(2)
        out = decoder(tokens, memory)
        m.p = 0.0
        assert not torch.allclose(out, reference), f"{name} has no effect in training"
