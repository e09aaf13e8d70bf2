"""Generation: cached vs uncached, beam vs greedy, batched vs single-image beams, exhaustive search, maps, sampling."""

from __future__ import annotations

import itertools

import pytest
import torch

from vitcap.generate import (
    Generated,
    GenerationConfig,
    attention_grid,
    beam_search,
    generate,
    generate_from_memory,
    greedy,
    sample,
)
from vitcap.generate.processors import banned_specials, process_logits
from vitcap.models import TextDecoder, create_captioner

PAD, BOS, EOS = 0, 1, 2
N_TOKENS = 17  # a class token + a 4 x 4 grid, like the toy ViT on 32-px images


def make_decoder(
    seed: int = 0,
    vocab_size: int = 12,
    *,
    eos_bias: float = 0.0,
    norm_first: bool = True,
    pos_embed: str = "sinusoidal",
    cross_attn: str = "scaled_dot",
) -> TextDecoder:
    """A toy decoder with large random weights, so captions vary (a fresh init repeats one token) and differ per image."""
    torch.manual_seed(seed)
    decoder = TextDecoder(
        vocab_size,
        embed_dim=32,
        depth=2,
        num_heads=2,
        max_len=16,
        pos_embed=pos_embed,
        norm_first=norm_first,
        cross_attn=cross_attn,
        tie_weights=False,
    )
    with torch.no_grad():
        for p in decoder.parameters():
            if p.ndim >= 2:
                p.normal_(0.0, 1.5 / p.shape[-1] ** 0.5)
        # A constant direction in the last LayerNorm's output that only the eos row reads: eos gets a logit offset
        # of about eos_bias, so captions end at varied lengths.
        norm = decoder.norm if norm_first else decoder.blocks[-1].norm3
        direction = torch.nn.functional.normalize(torch.randn(32), dim=0)
        norm.bias += direction
        decoder.head.weight[EOS] += eos_bias * direction
    return decoder.eval()


def make_memory(batch: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, N_TOKENS, 32, generator=torch.Generator().manual_seed(seed + 100))


def run(decoder: TextDecoder, memory: torch.Tensor, **config: object) -> Generated:
    return generate_from_memory(decoder, memory, GenerationConfig(**config), bos_id=BOS, eos_id=EOS, pad_id=PAD)


def captions(out: Generated) -> list[list[list[int]]]:
    return [[hyp.tokens for hyp in hyps] for hyps in out.hypotheses]


def scores(out: Generated) -> torch.Tensor:
    return torch.tensor([[hyp.score for hyp in hyps] for hyps in out.hypotheses])


def teacher_forced(decoder: TextDecoder, memory: torch.Tensor, tokens: list[int], layer: int) -> tuple:
    """Per-token log-probs (pad/bos banned, as generation does) and cross-attention maps of one caption."""
    prefix = torch.tensor([[BOS, *tokens]])
    cache = decoder.init_cache(1)
    logits, weights = decoder.forward_step(prefix, decoder.project_memory(memory[None]), cache, need_weights=True)
    logits = logits[0].float()
    logits[:, [PAD, BOS]] = float("-inf")
    return logits.log_softmax(-1), weights[layer][0]  # (T, V), (T, N)


@pytest.mark.parametrize("cross_attn", ["scaled_dot", "additive", "linear"])
@pytest.mark.parametrize(("norm_first", "pos_embed"), [(True, "sinusoidal"), (False, "learned")])
def test_greedy_with_cache_equals_without(cross_attn: str, norm_first: bool, pos_embed: str) -> None:
    distinct = 0
    for seed in range(3):
        decoder = make_decoder(seed, norm_first=norm_first, pos_embed=pos_embed, cross_attn=cross_attn, eos_bias=1.5)
        memory = make_memory(4, seed)
        cached = run(decoder, memory, max_length=12)
        uncached = run(decoder, memory, max_length=12, use_cache=False)
        assert captions(cached) == captions(uncached)
        torch.testing.assert_close(scores(cached), scores(uncached), rtol=1e-5, atol=1e-5)
        distinct = max(distinct, len({tuple(c[0]) for c in captions(cached)}))
    # Images must get different captions somewhere, or row mix-ups in the batch could go unnoticed.
    assert distinct > 1


def test_beam_with_cache_equals_without() -> None:
    decoder, memory = make_decoder(1, eos_bias=1.25), make_memory(3, 1)
    cached = run(decoder, memory, max_length=10, num_beams=3, num_return_sequences=3)
    uncached = run(decoder, memory, max_length=10, num_beams=3, num_return_sequences=3, use_cache=False)
    assert captions(cached) == captions(uncached)
    torch.testing.assert_close(scores(cached), scores(uncached), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("length_penalty", [0.0, 1.0, 2.0])
def test_beam_one_equals_greedy(length_penalty: float) -> None:
    for seed in range(3):
        decoder, memory = make_decoder(seed, eos_bias=1.5), make_memory(4, seed)
        by_greedy = run(decoder, memory, max_length=12, length_penalty=length_penalty)
        config = GenerationConfig(max_length=12, num_beams=1, length_penalty=length_penalty)
        by_beam = beam_search(decoder, memory, config, bos_id=BOS, eos_id=EOS, pad_id=PAD)
        assert captions(by_beam) == captions(by_greedy)
        torch.testing.assert_close(scores(by_beam), scores(by_greedy), rtol=1e-6, atol=1e-6)
        for g, b in zip(by_greedy.best, by_beam.best, strict=True):
            assert g.ended == b.ended
            torch.testing.assert_close(g.token_logprobs, b.token_logprobs, rtol=0, atol=0)


@pytest.mark.parametrize("num_beams", [3, 5])
def test_batched_beam_equals_per_image_beam(num_beams: int) -> None:
    decoder, memory = make_decoder(0, eos_bias=1.25), make_memory(4, 0)
    config = dict(max_length=10, num_beams=num_beams, num_return_sequences=num_beams, length_penalty=0.7)
    batched = run(decoder, memory, **config)
    assert len(batched) == 4
    for b in range(4):
        single = run(decoder, memory[b : b + 1], **config)
        assert captions(single)[0] == captions(batched)[b]
        torch.testing.assert_close(scores(single)[0], scores(batched)[b], rtol=1e-5, atol=1e-5)
        for s, t in zip(single[0], batched[b], strict=True):
            torch.testing.assert_close(s.token_logprobs, t.token_logprobs, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("length_penalty", [0.0, 1.0, 2.5])
def test_beam_search_finds_exhaustive_optimum(length_penalty: float) -> None:
    # V = 5: pad, bos, eos and two words; captions of at most L = 3 tokens, eos included.
    L, words = 3, [3, 4]
    candidates = [list(c) + [EOS] for n in range(L) for c in itertools.product(words, repeat=n)]
    candidates += [list(c) for c in itertools.product(words, repeat=L)]  # cut at max_length without eos
    assert len(candidates) == 15
    for seed in range(3):
        decoder, memory = make_decoder(seed, vocab_size=5, eos_bias=0.5), make_memory(1, seed)
        exhaustive = []
        for seq in candidates:
            logprobs, _ = teacher_forced(decoder, memory[0], seq, layer=-1)
            total = logprobs[torch.arange(len(seq)), torch.tensor(seq)].sum().item()
            words_only = seq[:-1] if seq[-1] == EOS else seq
            exhaustive.append((total / len(seq) ** length_penalty, words_only))
        exhaustive.sort(key=lambda x: -x[0])

        out = run(decoder, memory, max_length=L, num_beams=16, num_return_sequences=16, length_penalty=length_penalty)
        hyps = out[0]
        assert hyps[0].tokens == exhaustive[0][1]
        # With k >= every possible caption, the n-best list is the whole ranking.
        assert [h.tokens for h in hyps] == [w for _, w in exhaustive]
        torch.testing.assert_close(torch.tensor([h.score for h in hyps]), torch.tensor([s for s, _ in exhaustive]))
        assert all(a.score >= b.score for a, b in itertools.pairwise(hyps))


def test_nbest_sorted_and_consistent() -> None:
    decoder, memory = make_decoder(3, eos_bias=0.7), make_memory(2, 3)
    out = run(decoder, memory, max_length=10, num_beams=4, num_return_sequences=3, length_penalty=1.2)
    for hyps in out.hypotheses:
        assert len(hyps) == 3
        assert len({tuple(h.tokens) for h in hyps}) == 3
        assert all(a.score >= b.score for a, b in itertools.pairwise(hyps))
        for h in hyps:
            n = len(h.token_logprobs)
            assert n == len(h.tokens) + h.ended
            assert h.logprob == pytest.approx(h.token_logprobs.sum().item(), abs=1e-5)
            assert h.score == pytest.approx(h.logprob / n**1.2, abs=1e-5)


@pytest.mark.parametrize("use_cache", [True, False])
@pytest.mark.parametrize("layer", [-1, 0])
@pytest.mark.parametrize("mode", ["greedy", "beam", "sample"])
def test_attention_maps_belong_to_the_returned_caption(mode: str, layer: int, use_cache: bool) -> None:
    decoder, memory = make_decoder(4, eos_bias=0.3), make_memory(3, 4)
    extra = {"greedy": {}, "beam": {"num_beams": 3, "num_return_sequences": 3}}.get(
        mode, {"do_sample": True, "seed": 0, "num_return_sequences": 2}
    )
    common = dict(max_length=8, attention_layer=layer, use_cache=use_cache, **extra)
    with_maps = run(decoder, memory, output_attentions=True, **common)
    without = run(decoder, memory, **common)
    assert captions(with_maps) == captions(without)
    assert all(h.attention is None for hyps in without.hypotheses for h in hyps)
    for b, hyps in enumerate(with_maps.hypotheses):
        for hyp in hyps:
            maps = hyp.attention
            assert maps is not None and maps.shape == (len(hyp.tokens), N_TOKENS)
            torch.testing.assert_close(maps.sum(-1), torch.ones(len(hyp.tokens)))
            # Recompute this exact caption teacher-forced: maps that missed a beam reordering would differ.
            logprobs, expected = teacher_forced(decoder, memory[b], hyp.tokens, layer)
            torch.testing.assert_close(maps, expected[: len(hyp.tokens)], rtol=1e-4, atol=1e-5)
            targets = hyp.tokens + [EOS] * hyp.ended
            expected_lp = logprobs[torch.arange(len(targets)), targets]
            torch.testing.assert_close(hyp.token_logprobs, expected_lp, rtol=1e-4, atol=1e-4)


def test_generate_on_a_captioner_and_attention_grid() -> None:
    torch.manual_seed(0)
    model = create_captioner("toy", vocab_size=12).eval()
    images = torch.randn(2, 3, 32, 32)
    config = GenerationConfig(max_length=6, num_beams=2, output_attentions=True)
    out = generate(model, images, config, bos_id=BOS, eos_id=EOS, pad_id=PAD)
    again = generate_from_memory(model, model.encode(images), config, bos_id=BOS, eos_id=EOS, pad_id=PAD)
    assert out.tokens() == again.tokens() and len(out.tokens()) == 2
    assert [nbest[0].tokens for nbest in out] == out.tokens()
    hyp = out.best[0]
    grid = attention_grid(hyp.attention, model.encoder)
    h, w = model.encoder.grid_size
    assert grid.shape == (len(hyp.tokens), h, w) == (len(hyp.tokens), 4, 4)
    torch.testing.assert_close(grid.flatten(1), hyp.attention[:, model.encoder.num_prefix_tokens :])
    with pytest.raises(ValueError, match="prefix tokens"):
        attention_grid(hyp.attention[:, 1:], model.encoder)


def test_greedy_stops_once_every_row_ended() -> None:
    decoder, memory = make_decoder(6, eos_bias=4.0), make_memory(4, 6)
    calls = 0
    forward_step = decoder.forward_step

    def counting_step(*args, **kwargs):
        nonlocal calls
        calls += 1
        return forward_step(*args, **kwargs)

    decoder.forward_step = counting_step
    out = run(decoder, memory, max_length=16)
    longest = max(len(h.token_logprobs) for h in out.best)
    assert all(h.ended for h in out.best) and longest < 16
    assert calls == longest


def test_sampling_is_reproducible_with_a_seed() -> None:
    decoder, memory = make_decoder(6, eos_bias=0.3), make_memory(3, 6)
    config = dict(max_length=10, do_sample=True, num_return_sequences=4, temperature=1.5, top_p=0.95)
    first = run(decoder, memory, seed=123, **config)
    assert captions(first) == captions(run(decoder, memory, seed=123, **config))
    assert captions(first) != captions(run(decoder, memory, seed=124, **config))
    for hyps in first.hypotheses:
        assert len(hyps) == 4
        assert all(a.score >= b.score for a, b in itertools.pairwise(hyps))


def test_top_k_one_equals_greedy() -> None:
    decoder, memory = make_decoder(7, eos_bias=0.5), make_memory(4, 7)
    by_greedy = run(decoder, memory, max_length=10)
    sampled = run(decoder, memory, max_length=10, do_sample=True, top_k=1, temperature=3.0, seed=0)
    assert captions(sampled) == captions(by_greedy)
    torch.testing.assert_close(scores(sampled), scores(by_greedy))


def test_top_p_keeps_only_the_nucleus() -> None:
    decoder, memory = make_decoder(8), make_memory(4, 8)
    # A nucleus smaller than the top token's probability leaves only that token: greedy again.
    sampled = run(decoder, memory, max_length=10, do_sample=True, top_p=1e-6, temperature=5.0, seed=0)
    assert captions(sampled) == captions(run(decoder, memory, max_length=10))


@pytest.mark.parametrize("mode", [{}, {"num_beams": 3}, {"do_sample": True, "temperature": 2.0, "seed": 0}])
def test_no_repeat_ngram(mode: dict) -> None:
    decoder, memory = make_decoder(9, vocab_size=30), make_memory(4, 9)
    baseline = run(decoder, memory, max_length=12, **mode)
    assert any(len(set(h.tokens)) < len(h.tokens) for h in baseline.best)  # repeats happen without the ban
    for hyp in run(decoder, memory, max_length=12, no_repeat_ngram_size=1, **mode).best:
        assert len(set(hyp.tokens)) == len(hyp.tokens)
    for hyp in run(decoder, memory, max_length=12, no_repeat_ngram_size=2, **mode).best:
        bigrams = list(itertools.pairwise(hyp.tokens))
        assert len(set(bigrams)) == len(bigrams)


@pytest.mark.parametrize("mode", [{}, {"num_beams": 3}, {"do_sample": True, "seed": 0, "num_return_sequences": 3}])
def test_min_and_max_length(mode: dict) -> None:
    decoder, memory = make_decoder(10, eos_bias=2.0), make_memory(4, 10)
    short = run(decoder, memory, max_length=10, **mode)
    assert any(len(h.tokens) < 4 for hyps in short.hypotheses for h in hyps)  # eos comes early by default
    for hyps in run(decoder, memory, max_length=10, min_length=4, **mode).hypotheses:
        assert all(len(h.tokens) >= 4 for h in hyps)
    for hyps in run(decoder, memory, max_length=3, **mode).hypotheses:
        assert all(len(h.token_logprobs) <= 3 for h in hyps)
    # min_length == max_length forbids eos entirely: every caption is cut at max_length.
    for hyps in run(decoder, memory, max_length=5, min_length=5, **mode).hypotheses:
        assert all(len(h.tokens) == 5 and not h.ended for h in hyps)


def test_repetition_penalty_is_ctrl_style() -> None:
    logits = torch.tensor([[0.0, 0.0, 0.0, 2.0, -1.0, 1.0]])
    generated = torch.tensor([[3, 4, 3]])
    config = GenerationConfig(repetition_penalty=2.0)
    out = process_logits(logits, generated, 3, config, banned_specials(6, BOS, EOS, PAD, logits.device), EOS)
    expected = torch.tensor([[float("-inf"), float("-inf"), 0.0, 1.0, -2.0, 1.0]]).log_softmax(-1)
    torch.testing.assert_close(out, expected)


def test_conflicting_bans_end_the_caption_instead_of_nan() -> None:
    decoder, memory = make_decoder(11, vocab_size=5), make_memory(2, 11)
    out = run(decoder, memory, max_length=6, min_length=5, no_repeat_ngram_size=1)
    for hyp in out.best:
        assert len(hyp.tokens) == 2 and hyp.ended and torch.isfinite(hyp.token_logprobs).all()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_length", 0),
        ("min_length", 40),
        ("num_beams", 0),
        ("num_return_sequences", 4),
        ("temperature", 0.0),
        ("top_k", -1),
        ("top_p", 0.0),
        ("repetition_penalty", 0.0),
        ("no_repeat_ngram_size", -1),
    ],
)
def test_config_rejects_bad_values(field: str, value: float) -> None:
    settings = {"num_beams": 3} if field == "num_return_sequences" else {}
    with pytest.raises(ValueError, match=field):
        GenerationConfig(**{**settings, field: value})


def test_config_rejects_bad_combinations() -> None:
    with pytest.raises(ValueError, match="beam sampling"):
        GenerationConfig(num_beams=2, do_sample=True)
    with pytest.raises(ValueError, match="greedy"):
        GenerationConfig(num_return_sequences=2)
    decoder, memory = make_decoder(0, pos_embed="learned"), make_memory(1)
    with pytest.raises(ValueError, match="max_len"):
        greedy(decoder, memory, GenerationConfig(max_length=17), bos_id=BOS, eos_id=EOS)
    with pytest.raises(ValueError, match="attention_layer"):
        sample(decoder, memory, GenerationConfig(do_sample=True, attention_layer=2), bos_id=BOS, eos_id=EOS)
    with pytest.raises(ValueError, match="eos_id"):
        greedy(decoder, memory, GenerationConfig(), bos_id=BOS, eos_id=99)
