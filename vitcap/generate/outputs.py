"""What generation returns: ``Hypothesis`` and ``Generated``, the batched ``HypothesisTensors`` every strategy
finishes in, the length-normalised score, and ``attention_grid`` for the maps."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from vitcap.models import Encoder

__all__ = ["Generated", "Hypothesis", "HypothesisTensors", "attention_grid", "length_norm"]


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


def length_norm(length: Tensor, alpha: float) -> Tensor:
    """``length ** alpha`` in float32; greedy and beam search share it so their scores agree bit for bit."""
    return length.float().pow(alpha)


class HypothesisTensors(NamedTuple):
    """``n`` hypotheses for each of ``B`` images as ``(B, n, ...)`` tensors; a ``-inf`` score is an empty slot.

    Greedy decoding and sampling finish in this form, and beam search keeps its pool of finished hypotheses in it.

    Attributes:
        seqs: Generated tokens ``(B, n, L)`` (eos included, pad after it).
        token_lp: Per-token log-probs ``(B, n, L)``.
        length: Generated tokens, eos included, ``(B, n)``.
        total: Summed log-probs ``(B, n)``.
        score: Length-penalised scores ``(B, n)``.
        ended: Ended with eos ``(B, n)``.
        attn: Cross-attention maps ``(B, n, L, N)`` or None.
    """

    seqs: Tensor
    token_lp: Tensor
    length: Tensor
    total: Tensor
    score: Tensor
    ended: Tensor
    attn: Tensor | None

    def head(self, n: int) -> HypothesisTensors:
        """The first ``n`` hypotheses of every image."""
        return HypothesisTensors(*(None if x is None else x[:, :n] for x in self))

    def merge(self, new: HypothesisTensors, keep: Tensor) -> HypothesisTensors:
        """The hypotheses at ``keep (B, k)``, indices into ``self`` followed by ``new`` along dimension 1."""
        merged = []
        for old, extra in zip(self, new):
            if old is None or extra is None:
                merged.append(None)
                continue
            index = keep.view(*keep.shape, *[1] * (old.ndim - 2)).expand(*keep.shape, *old.shape[2:])
            merged.append(torch.cat([old, extra], dim=1).gather(1, index))
        return HypothesisTensors(*merged)

    def to_generated(self) -> Generated:
        """Turn the tensors into ``Hypothesis`` lists, skipping empty (-inf) slots."""
        seqs_l, length_l, total_l, score_l, ended_l = (
            x.tolist()
            for x in (self.seqs.cpu(), self.length.cpu(), self.total.cpu(), self.score.cpu(), self.ended.cpu())
        )
        token_lp = self.token_lp.cpu()
        attn = None if self.attn is None else self.attn.cpu()
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
