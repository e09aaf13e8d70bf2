"""Caption generation: greedy decoding, batched beam search and sampling over a ``Captioner``.

Every strategy is a plain function over a ``TextDecoder``, the encoded images (``memory``) and an explicit
``DecoderCache`` it creates (litgpt's ``generate/base.py`` and nanochat's ``engine.py`` keep the same split: the
model computes logits, these functions choose tokens). Images are encoded once and their cross-attention keys and
values projected once (``decoder.project_memory``); the ``g`` rows of one image (beams, or independent samples)
are contiguous, ``b * g .. b * g + g - 1``, and read that one copy through the decoder's grouped cross-attention.

Scores, for every strategy alike:

- ``logprob``: the sum of the chosen tokens' log-probabilities, eos included, under the decoder's distribution
  *after* the logit processors (repetition penalty, no-repeat-n-gram, min-length and special-token bans), that
  is ``log_softmax`` of the processed logits. Sampling warpers (temperature, top-k, top-p) only change how a
  token is drawn, not the reported log-probability, so sampled and searched captions are comparable.
- ``score = logprob / length ** length_penalty`` with ``length`` the number of generated tokens, eos included:
  Hugging Face's definition (``BeamSearchScorer``), not GNMT's ``((5 + length) / 6) ** alpha``. Beam search
  ranks by it.

pad and bos are never generated: a caption contains neither, and the decoder was never trained to emit them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from vitcap.layers.pos_embed import LearnedPositionEmbedding
from vitcap.models.captioner import Captioner
from vitcap.models.decoder import TextDecoder
from vitcap.models.encoders import Encoder

__all__ = [
    "GenerationConfig",
    "Generated",
    "Hypothesis",
    "attention_grid",
    "beam_search",
    "generate",
    "generate_from_memory",
    "greedy",
    "sample",
]


@dataclass
class GenerationConfig:
    """How to generate captions; validated on construction.

    Attributes:
        max_length: Most new tokens per caption, eos included (bos is not counted).
        min_length: eos is forbidden before this many tokens have been generated.
        num_beams: Beam width k; 1 = greedy (or sampling with ``do_sample``).
        length_penalty: Exponent ``alpha`` of ``score = logprob / length ** alpha`` (Hugging Face's definition);
            0 ranks by raw log-probability, > 0 favours longer captions.
        num_return_sequences: Hypotheses returned per image: the n best finished beams (<= ``num_beams``), or n
            independent samples. Greedy returns 1.
        do_sample: Draw tokens instead of taking the most probable one (only with ``num_beams=1``).
        temperature: Sampling temperature (> 0).
        top_k: Sample among the k most probable tokens; 0 = off.
        top_p: Nucleus sampling: sample among the smallest set of tokens whose probability reaches p; 1 = off.
        repetition_penalty: CTRL-style penalty (> 0) on tokens already in the caption: positive logits are divided
            by it, negative ones multiplied; 1 = off.
        no_repeat_ngram_size: Forbid tokens that would complete an n-gram already in the caption; 0 = off.
        use_cache: Decode one token per step against the self-attention KV cache. False recomputes the whole
            prefix every step with ``decoder(tokens, memory)`` (a reference path for tests and benchmarks).
        output_attentions: Return each caption's cross-attention maps. Only then the decoder takes its explicit
            softmax path; otherwise it keeps the fused kernel.
        attention_layer: Decoder block whose cross-attention maps are returned (negative counts from the end).
        seed: Seed of the sampling ``torch.Generator``; None draws from torch's global generator.
    """

    max_length: int = 32
    min_length: int = 0
    num_beams: int = 1
    length_penalty: float = 1.0
    num_return_sequences: int = 1
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    use_cache: bool = True
    output_attentions: bool = False
    attention_layer: int = -1
    seed: int | None = None

    def __post_init__(self) -> None:
        def fail(key: str, expected: str) -> None:
            raise ValueError(f"GenerationConfig.{key} must be {expected}, got {getattr(self, key)!r}")

        for key in ("max_length", "min_length", "num_beams", "num_return_sequences", "top_k", "no_repeat_ngram_size"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool):
                fail(key, "an int")
        if self.max_length < 1:
            fail("max_length", ">= 1")
        if not 0 <= self.min_length <= self.max_length:
            fail("min_length", f"between 0 and max_length={self.max_length}")
        if self.num_beams < 1:
            fail("num_beams", ">= 1")
        if self.num_return_sequences < 1:
            fail("num_return_sequences", ">= 1")
        if self.num_beams > 1 and self.num_return_sequences > self.num_beams:
            fail("num_return_sequences", f"<= num_beams={self.num_beams} (beam search returns its n best beams)")
        if self.num_beams > 1 and self.do_sample:
            raise ValueError("GenerationConfig: do_sample=True needs num_beams=1 (beam sampling is not supported)")
        if self.num_beams == 1 and not self.do_sample and self.num_return_sequences != 1:
            fail("num_return_sequences", "1 for greedy decoding (set do_sample=True or num_beams > 1 for more)")
        if not self.temperature > 0:
            fail("temperature", "> 0")
        if self.top_k < 0:
            fail("top_k", ">= 0 (0 = off)")
        if not 0 < self.top_p <= 1:
            fail("top_p", "in (0, 1] (1 = off)")
        if not self.repetition_penalty > 0:
            fail("repetition_penalty", "> 0 (1 = off)")
        if self.no_repeat_ngram_size < 0:
            fail("no_repeat_ngram_size", ">= 0 (0 = off)")
        if self.seed is not None and (not isinstance(self.seed, int) or isinstance(self.seed, bool)):
            fail("seed", "an int or None")


@dataclass
class Hypothesis:
    """One generated caption.

    Attributes:
        tokens: Token ids without bos and eos.
        score: ``logprob / length ** length_penalty`` (``length = len(token_logprobs)``), used for ranking.
        logprob: Sum of ``token_logprobs``.
        token_logprobs: ``(len(tokens) + ended,)`` float; the last entry is eos's log-probability when ``ended``.
        ended: The caption ended with eos (False: it was cut at ``max_length``).
        attention: ``(len(tokens), N)`` cross-attention maps when asked for, else None. Row ``i`` is the attention
            over all N image tokens (prefix tokens included) of the query that predicted word ``i``, averaged over
            the heads of the chosen layer; each row sums to 1. The eos step has no row (it names no word).
    """

    tokens: list[int]
    score: float
    logprob: float
    token_logprobs: Tensor
    ended: bool
    attention: Tensor | None = None


@dataclass
class Generated:
    """Hypotheses of a batch of images: ``hypotheses[b]`` lists image ``b``'s captions, best score first.

    Beam search may return fewer than ``num_return_sequences`` when fewer distinct captions exist.
    """

    hypotheses: list[list[Hypothesis]]

    def __len__(self) -> int:
        return len(self.hypotheses)

    def __getitem__(self, index: int) -> list[Hypothesis]:
        return self.hypotheses[index]

    def __iter__(self) -> Iterator[list[Hypothesis]]:
        return iter(self.hypotheses)

    @property
    def best(self) -> list[Hypothesis]:
        """The highest-scoring hypothesis of every image."""
        return [hyps[0] for hyps in self.hypotheses]

    def tokens(self) -> list[list[int]]:
        """Token ids (no bos/eos) of every image's best caption, ready for ``tokenizer.decode_batch``."""
        return [hyp.tokens for hyp in self.best]


@torch.inference_mode()
def generate(
    model: Captioner,
    images: Tensor,
    config: GenerationConfig | None = None,
    *,
    bos_id: int,
    eos_id: int,
    pad_id: int = 0,
) -> Generated:
    """Caption images with greedy decoding, beam search or sampling, as ``config`` says.

    Put the model in eval mode first; this function does not change it.

    Args:
        model: The captioner.
        images: ``(B, C, H, W)`` preprocessed images.
        config: Strategy and limits; defaults to greedy with ``max_length=32``.
        bos_id: Token every caption starts from.
        eos_id: Token that ends a caption.
        pad_id: Padding token (never generated).

    Returns:
        ``Generated`` with an n-best list per image.
    """
    return generate_from_memory(model, model.encode(images), config, bos_id=bos_id, eos_id=eos_id, pad_id=pad_id)


@torch.inference_mode()
def generate_from_memory(
    model: Captioner | TextDecoder,
    memory: Tensor,
    config: GenerationConfig | None = None,
    *,
    bos_id: int,
    eos_id: int,
    pad_id: int = 0,
) -> Generated:
    """Like ``generate`` for images already encoded (``memory = model.encode(images)``, ``(B, N, Dm)``)."""
    config = config or GenerationConfig()
    decoder = model.decoder if isinstance(model, Captioner) else model
    if config.num_beams > 1:
        return beam_search(decoder, memory, config, bos_id=bos_id, eos_id=eos_id, pad_id=pad_id)
    if config.do_sample:
        return sample(decoder, memory, config, bos_id=bos_id, eos_id=eos_id, pad_id=pad_id)
    return greedy(decoder, memory, config, bos_id=bos_id, eos_id=eos_id, pad_id=pad_id)


@torch.inference_mode()
def greedy(
    decoder: TextDecoder,
    memory: Tensor,
    config: GenerationConfig | None = None,
    *,
    bos_id: int,
    eos_id: int,
    pad_id: int = 0,
) -> Generated:
    """Greedy decoding: the most probable (processed) token at every step, one caption per image.

    Args:
        decoder: The text decoder.
        memory: Image tokens ``(B, N, Dm)``.
        config: Limits and processors; ``num_beams``, ``do_sample``, ``num_return_sequences`` and the sampling
            warpers are ignored.
        bos_id: Start token.
        eos_id: End token.
        pad_id: Padding token.
    """
    config = config or GenerationConfig()
    return _decode_rows(decoder, memory, config, 1, False, None, bos_id, eos_id, pad_id)


@torch.inference_mode()
def sample(
    decoder: TextDecoder,
    memory: Tensor,
    config: GenerationConfig,
    *,
    bos_id: int,
    eos_id: int,
    pad_id: int = 0,
) -> Generated:
    """Ancestral sampling with temperature, top-k and top-p; ``num_return_sequences`` samples per image.

    The samples of one image are drawn independently in one batch (grouped rows sharing the image's keys and
    values) and returned best score first. ``config.seed`` makes them reproducible.

    Args:
        decoder: The text decoder.
        memory: Image tokens ``(B, N, Dm)``.
        config: Warpers, limits and processors; ``num_beams`` and ``do_sample`` are ignored (this samples).
        bos_id: Start token.
        eos_id: End token.
        pad_id: Padding token.
    """
    generator = None
    if config.seed is not None:
        generator = torch.Generator(device=memory.device).manual_seed(config.seed)
    group = config.num_return_sequences
    return _decode_rows(decoder, memory, config, group, True, generator, bos_id, eos_id, pad_id)


@torch.inference_mode()
def beam_search(
    decoder: TextDecoder,
    memory: Tensor,
    config: GenerationConfig,
    *,
    bos_id: int,
    eos_id: int,
    pad_id: int = 0,
) -> Generated:
    """Batched beam search: ``B`` images x ``k`` beams decoded as one ``(B * k)``-row batch.

    Each image's beams share its cross-attention keys/values (grouped rows, no copies); the self-attention cache
    follows the beams with ``cache.reorder``. At every step each image keeps the ``2k`` best continuations of its
    beams: those ending in eos among the top ``k`` (and, at ``max_length``, all of the top ``k``) enter the
    image's pool of ``k`` finished hypotheses (the role of Hugging Face's ``BeamHypotheses`` heap), and the ``k``
    best others continue. The bookkeeping is vectorised over images and beams, pool included (like Hugging Face's
    current beam search), so a step has one host sync: "did anything finish, is every image done", read together.
    An image is done, and its pool frozen, once no live beam can beat its worst finished hypothesis *at the beam's
    current length* (Hugging Face's default ``early_stopping=False`` heuristic; exact for ``length_penalty <= 0``),
    so ``num_beams=1`` reproduces greedy decoding.

    Args:
        decoder: The text decoder.
        memory: Image tokens ``(B, N, Dm)``.
        config: Beam width, length penalty, limits, processors.
        bos_id: Start token.
        eos_id: End token.
        pad_id: Padding token.
    """
    _check_inputs(decoder, memory, config, bos_id, eos_id, pad_id)
    B, N, _ = memory.shape
    k, L, V, alpha = config.num_beams, config.max_length, decoder.vocab_size, config.length_penalty
    R = B * k
    device = memory.device
    need_weights = config.output_attentions
    stepper = _Stepper(decoder, memory, R, config)
    bans = _banned_specials(V, bos_id, eos_id, pad_id, device)

    seq = torch.full((R, L + 1), pad_id, dtype=torch.long, device=device)  # bos + generated tokens
    seq[:, 0] = bos_id
    token_lp = torch.zeros(R, L, device=device)  # log-prob of each generated token
    attn = torch.zeros(R, L, N, device=device) if need_weights else None
    # The k beams of an image start as copies of one; only beam 0 may expand, or step 0 would pick k identical
    # continuations.
    beam_sum = torch.full((B, k), float("-inf"), device=device)  # (B, k) running log-prob, sorted best first
    beam_sum[:, 0] = 0.0

    # Finished pool per image, sorted best first; -inf score = empty slot.
    pool_score = torch.full((B, k), float("-inf"), device=device)
    pool_sum = torch.zeros(B, k, device=device)
    pool_len = torch.zeros(B, k, dtype=torch.long, device=device)
    pool_ended = torch.zeros(B, k, dtype=torch.bool, device=device)
    pool_seq = torch.full((B, k, L), pad_id, dtype=torch.long, device=device)
    pool_lp = torch.zeros(B, k, L, device=device)
    pool_attn = torch.zeros(B, k, L, N, device=device) if need_weights else None
    done = torch.zeros(B, dtype=torch.bool, device=device)

    num_cand = min(2 * k, k * V)  # at most k candidates end in eos (one per beam), so k others remain
    row_offset = torch.arange(B, device=device)[:, None] * k  # (B, 1) first row of each image
    rank = torch.arange(num_cand, device=device)
    for t in range(L):
        logits, weights = stepper.step(seq[:, : t + 1], need_weights)  # (R, V), (R, N) or None
        logprobs = _process_logits(logits, seq[:, 1 : t + 1], t, config, bans, eos_id)  # (R, V)
        cand = (beam_sum.view(R, 1) + logprobs).view(B, k * V)
        cand_sum, cand_idx = cand.topk(num_cand, dim=1)  # (B, 2k), best first
        cand_tok = cand_idx % V
        cand_row = cand_idx // V + row_offset  # (B, 2k) flat row each candidate extends
        cand_lp = logprobs.view(-1).gather(0, (cand_row * V + cand_tok).view(-1)).view(B, num_cand)

        # Finished candidates: only the top k may finish (the others exist to keep k beams alive, as in HF).
        is_eos = cand_tok == eos_id
        last = t == L - 1
        denom = _length_norm(torch.tensor(t + 1, device=device), alpha)
        ends = (is_eos | last) & (rank < k) & torch.isfinite(cand_sum) & ~done[:, None]  # (B, 2k)
        new_score = torch.where(ends[:, :k], cand_sum[:, :k] / denom, float("-inf"))  # (B, k)
        merged_score, keep = torch.cat([pool_score, new_score], dim=1).topk(k, dim=1)  # (B, k)

        if last:
            any_end, all_done = True, True
        else:
            # Live beams: the k best candidates that did not end (dead beams carry -inf and never finish).
            beam_sum, pick = cand_sum.masked_fill(is_eos, float("-inf")).topk(k, dim=1)  # (B, k)
            origin = cand_row.gather(1, pick).view(R)  # (R,) row each new beam continues
            # HF's is_done: the best live beam, scored at its current length, cannot beat the worst finished
            # one. An empty slot (-inf) keeps the image open unless every beam is dead too.
            done = done | (merged_score[:, -1] >= beam_sum[:, 0] / denom)
            any_end, all_done = torch.stack([ends.any(), done.all()]).tolist()  # the one host sync per step

        if any_end:  # merge the new finished hypotheses into the pool (histories before this step's reorder)
            top_rows = cand_row[:, :k].reshape(-1)  # (B*k,)
            new_seq = seq.index_select(0, top_rows)[:, 1:].view(B, k, L).clone()
            new_seq[:, :, t] = cand_tok[:, :k]
            new_lp = token_lp.index_select(0, top_rows).view(B, k, L).clone()
            new_lp[:, :, t] = cand_lp[:, :k]
            pool_score = merged_score
            pool_sum = torch.cat([pool_sum, cand_sum[:, :k]], dim=1).gather(1, keep)
            pool_len = torch.cat([pool_len, torch.full_like(pool_len, t + 1)], dim=1).gather(1, keep)
            pool_ended = torch.cat([pool_ended, is_eos[:, :k]], dim=1).gather(1, keep)
            keep_l = keep[:, :, None].expand(B, k, L)
            pool_seq = torch.cat([pool_seq, new_seq], dim=1).gather(1, keep_l)
            pool_lp = torch.cat([pool_lp, new_lp], dim=1).gather(1, keep_l)
            if attn is not None and weights is not None and pool_attn is not None:
                new_attn = attn.index_select(0, top_rows).view(B, k, L, N).clone()
                new_attn[:, :, t] = weights.index_select(0, top_rows).view(B, k, N)
                keep_n = keep[:, :, None, None].expand(B, k, L, N)
                pool_attn = torch.cat([pool_attn, new_attn], dim=1).gather(1, keep_n)
        if all_done:
            break

        seq = seq.index_select(0, origin)
        seq[:, t + 1] = cand_tok.gather(1, pick).view(R)
        token_lp = token_lp.index_select(0, origin)
        token_lp[:, t] = cand_lp.gather(1, pick).view(R)
        if attn is not None and weights is not None:
            attn = attn.index_select(0, origin)
            attn[:, t] = weights.index_select(0, origin)
        stepper.reorder(origin)

    num_return = min(config.num_return_sequences, k)
    return _collect(
        pool_seq[:, :num_return],
        pool_lp[:, :num_return],
        pool_len[:, :num_return],
        pool_sum[:, :num_return],
        pool_score[:, :num_return],
        pool_ended[:, :num_return],
        None if pool_attn is None else pool_attn[:, :num_return],
    )


def attention_grid(maps: Tensor, encoder: Encoder) -> Tensor:
    """Reshape cross-attention maps over all image tokens to the encoder's spatial grid.

    Prefix tokens (class/register, ``encoder.num_prefix_tokens``) are dropped and the rest is *not* renormalised,
    so a map's sum shows how much attention went to the image grid rather than the prefix tokens.

    Args:
        maps: ``(words, N)`` from ``Hypothesis.attention`` (or any ``(..., N)``).
        encoder: The captioner's encoder (``num_prefix_tokens``, ``grid_size``).

    Returns:
        ``(words, h, w)`` (or ``(..., h, w)``) with ``(h, w) = encoder.grid_size``.
    """
    h, w = encoder.grid_size
    prefix = encoder.num_prefix_tokens
    if maps.shape[-1] != prefix + h * w:
        raise ValueError(
            f"attention maps cover {maps.shape[-1]} image tokens, but the encoder has {prefix} prefix tokens and a "
            f"{h}x{w} grid ({prefix + h * w} tokens); were they made with this encoder and image size?"
        )
    return maps[..., prefix:].reshape(*maps.shape[:-1], h, w)  # (..., h*w) -> (..., h, w)


class _Stepper:
    """Next-token logits of ``R`` rows, with the KV cache (one new token per step) or without (whole prefix)."""

    def __init__(self, decoder: TextDecoder, memory: Tensor, rows: int, config: GenerationConfig) -> None:
        self.decoder = decoder
        self.memory = memory
        self.layer = config.attention_layer
        # Keys/values of every image, projected once and shared by its rows.
        self.cross_kv = decoder.project_memory(memory) if config.use_cache or config.output_attentions else None
        self.cache = decoder.init_cache(rows) if config.use_cache else None

    def step(self, prefix: Tensor, need_weights: bool) -> tuple[Tensor, Tensor | None]:
        """Logits ``(R, V)`` after ``prefix (R, t + 1)`` (bos + generated), and its cross-attention ``(R, N)``."""
        if self.cache is not None:
            assert self.cross_kv is not None
            logits, weights = self.decoder.forward_step(prefix[:, -1:], self.cross_kv, self.cache, need_weights)
        elif need_weights:
            # The explicit path over the whole prefix: a throwaway cache makes forward_step a teacher-forced pass.
            assert self.cross_kv is not None
            scratch = self.decoder.init_cache(prefix.shape[0])
            logits, weights = self.decoder.forward_step(prefix, self.cross_kv, scratch, True)
        else:
            # The uncached reference path recomputes everything, image keys/values included (HF's use_cache=False).
            return self.decoder(prefix, self.memory)[:, -1], None
        attn = weights[self.layer][:, -1] if weights is not None else None
        return logits[:, -1], attn

    def reorder(self, index: Tensor) -> None:
        if self.cache is not None:
            self.cache.reorder(index)


def _check_inputs(
    decoder: TextDecoder, memory: Tensor, config: GenerationConfig, bos_id: int, eos_id: int, pad_id: int
) -> None:
    if memory.ndim != 3:
        raise ValueError(f"memory must be (B, N, D) image tokens, got shape {tuple(memory.shape)}")
    V = decoder.vocab_size
    for name, value in (("bos_id", bos_id), ("eos_id", eos_id), ("pad_id", pad_id)):
        if not 0 <= value < V:
            raise ValueError(f"{name}={value} is outside the decoder's vocabulary of {V} tokens")
    if bos_id == eos_id:
        raise ValueError(f"bos_id and eos_id must differ, both are {bos_id}")
    depth = len(decoder.blocks)
    if not -depth <= config.attention_layer < depth:
        raise ValueError(
            f"GenerationConfig.attention_layer={config.attention_layer} but the decoder has {depth} blocks"
        )
    if isinstance(decoder.pos_embed, LearnedPositionEmbedding) and config.max_length > decoder.max_len:
        raise ValueError(
            f"GenerationConfig.max_length={config.max_length} exceeds the decoder's learned position table "
            f"(max_len={decoder.max_len}); generate at most {decoder.max_len} tokens"
        )


def _length_norm(length: Tensor, alpha: float) -> Tensor:
    """``length ** alpha`` in float32; greedy and beam search share it so their scores agree bit for bit."""
    return length.float().pow(alpha)


class _Bans(NamedTuple):
    """Ids ``(n,)`` of tokens never generated: ``always`` bos and pad; ``early`` (before min_length) eos too."""

    always: Tensor
    early: Tensor


def _banned_specials(vocab_size: int, bos_id: int, eos_id: int, pad_id: int, device: torch.device) -> _Bans:
    """Tokens a caption never contains: bos and pad (unless pad doubles as eos); eos before ``min_length``."""
    always = sorted({bos_id, pad_id} - {eos_id})
    # With a vocabulary of special tokens only, eos is all there is, even before min_length.
    early = always + [eos_id] if len(always) + 1 < vocab_size else always
    return _Bans(torch.tensor(always, device=device), torch.tensor(early, device=device))


def _process_logits(
    logits: Tensor, generated: Tensor, step: int, config: GenerationConfig, bans: _Bans, eos_id: int
) -> Tensor:
    """Apply the logit processors and return float32 log-probabilities ``(R, V)``.

    Args:
        logits: Next-token logits ``(R, V)``; scratch, may be overwritten.
        generated: Tokens generated so far ``(R, step)`` (bos excluded).
        step: Index of the token being chosen (= tokens generated so far).
        config: Processor settings.
        bans: Tokens never generated, before and after ``min_length``.
        eos_id: End token.
    """
    logits = logits.float()
    if config.repetition_penalty != 1.0 and step > 0:
        seen = logits.gather(1, generated)  # (R, step); duplicates get the same value, so scatter is safe
        seen = torch.where(seen < 0, seen * config.repetition_penalty, seen / config.repetition_penalty)
        logits = logits.scatter(1, generated, seen)
    banned = bans.early if step < config.min_length else bans.always
    n = config.no_repeat_ngram_size
    if n > 0 and step + 1 >= n:
        ban = _ngram_ban(generated, n, logits.shape[1])  # (R, V)
        ban[:, banned] = True
        # Conflicting bans can leave a row nothing to emit; let it end rather than produce NaNs.
        stuck = ban.all(dim=1)  # (R,)
        ban[:, eos_id] &= ~stuck
        logits = logits.masked_fill_(ban, float("-inf"))
    else:
        # A few columns, in place: cheaper than a (R, V) masked_fill at every step.
        logits = logits.index_fill_(1, banned, float("-inf"))
    return logits.log_softmax(dim=-1)


def _ngram_ban(generated: Tensor, n: int, vocab_size: int) -> Tensor:
    """``(R, V)`` bool: tokens that would complete an n-gram already present in ``generated (R, t)``."""
    R, t = generated.shape
    if t < n:
        return torch.zeros(R, vocab_size, dtype=torch.bool, device=generated.device)
    grams = generated.unfold(1, n, 1)  # (R, t - n + 1, n)
    prefix = generated[:, t - n + 1 :]  # (R, n - 1) the tokens the next one would extend
    match = (grams[:, :, :-1] == prefix[:, None, :]).all(dim=-1)  # (R, t - n + 1)
    # scatter_add, not scatter: a token can close several n-grams, some matching and some not.
    counts = torch.zeros(R, vocab_size, device=generated.device)
    counts.scatter_add_(1, grams[:, :, -1], match.float())
    return counts > 0


def _warp_and_draw(logprobs: Tensor, config: GenerationConfig, generator: torch.Generator | None) -> Tensor:
    """Draw one token per row ``(R,)`` from ``logprobs (R, V)`` warped by temperature, top-k and top-p."""
    logits = logprobs / config.temperature  # log-probs differ from logits by a per-row constant
    if config.top_k > 0 and config.top_k < logits.shape[1]:
        kth = logits.topk(config.top_k, dim=1).values[:, -1:]  # (R, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if config.top_p < 1.0:
        sorted_logits, order = logits.sort(dim=1, descending=True)
        probs = sorted_logits.softmax(dim=1)
        # Drop a token when the tokens before it already reach top_p; the most probable one always stays.
        drop = probs.cumsum(dim=1) - probs >= config.top_p
        logits = logits.masked_fill(drop.scatter(1, order, drop), float("-inf"))
    return torch.multinomial(logits.softmax(dim=1), 1, generator=generator).squeeze(1)


def _decode_rows(
    decoder: TextDecoder,
    memory: Tensor,
    config: GenerationConfig,
    group: int,
    sampling: bool,
    generator: torch.Generator | None,
    bos_id: int,
    eos_id: int,
    pad_id: int,
) -> Generated:
    """Greedy or sampled (``sampling``) decoding of ``group`` rows per image, ``(B * group)`` rows in all."""
    _check_inputs(decoder, memory, config, bos_id, eos_id, pad_id)
    B, N, _ = memory.shape
    L, R, device = config.max_length, B * group, memory.device
    need_weights = config.output_attentions
    stepper = _Stepper(decoder, memory, R, config)
    bans = _banned_specials(decoder.vocab_size, bos_id, eos_id, pad_id, device)

    seq = torch.full((R, L + 1), pad_id, dtype=torch.long, device=device)  # bos + generated tokens
    seq[:, 0] = bos_id
    token_lp = torch.zeros(R, L, device=device)
    attn = torch.zeros(R, L, N, device=device) if need_weights else None
    total = torch.zeros(R, device=device)  # summed step by step, in the same order as beam search's running sums
    finished = torch.zeros(R, dtype=torch.bool, device=device)
    length = torch.full((R,), L, dtype=torch.long, device=device)  # generated tokens, eos included
    for t in range(L):
        logits, weights = stepper.step(seq[:, : t + 1], need_weights)
        logprobs = _process_logits(logits, seq[:, 1 : t + 1], t, config, bans, eos_id)  # (R, V)
        token = _warp_and_draw(logprobs, config, generator) if sampling else logprobs.argmax(dim=1)  # (R,)
        lp = logprobs.gather(1, token[:, None]).squeeze(1)
        # Finished rows keep stepping (the batch stays rectangular) but add pad at log-prob 0.
        seq[:, t + 1] = token.masked_fill(finished, pad_id)
        lp = lp.masked_fill(finished, 0.0)
        token_lp[:, t] = lp
        total = total + lp
        if attn is not None and weights is not None:
            attn[:, t] = weights
        ended = (token == eos_id) & ~finished
        length = torch.where(ended, t + 1, length)
        finished = finished | ended
        if bool(finished.all()):  # the one host sync per step
            break

    score = total / _length_norm(length, config.length_penalty)
    # Best first within each image (matters for several samples per image).
    score_g, order = score.view(B, group).sort(dim=1, descending=True, stable=True)
    rows = (order + torch.arange(B, device=device)[:, None] * group).view(-1)
    return _collect(
        seq[rows, 1:].view(B, group, L),
        token_lp[rows].view(B, group, L),
        length[rows].view(B, group),
        total[rows].view(B, group),
        score_g,
        finished[rows].view(B, group),
        None if attn is None else attn[rows].view(B, group, L, N),
    )


def _collect(
    seqs: Tensor,
    token_lp: Tensor,
    length: Tensor,
    total: Tensor,
    score: Tensor,
    ended: Tensor,
    attn: Tensor | None,
) -> Generated:
    """Turn ``(B, n, ...)`` result tensors into ``Hypothesis`` lists, skipping empty (-inf) slots.

    Args:
        seqs: Generated tokens ``(B, n, L)`` (eos included, pad after it).
        token_lp: Per-token log-probs ``(B, n, L)``.
        length: Generated tokens, eos included, ``(B, n)``.
        total: Summed log-probs ``(B, n)``.
        score: Length-penalised scores ``(B, n)``.
        ended: Ended with eos ``(B, n)``.
        attn: Cross-attention maps ``(B, n, L, N)`` or None.
    """
    seqs_l, length_l, total_l, score_l, ended_l = (
        x.tolist() for x in (seqs.cpu(), length.cpu(), total.cpu(), score.cpu(), ended.cpu())
    )
    token_lp = token_lp.cpu()
    attn = None if attn is None else attn.cpu()
    out: list[list[Hypothesis]] = []
    for b in range(len(seqs_l)):
        hyps = []
        for i in range(len(seqs_l[b])):
            if score_l[b][i] == float("-inf"):
                continue
            n, ended_i = length_l[b][i], ended_l[b][i]
            words = n - int(ended_i)
            hyps.append(
                Hypothesis(
                    tokens=seqs_l[b][i][:words],
                    score=score_l[b][i],
                    logprob=total_l[b][i],
                    token_logprobs=token_lp[b, i, :n].clone(),
                    ended=ended_i,
                    attention=None if attn is None else attn[b, i, :words].clone(),
                )
            )
        out.append(hyps)
    return Generated(out)
