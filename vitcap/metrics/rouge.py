"""ROUGE-L exactly as the COCO caption evaluation computes it.

Reproduces ``pycocoevalcap/rouge/rouge.py`` (``Rouge().compute_score``): for each image, the longest common
subsequence (LCS) of the candidate with every reference gives ``precision = lcs / len(candidate)`` and
``recall = lcs / len(reference)``; the maxima over references are taken **separately** (the best precision
and the best recall may come from different references) and combined into an F-measure with ``beta = 1.2``:

    F = (1 + beta^2) * P * R / (R + beta^2 * P)        (0 when P or R is 0)

The corpus score is the mean of the per-image scores, on the 0-1 scale. Like the original, captions are split
on single spaces (``str.split(" ")``), so an empty caption counts as one empty token.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from vitcap.metrics.tokenize import prepare_batch

__all__ = ["CaptionROUGEL", "lcs_length", "rouge_l", "sentence_rouge_l"]

BETA = 1.2


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence of two token lists (O(len(a) * len(b)) time, O(len(b)) memory)."""
    if len(a) < len(b):
        a, b = b, a
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def sentence_rouge_l(candidate: str, references: Sequence[str], beta: float = BETA) -> float:
    """ROUGE-L of one tokenised candidate against its tokenised references (``Rouge.calc_score``).

    Raises:
        ValueError: If ``references`` is empty.
    """
    if len(references) == 0:
        raise ValueError("ROUGE-L needs at least one reference caption per image, got an empty list")
    cand = candidate.split(" ")
    prec_max = rec_max = 0.0
    for reference in references:
        ref = reference.split(" ")
        lcs = lcs_length(ref, cand)
        prec_max = max(prec_max, lcs / float(len(cand)))
        rec_max = max(rec_max, lcs / float(len(ref)))
    if prec_max != 0 and rec_max != 0:
        return ((1 + beta**2) * prec_max * rec_max) / float(rec_max + beta**2 * prec_max)
    return 0.0


def rouge_l(candidates: Sequence[str], references: Sequence[Sequence[str]]) -> tuple[float, list[float]]:
    """Corpus ROUGE-L of already tokenised captions, as ``pycocoevalcap.rouge.Rouge``.

    Returns:
        ``(mean, per-image scores)`` on the 0-1 scale.
    """
    if len(candidates) != len(references):
        raise ValueError(f"got {len(candidates)} candidates but {len(references)} reference lists")
    if len(candidates) == 0:
        raise ValueError("ROUGE-L of an empty corpus is undefined")
    scores = [sentence_rouge_l(c, r) for c, r in zip(candidates, references, strict=True)]
    return sum(scores) / len(scores), scores


class CaptionROUGEL(Metric):
    """COCO ROUGE-L (beta 1.2) as a torchmetrics ``Metric`` (pycocoevalcap parity, no Java).

    The state is the float64 sum of per-image scores and the image count, summed across processes.

    Args:
        tokenize: Apply :func:`~vitcap.metrics.tokenize.coco_tokenize` to the captions in ``update``.
        kwargs: Forwarded to ``torchmetrics.Metric`` (``sync_on_compute``, ``process_group``, ``dist_sync_fn``, ...).
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, tokenize: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.tokenize = tokenize
        self.add_state("rouge_sum", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("rouge_count", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, predictions: Sequence[str], references: Sequence[Sequence[str]]) -> None:
        """Add a batch: one predicted caption and a list of reference captions per image."""
        predictions, references = prepare_batch(predictions, references, self.tokenize)
        add_rouge_l(self, predictions, references)

    def compute(self) -> Tensor:
        """Mean ROUGE-L over all images seen, a float64 scalar on the 0-1 scale."""
        return compute_rouge_l(self)


def add_rouge_l(metric: Metric, predictions: Sequence[str], references: Sequence[Sequence[str]]) -> None:
    """Accumulate per-image ROUGE-L of tokenised captions into ``metric``'s ``rouge_sum/rouge_count`` states."""
    metric.rouge_sum += sum(sentence_rouge_l(p, r) for p, r in zip(predictions, references, strict=True))
    metric.rouge_count += len(predictions)


def compute_rouge_l(metric: Metric) -> Tensor:
    """Mean ROUGE-L from ``metric``'s accumulated states."""
    if int(metric.rouge_count) == 0:
        raise RuntimeError(f"{type(metric).__name__}.compute() called before any update()")
    return (metric.rouge_sum / metric.rouge_count).to("cpu", torch.float64)
