"""Logits processors and sampling warpers: functions over the next-token logits ``(R, V)`` of ``R`` rows.

Processors (special-token bans, min length, repetition penalty, no-repeat-n-gram; ``process_logits``) change the
distribution that every strategy chooses from and reports log-probabilities under. Warpers (temperature, top-k,
top-p; ``warp_logits``) only change how a sampled token is drawn (``draw``), not the reported log-probability, so
sampled and searched captions are comparable.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from vitcap.generate.config import GenerationConfig

__all__ = [
    "SpecialBans",
    "banned_specials",
    "draw",
    "ngram_ban",
    "process_logits",
    "repetition_penalty",
    "top_k_filter",
    "top_p_filter",
    "warp_logits",
]


class SpecialBans(NamedTuple):
    """Ids ``(n,)`` of tokens never generated: ``always`` bos and pad; ``early`` (before min_length) eos too."""

    always: Tensor
    early: Tensor


def banned_specials(vocab_size: int, bos_id: int, eos_id: int, pad_id: int, device: torch.device) -> SpecialBans:
    """Tokens a caption never contains: bos and pad (unless pad doubles as eos); eos before ``min_length``."""
    always = sorted({bos_id, pad_id} - {eos_id})
    # With a vocabulary of special tokens only, eos is all there is, even before min_length.
    early = always + [eos_id] if len(always) + 1 < vocab_size else always
    return SpecialBans(torch.tensor(always, device=device), torch.tensor(early, device=device))


def process_logits(
    logits: Tensor, generated: Tensor, step: int, config: GenerationConfig, bans: SpecialBans, eos_id: int
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
        logits = repetition_penalty(logits, generated, config.repetition_penalty)
    banned = bans.early if step < config.min_length else bans.always
    n = config.no_repeat_ngram_size
    if n > 0 and step + 1 >= n:
        ban = ngram_ban(generated, n, logits.shape[1])  # (R, V)
        ban[:, banned] = True
        # Conflicting bans can leave a row nothing to emit; let it end rather than produce NaNs.
        stuck = ban.all(dim=1)  # (R,)
        ban[:, eos_id] &= ~stuck
        logits = logits.masked_fill_(ban, float("-inf"))
    else:
        # A few columns, in place: cheaper than a (R, V) masked_fill at every step.
        logits = logits.index_fill_(1, banned, float("-inf"))
    return logits.log_softmax(dim=-1)


def repetition_penalty(logits: Tensor, generated: Tensor, penalty: float) -> Tensor:
    """CTRL's penalty on the logits ``(R, V)`` of tokens in ``generated (R, t)``: divide positive, multiply negative."""
    seen = logits.gather(1, generated)  # (R, t); duplicates get the same value, so scatter is safe
    seen = torch.where(seen < 0, seen * penalty, seen / penalty)
    return logits.scatter(1, generated, seen)


def ngram_ban(generated: Tensor, n: int, vocab_size: int) -> Tensor:
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


def warp_logits(logprobs: Tensor, config: GenerationConfig) -> Tensor:
    """Sampling logits ``(R, V)``: ``logprobs (R, V)`` warped by temperature, top-k and top-p."""
    logits = logprobs / config.temperature  # log-probs differ from logits by a per-row constant
    logits = top_k_filter(logits, config.top_k)
    return top_p_filter(logits, config.top_p)


def top_k_filter(logits: Tensor, top_k: int) -> Tensor:
    """Keep the ``top_k`` largest logits of each row ``(R, V)`` (ties with the k-th included); 0 = keep all."""
    if not 0 < top_k < logits.shape[1]:
        return logits
    kth = logits.topk(top_k, dim=1).values[:, -1:]  # (R, 1)
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: Tensor, top_p: float) -> Tensor:
    """Keep the smallest set of most probable tokens of each row ``(R, V)`` that reaches ``top_p``; 1 = keep all."""
    if top_p >= 1.0:
        return logits
    sorted_logits, order = logits.sort(dim=1, descending=True)
    probs = sorted_logits.softmax(dim=1)
    # Drop a token when the tokens before it already reach top_p; the most probable one always stays.
    drop = probs.cumsum(dim=1) - probs >= top_p
    return logits.masked_fill(drop.scatter(1, order, drop), float("-inf"))


def draw(logprobs: Tensor, config: GenerationConfig, generator: torch.Generator | None) -> Tensor:
    """Draw one token per row ``(R,)`` from ``logprobs (R, V)`` warped by temperature, top-k and top-p."""
    return torch.multinomial(warp_logits(logprobs, config).softmax(dim=1), 1, generator=generator).squeeze(1)
