"""All caption metrics at once: ``CaptionMetrics`` for training loops, ``caption_scores`` for finished lists of
captions, plus the optional Java metrics.

``CaptionMetrics`` tokenises each batch once and keeps three kinds of state: BLEU counters and the ROUGE-L sum
(additive, summed across processes) and the samples as UTF-8 byte tensors (CIDEr-D needs the whole corpus for
its document frequencies; the degenerate-output statistics are computed from the same predictions). It is a
torchmetrics ``Metric``, so it can be an attribute of a LightningModule, moves with ``.to(device)`` and syncs
across processes in ``compute()``.

Scales: BLEU and ROUGE-L in 0-1 and CIDEr-D on its x10 scale, exactly as pycocoevalcap returns them. Papers
report all of them x100 ("BLEU-4 36.2, CIDEr 120.1"); :func:`to_points` converts a result dict.
"""

from __future__ import annotations

import importlib.util
import shutil
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from vitcap.metrics.bleu import add_bleu_stats, compute_bleu, corpus_bleu
from vitcap.metrics.cider import cider_d, decode_samples, encode_batch
from vitcap.metrics.rouge import add_rouge_l, compute_rouge_l, rouge_l
from vitcap.metrics.stats import caption_stats
from vitcap.metrics.tokenize import prepare_batch

__all__ = ["POINT_METRICS", "CaptionMetrics", "caption_scores", "java_available", "java_metrics", "to_points"]

# Keys whose values papers report x100 (BLEU/ROUGE-L/METEOR/SPICE from 0-1, CIDEr-D from its x10 scale).
POINT_METRICS = ("bleu1", "bleu2", "bleu3", "bleu4", "rouge_l", "cider_d", "meteor", "spice")


def to_points(scores: Mapping[str, float | Tensor]) -> dict[str, float | Tensor]:
    """Multiply the overlap metrics of a result dict by 100 (the scale papers use); other keys unchanged.

    Example:
        >>> to_points({"bleu4": 0.25, "cider_d": 1.5, "vocab_used": 512.0})
        {'bleu4': 25.0, 'cider_d': 150.0, 'vocab_used': 512.0}
    """
    return {k: v * 100 if k in POINT_METRICS else v for k, v in scores.items()}


class CaptionMetrics(Metric):
    """BLEU-1..4, ROUGE-L, CIDEr-D and degenerate-output statistics in one torchmetrics ``Metric``.

    ``update(predictions, references)`` takes one predicted caption and a list of reference captions per image.
    ``compute()`` returns a flat dict of float64 scalar tensors: ``bleu1``..``bleu4``, ``rouge_l``, ``cider_d``
    (pycocoevalcap scales: 0-1, CIDEr-D x10) and ``distinct_ratio``, ``vocab_used``, ``repeat_word_share``,
    ``repeat_ngram_share``, ``mean_length`` (see :mod:`vitcap.metrics.stats`).

    Under DDP each process updates with its own images and ``compute()`` gathers them all; as with any
    torchmetrics metric, images that a padded ``DistributedSampler`` hands out twice are counted twice.

    Args:
        tokenize: COCO-tokenise captions (:func:`~vitcap.metrics.tokenize.coco_tokenize`) in ``update``.
            Keep True unless the captions already are.
        kwargs: Forwarded to ``torchmetrics.Metric`` (``sync_on_compute``, ``process_group``, ``dist_sync_fn``, ...).

    Example:
        >>> metrics = CaptionMetrics()
        >>> metrics.update(["a dog runs on the grass"], [["a dog runs on grass", "a brown dog running"]])
        >>> to_points(metrics.compute())["bleu4"]
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    N_GRAM = 4
    STAT_KEYS = ("distinct_ratio", "vocab_used", "repeat_word_share", "repeat_ngram_share", "mean_length")

    def __init__(self, tokenize: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.tokenize = tokenize
        n = self.N_GRAM
        self.add_state("testlen", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("reflen", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("guess", torch.zeros(n, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("correct", torch.zeros(n, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("num_images", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("rouge_sum", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("rouge_count", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("samples", [], dist_reduce_fx="cat")

    def update(self, predictions: Sequence[str], references: Sequence[Sequence[str]]) -> None:
        """Add a batch: one predicted caption and a list of reference captions (at least one) per image."""
        predictions, references = prepare_batch(predictions, references, self.tokenize)
        if not predictions:
            return
        add_bleu_stats(self, predictions, references, self.N_GRAM)
        add_rouge_l(self, predictions, references)
        self.samples.append(encode_batch(predictions, references).to(self.device))

    def compute(self) -> dict[str, Tensor]:
        """All metrics over every image seen (in all processes); see the class docstring for the keys."""
        candidates, references = decode_samples(self.samples)
        if not candidates:
            raise RuntimeError("CaptionMetrics.compute() called before any update()")
        out = compute_bleu(self, self.N_GRAM)
        out["rouge_l"] = compute_rouge_l(self)
        out["cider_d"] = torch.tensor(cider_d(candidates, references)[0], dtype=torch.float64)
        stats = caption_stats(candidates, tokenize=False)
        out.update({k: torch.tensor(stats[k], dtype=torch.float64) for k in self.STAT_KEYS})
        return out


def caption_scores(
    candidates: Sequence[str], references: Sequence[Sequence[str]], java: bool = False
) -> dict[str, float]:
    """BLEU-1..4, ROUGE-L and CIDEr-D of a whole corpus of already COCO-tokenised captions.

    Args:
        candidates: One tokenised candidate per image (:func:`~vitcap.metrics.tokenize.coco_tokenize`).
        references: The tokenised references of each image, in the same order; at least one per image.
        java: Also METEOR and SPICE through :func:`java_metrics` (needs Java and pycocoevalcap).

    Returns:
        ``{"bleu1".."bleu4", "rouge_l", "cider_d"[, "meteor", "spice"]}`` on pycocoevalcap's scales (0-1,
        CIDEr-D x10).

    Raises:
        ValueError: If the lists differ in length, are empty, or an image has no reference.
        RuntimeError: If ``java`` is set and Java or pycocoevalcap is missing.
    """
    scores = {f"bleu{i + 1}": s for i, s in enumerate(corpus_bleu(candidates, references))}
    scores["rouge_l"] = rouge_l(candidates, references)[0]
    scores["cider_d"] = cider_d(candidates, references)[0]
    if java:
        scores.update(java_metrics(candidates, references))
    return scores


def java_available() -> bool:
    """True when ``java`` is on the PATH and pycocoevalcap (a dev/optional dependency) is importable."""
    return shutil.which("java") is not None and importlib.util.find_spec("pycocoevalcap") is not None


def java_metrics(
    candidates: Sequence[str], references: Sequence[Sequence[str]], spice: bool = True
) -> dict[str, float]:
    """METEOR (and SPICE) through pycocoevalcap's Java tools; optional, never needed by the rest of vitcap.

    Inputs should already be COCO-tokenised (as pycocoevalcap feeds them). METEOR runs the jar bundled with
    pycocoevalcap; SPICE also needs the Stanford CoreNLP models, which pycocoevalcap downloads on first use, so
    it fails offline: a SPICE failure is reported as a warning and only METEOR is returned.

    Args:
        candidates: One tokenised candidate per image.
        references: The tokenised references of each image.
        spice: Also run SPICE (slow: tens of seconds even for a few images).

    Returns:
        ``{"meteor": ..., "spice": ...}`` on the 0-1 scale (``spice`` missing if it failed or was not asked).

    Raises:
        RuntimeError: If Java or pycocoevalcap is missing.
    """
    if not java_available():
        raise RuntimeError("METEOR/SPICE need a Java runtime on the PATH and pycocoevalcap (pip install pycocoevalcap)")
    from pycocoevalcap.meteor.meteor import Meteor

    gts = {i: list(refs) for i, refs in enumerate(references)}
    res = {i: [cand] for i, cand in enumerate(candidates)}
    out: dict[str, float] = {}
    meteor = Meteor()
    try:
        out["meteor"] = float(meteor.compute_score(gts, res)[0])
    finally:
        # pycocoevalcap's Meteor.__del__ kills the JVM but leaves its output pipes open (ResourceWarnings).
        meteor.meteor_p.stdout.close()
        meteor.meteor_p.stderr.close()
        del meteor
    if spice:
        try:
            from pycocoevalcap.spice.spice import Spice

            out["spice"] = float(Spice().compute_score(gts, res)[0])
        except Exception as e:  # noqa: BLE001 - any failure of the external tool only costs the SPICE number
            warnings.warn(f"SPICE failed, reporting METEOR only: {type(e).__name__}: {e}", stacklevel=2)
    return out
