"""Greedy decoding and batched beam search in numpy: the twins of `vitcap.generate`'s, for the ONNX runtime.

They follow `vitcap.generate`'s scoring rules step for step (see its package docstring): log-probabilities are
`log_softmax` of the processed float32 logits (pad and bos always banned, eos banned before `min_length`,
repetition penalty, no-repeat-n-gram); `score = logprob / length ** length_penalty` with eos counted; beam search
keeps the `2k` best continuations per image, lets only the top `k` finish, keeps a pool of `k` finished
hypotheses per image and stops an image with Hugging Face's `early_stopping=False` rule. The tests hold them to
PyTorch's tokens and scores.

The model is a `StepDecoder`: one call per step, fed each row's newest token, returning the next-token logits;
`reorder` makes row `r` continue row `index[r]` (beam search). Rows of one image are contiguous.

numpy only: no torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Protocol

import numpy as np

from vitcap.generate.config import GenerationConfig

__all__ = ["Hypothesis", "StepDecoder", "beam_search", "greedy", "process_logits"]

NEG_INF = np.float32(-np.inf)


class StepDecoder(Protocol):
    """What the searches decode with (`vitcap.deploy.runtime` implements it over onnxruntime sessions)."""

    def __call__(self, tokens: np.ndarray) -> np.ndarray:
        """Feed every row's newest token `(R, 1)` int64; return the next-token logits `(R, V)` float32."""
        ...

    def reorder(self, index: np.ndarray) -> None:
        """Row `r` continues row `index[r]` `(R,)`: the self-attention cache follows (beam search)."""
        ...


@dataclass
class Hypothesis:
    """One generated caption (the numpy twin of `vitcap.generate.Hypothesis`, without attention maps).

    Attributes:
        tokens: Token ids without bos and eos.
        score: `logprob / length ** length_penalty`, used for ranking.
        logprob: Sum of `token_logprobs`.
        token_logprobs: `(len(tokens) + ended,)` float32; the last entry is eos's when `ended`.
        ended: The caption ended with eos (False: cut at `max_length`).
    """

    tokens: list[int]
    score: float
    logprob: float
    token_logprobs: np.ndarray
    ended: bool


class SpecialBans(NamedTuple):
    """Ids never generated: `always` bos and pad; `early` (before min_length) eos too."""

    always: np.ndarray
    early: np.ndarray


def banned_specials(vocab_size: int, bos_id: int, eos_id: int, pad_id: int) -> SpecialBans:
    always = sorted({bos_id, pad_id} - {eos_id})
    early = always + [eos_id] if len(always) + 1 < vocab_size else always
    return SpecialBans(np.array(always, dtype=np.int64), np.array(early, dtype=np.int64))


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise `log_softmax` of `(R, V)` float32, computed as torch does: `x - max - log(sum(exp(x - max)))`."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def process_logits(
    logits: np.ndarray, generated: np.ndarray, step: int, config: GenerationConfig, bans: SpecialBans, eos_id: int
) -> np.ndarray:
    """`vitcap.generate.processors.process_logits` in numpy: processed log-probabilities `(R, V)` float32.

    Args:
        logits: Next-token logits `(R, V)`; overwritten.
        generated: Tokens generated so far `(R, step)` (bos excluded).
        step: Index of the token being chosen.
        config: Processor settings.
        bans: Tokens never generated.
        eos_id: End token.
    """
    logits = logits.astype(np.float32, copy=False)
    if config.repetition_penalty != 1.0 and step > 0:
        seen = np.take_along_axis(logits, generated, axis=1)  # (R, t)
        seen = np.where(
            seen < 0, seen * np.float32(config.repetition_penalty), seen / np.float32(config.repetition_penalty)
        )
        np.put_along_axis(logits, generated, seen, axis=1)
    banned = bans.early if step < config.min_length else bans.always
    n = config.no_repeat_ngram_size
    if n > 0 and step + 1 >= n:
        ban = ngram_ban(generated, n, logits.shape[1])  # (R, V)
        ban[:, banned] = True
        stuck = ban.all(axis=1)  # conflicting bans left a row nothing: let it end
        ban[:, eos_id] &= ~stuck
        logits[ban] = NEG_INF
    else:
        logits[:, banned] = NEG_INF
    return log_softmax(logits)


def ngram_ban(generated: np.ndarray, n: int, vocab_size: int) -> np.ndarray:
    """`(R, V)` bool: tokens that would complete an n-gram already in `generated (R, t)`."""
    R, t = generated.shape
    ban = np.zeros((R, vocab_size), dtype=bool)
    if t < n:
        return ban
    grams = np.lib.stride_tricks.sliding_window_view(generated, n, axis=1)  # (R, t - n + 1, n)
    prefix = generated[:, t - n + 1 :]  # (R, n - 1)
    match = (grams[:, :, :-1] == prefix[:, None, :]).all(axis=-1)  # (R, t - n + 1)
    rows, where = np.nonzero(match)
    ban[rows, grams[rows, where, -1]] = True
    return ban


def _length_norm(length: np.ndarray | int, alpha: float) -> np.ndarray:
    return np.power(np.asarray(length, dtype=np.float32), np.float32(alpha))


def _check(decoder_vocab: int, config: GenerationConfig, bos_id: int, eos_id: int, pad_id: int) -> None:
    for name, value in (("bos_id", bos_id), ("eos_id", eos_id), ("pad_id", pad_id)):
        if not 0 <= value < decoder_vocab:
            raise ValueError(f"{name}={value} is outside the decoder's vocabulary of {decoder_vocab} tokens")
    if bos_id == eos_id:
        raise ValueError(f"bos_id and eos_id must differ, both are {bos_id}")


def greedy(
    decoder: StepDecoder,
    num_images: int,
    vocab_size: int,
    config: GenerationConfig,
    *,
    bos_id: int,
    eos_id: int,
    pad_id: int = 0,
) -> list[list[Hypothesis]]:
    """Greedy decoding of `num_images` rows (one per image); finished rows keep stepping on pad, as in PyTorch.

    Returns:
        One single-entry n-best list per image.
    """
    _check(vocab_size, config, bos_id, eos_id, pad_id)
    R, L = num_images, config.max_length
    bans = banned_specials(vocab_size, bos_id, eos_id, pad_id)
    seq = np.full((R, L + 1), pad_id, dtype=np.int64)
    seq[:, 0] = bos_id
    token_lp = np.zeros((R, L), dtype=np.float32)
    total = np.zeros(R, dtype=np.float32)
    finished = np.zeros(R, dtype=bool)
    length = np.full(R, L, dtype=np.int64)
    rows = np.arange(R)
    for t in range(L):
        logprobs = process_logits(decoder(seq[:, t : t + 1]), seq[:, 1 : t + 1], t, config, bans, eos_id)
        token = logprobs.argmax(axis=1)  # (R,) first maximum, as torch.argmax
        lp = np.where(finished, np.float32(0.0), logprobs[rows, token])
        seq[:, t + 1] = np.where(finished, pad_id, token)
        token_lp[:, t] = lp
        total = total + lp
        ended = (token == eos_id) & ~finished
        length = np.where(ended, t + 1, length)
        finished |= ended
        if finished.all():
            break
    score = total / _length_norm(length, config.length_penalty)
    return [
        [_hypothesis(seq[r, 1:], token_lp[r], int(length[r]), float(total[r]), float(score[r]), bool(finished[r]))]
        for r in range(R)
    ]


def _hypothesis(seq: np.ndarray, token_lp: np.ndarray, n: int, total: float, score: float, ended: bool) -> Hypothesis:
    words = n - int(ended)
    return Hypothesis(seq[:words].tolist(), score, total, token_lp[:n].copy(), ended)


def _top(values: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The `n` largest entries of each row `(B, M)`, best first, and their indices (ties: lower index first)."""
    index = np.argsort(-values, axis=1, kind="stable")[:, :n]
    return np.take_along_axis(values, index, axis=1), index


def beam_search(
    decoder: StepDecoder,
    num_images: int,
    vocab_size: int,
    config: GenerationConfig,
    *,
    bos_id: int,
    eos_id: int,
    pad_id: int = 0,
) -> list[list[Hypothesis]]:
    """Batched beam search over `num_images * num_beams` rows (`vitcap.generate.beam_search`'s rules).

    Returns:
        Each image's n-best list (`num_return_sequences` at most), best score first.
    """
    _check(vocab_size, config, bos_id, eos_id, pad_id)
    k, B, V, L, alpha = config.num_beams, num_images, vocab_size, config.max_length, config.length_penalty
    R = B * k
    bans = banned_specials(V, bos_id, eos_id, pad_id)
    seq = np.full((R, L + 1), pad_id, dtype=np.int64)
    seq[:, 0] = bos_id
    token_lp = np.zeros((R, L), dtype=np.float32)
    beam_sum = np.full((B, k), NEG_INF, dtype=np.float32)  # only beam 0 may expand at the first step
    beam_sum[:, 0] = 0.0
    # the finished pool, best first; -inf = empty slot
    pool_seq = np.full((B, k, L), pad_id, dtype=np.int64)
    pool_lp = np.zeros((B, k, L), dtype=np.float32)
    pool_len = np.zeros((B, k), dtype=np.int64)
    pool_total = np.zeros((B, k), dtype=np.float32)
    pool_score = np.full((B, k), NEG_INF, dtype=np.float32)
    pool_ended = np.zeros((B, k), dtype=bool)
    done = np.zeros(B, dtype=bool)

    num_cand = min(2 * k, k * V)
    row_offset = np.arange(B)[:, None] * k  # (B, 1)
    top_k = np.arange(num_cand) < k
    for t in range(L):
        logprobs = process_logits(decoder(seq[:, t : t + 1]), seq[:, 1 : t + 1], t, config, bans, eos_id)
        cand = (beam_sum.reshape(R, 1) + logprobs).reshape(B, k * V)
        cand_sum, cand_idx = _top(cand, num_cand)  # (B, 2k)
        cand_tok = cand_idx % V
        cand_row = cand_idx // V + row_offset
        cand_lp = logprobs[cand_row, cand_tok]  # (B, 2k)

        is_eos = cand_tok == eos_id
        last = t == L - 1
        denom = _length_norm(t + 1, alpha)
        ends = (is_eos | last) & top_k & np.isfinite(cand_sum) & ~done[:, None]
        new_score = np.where(ends[:, :k], cand_sum[:, :k] / denom, NEG_INF).astype(np.float32)  # (B, k)
        merged_score, keep = _top(np.concatenate([pool_score, new_score], axis=1), k)

        if not last:
            beam_sum, pick = _top(np.where(is_eos, NEG_INF, cand_sum), k)
            origin = np.take_along_axis(cand_row, pick, axis=1).reshape(R)
            done = done | (merged_score[:, -1] >= beam_sum[:, 0] / denom)

        if last or ends.any():
            top_rows = cand_row[:, :k].reshape(-1)
            new_seq, new_lp = seq[top_rows, 1:].copy(), token_lp[top_rows].copy()  # (B*k, L)
            new_seq[:, t] = cand_tok[:, :k].reshape(-1)
            new_lp[:, t] = cand_lp[:, :k].reshape(-1)
            pairs = (
                (pool_seq, new_seq.reshape(B, k, L)),
                (pool_lp, new_lp.reshape(B, k, L)),
                (pool_len, np.full((B, k), t + 1, dtype=np.int64)),
                (pool_total, cand_sum[:, :k]),
                (pool_score, new_score),
                (pool_ended, is_eos[:, :k]),
            )
            pool_seq, pool_lp, pool_len, pool_total, pool_score, pool_ended = (_gather(a, b, keep) for a, b in pairs)
        if last or done.all():
            break

        seq, token_lp = seq[origin], token_lp[origin]
        decoder.reorder(origin)
        seq[:, t + 1] = np.take_along_axis(cand_tok, pick, axis=1).reshape(R)
        token_lp[:, t] = np.take_along_axis(cand_lp, pick, axis=1).reshape(R)

    n = min(config.num_return_sequences, k)
    return [
        [
            _hypothesis(
                pool_seq[b, i],
                pool_lp[b, i],
                int(pool_len[b, i]),
                float(pool_total[b, i]),
                float(pool_score[b, i]),
                bool(pool_ended[b, i]),
            )  # fmt: skip
            for i in range(n)
            if pool_score[b, i] != NEG_INF
        ]
        for b in range(B)
    ]


def _gather(old: np.ndarray, new: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Entries `keep (B, k)` of `old` followed by `new` along axis 1."""
    both = np.concatenate([old, new.astype(old.dtype, copy=False)], axis=1)
    index = keep.reshape(*keep.shape, *[1] * (both.ndim - 2))
    return np.take_along_axis(both, index, axis=1)
