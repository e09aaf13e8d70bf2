"""Corpus BLEU-1..4 exactly as the COCO caption evaluation computes it.

Reproduces ``pycocoevalcap/bleu/bleu_scorer.py`` (``Bleu(4).compute_score``, option ``"closest"``):

- per image, n-gram counts of the candidate are clipped by the maximum count of that n-gram in any single
  reference; clipped matches (``correct``) and candidate n-grams (``guess``) are summed over the corpus;
- the reference length of an image is the reference length closest to the candidate's (the shorter one on
  ties), summed over the corpus; the brevity penalty ``exp(1 - r / c)`` applies when ``c < r``;
- ``BLEU-n = (prod_{k<=n} (correct_k + 1e-15) / (guess_k + 1e-9)) ** (1 / n)``, the ``tiny``/``small``
  constants of the original (so a corpus with no matches scores ~1e-8, not 0, and BLEU of a perfect match is
  1 - O(1e-9)), and the length ratio ``(c + 1e-15) / (r + 1e-9)``.

Scores are on the 0-1 scale of pycocoevalcap. Everything is additive over images, so the metric keeps
only ``2 + 2n`` integer counters and syncs them with a sum across processes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from vitcap.metrics.ngrams import NGram, ngram_counts
from vitcap.metrics.tokenize import prepare_batch

__all__ = ["CaptionBLEU", "BleuStats", "bleu_from_stats", "bleu_stats", "corpus_bleu", "summed_bleu_stats"]

# pycocoevalcap's constants: "tiny" keeps a zero-match corpus at ~0 instead of 0/0, "small" avoids x/0.
_TINY = 1e-15
_SMALL = 1e-9

# (candidate length, closest reference length, guess counts per n, clipped correct counts per n)
BleuStats = tuple[int, int, list[int], list[int]]


def bleu_stats(candidate: str, references: Sequence[str], n: int = 4) -> BleuStats:
    """Sufficient statistics of one image for corpus BLEU (``cook_refs`` + ``cook_test`` of pycocoevalcap).

    Args:
        candidate: Tokenised candidate caption (words separated by whitespace).
        references: Tokenised reference captions of the same image; at least one.
        n: Highest n-gram order.

    Returns:
        ``(testlen, reflen, guess, correct)``: candidate length, the reference length closest to it (shorter
        on ties), candidate n-gram counts per order (``max(0, testlen - k + 1)``) and matches clipped by the
        maximum count in any single reference, per order.

    Raises:
        ValueError: If ``references`` is empty.
    """
    if len(references) == 0:
        raise ValueError("BLEU needs at least one reference caption per image, got an empty list")
    ref_lens = []
    max_counts: dict[NGram, int] = {}
    for ref in references:
        words = ref.split()
        ref_lens.append(len(words))
        for ngram, count in ngram_counts(words, n).items():
            if count > max_counts.get(ngram, 0):
                max_counts[ngram] = count
    words = candidate.split()
    testlen = len(words)
    reflen = min((abs(length - testlen), length) for length in ref_lens)[1]
    guess = [max(0, testlen - k + 1) for k in range(1, n + 1)]
    correct = [0] * n
    for ngram, count in ngram_counts(words, n).items():
        correct[len(ngram) - 1] += min(max_counts.get(ngram, 0), count)
    return testlen, reflen, guess, correct


def summed_bleu_stats(candidates: Sequence[str], references: Sequence[Sequence[str]], n: int = 4) -> BleuStats:
    """:func:`bleu_stats` summed over a batch of images (all four statistics are additive over images).

    Args:
        candidates: One tokenised candidate per image.
        references: The tokenised references of each image (same order); at least one per image.
        n: Highest n-gram order.

    Returns:
        ``(testlen, reflen, guess, correct)`` summed over the images (zeros for an empty batch).
    """
    testlen = reflen = 0
    guess, correct = [0] * n, [0] * n
    for cand, refs in zip(candidates, references, strict=True):
        t, r, g, c = bleu_stats(cand, refs, n)
        testlen += t
        reflen += r
        guess = [a + b for a, b in zip(guess, g, strict=True)]
        correct = [a + b for a, b in zip(correct, c, strict=True)]
    return testlen, reflen, guess, correct


def bleu_from_stats(testlen: int, reflen: int, guess: Sequence[int], correct: Sequence[int]) -> list[float]:
    """Corpus BLEU-1..n from corpus-summed statistics (``BleuScorer.compute_score``, corpus part).

    Args:
        testlen: Total candidate length.
        reflen: Total closest-reference length.
        guess: Total candidate n-grams per order (length n).
        correct: Total clipped matches per order (length n).

    Returns:
        ``[BLEU-1, ..., BLEU-n]`` on the 0-1 scale.
    """
    scores = []
    product = 1.0
    for k, (c, g) in enumerate(zip(correct, guess, strict=True)):
        product *= float(c + _TINY) / (g + _SMALL)
        scores.append(product ** (1.0 / (k + 1)))
    ratio = (testlen + _TINY) / (reflen + _SMALL)
    if ratio < 1:
        penalty = math.exp(1 - 1 / ratio)
        scores = [s * penalty for s in scores]
    return scores


def corpus_bleu(candidates: Sequence[str], references: Sequence[Sequence[str]], n: int = 4) -> list[float]:
    """Corpus BLEU-1..n of already tokenised captions, as ``pycocoevalcap.bleu.Bleu(n)``.

    Args:
        candidates: One tokenised candidate per image.
        references: The tokenised references of each image (same order).
        n: Highest n-gram order.

    Returns:
        ``[BLEU-1, ..., BLEU-n]`` on the 0-1 scale.
    """
    if len(candidates) != len(references):
        raise ValueError(f"got {len(candidates)} candidates but {len(references)} reference lists")
    if len(candidates) == 0:
        raise ValueError("BLEU of an empty corpus is undefined")
    return bleu_from_stats(*summed_bleu_stats(candidates, references, n))


class CaptionBLEU(Metric):
    """COCO corpus BLEU-1..n as a torchmetrics ``Metric`` (pycocoevalcap parity, no Java).

    Captions are tokenised with :func:`~vitcap.metrics.tokenize.coco_tokenize` unless ``tokenize=False``.
    The state is ``2 + 2n`` int64 counters summed across batches and processes.

    Args:
        n_gram: Highest n-gram order (4 for BLEU-4).
        tokenize: Apply COCO tokenisation to predictions and references in ``update``.
        kwargs: Forwarded to ``torchmetrics.Metric`` (``sync_on_compute``, ``process_group``, ``dist_sync_fn``, ...).

    Example:
        >>> metric = CaptionBLEU()
        >>> metric.update(["a dog runs on the grass"], [["a dog runs on grass", "a brown dog runs"]])
        >>> metric.compute()["bleu4"]  # 0-1 scale; multiply by 100 for "points"
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, n_gram: int = 4, tokenize: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if n_gram < 1:
            raise ValueError(f"n_gram must be >= 1, got {n_gram}")
        self.n_gram = n_gram
        self.tokenize = tokenize
        self.add_state("testlen", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("reflen", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("guess", torch.zeros(n_gram, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("correct", torch.zeros(n_gram, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("num_images", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, predictions: Sequence[str], references: Sequence[Sequence[str]]) -> None:
        """Add a batch: one predicted caption and a list of reference captions per image."""
        predictions, references = prepare_batch(predictions, references, self.tokenize)
        add_bleu_stats(self, predictions, references, self.n_gram)

    def compute(self) -> dict[str, Tensor]:
        """Return ``{"bleu1": ..., "bleu<n>": ...}`` as float64 scalars on the 0-1 scale."""
        return compute_bleu(self, self.n_gram)


def add_bleu_stats(metric: Metric, predictions: Sequence[str], references: Sequence[Sequence[str]], n: int) -> None:
    """Accumulate BLEU statistics of tokenised captions into ``metric``'s ``testlen/reflen/guess/correct/num_images``
    states."""
    testlen, reflen, guess, correct = summed_bleu_stats(predictions, references, n)
    metric.testlen += testlen
    metric.reflen += reflen
    metric.guess += torch.tensor(guess, dtype=torch.long, device=metric.guess.device)
    metric.correct += torch.tensor(correct, dtype=torch.long, device=metric.correct.device)
    metric.num_images += len(predictions)


def compute_bleu(metric: Metric, n: int) -> dict[str, Tensor]:
    """Turn the accumulated BLEU states of ``metric`` into ``{"bleu1": ..., "bleu<n>": ...}``."""
    if int(metric.num_images) == 0:
        raise RuntimeError(f"{type(metric).__name__}.compute() called before any update()")
    scores = bleu_from_stats(int(metric.testlen), int(metric.reflen), metric.guess.tolist(), metric.correct.tolist())
    return {f"bleu{k + 1}": torch.tensor(s, dtype=torch.float64) for k, s in enumerate(scores)}
