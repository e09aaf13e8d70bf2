"""Caption metrics without Java: COCO tokenisation, BLEU-1..4, ROUGE-L, CIDEr-D, degenerate-output statistics.

Every score equals pycocoevalcap's on the same tokenised input (tested to 1e-6) and is on its scale: BLEU and
ROUGE-L in 0-1, CIDEr-D x10 (1.2 here is "CIDEr 120" in papers; :func:`to_points` multiplies by 100). The
``Caption*`` classes are torchmetrics ``Metric`` subclasses that accumulate over batches and sync across
processes; :func:`caption_scores` scores finished lists of captions (what ``vitcap evaluate`` prints).
"""

from vitcap.metrics.bleu import CaptionBLEU, corpus_bleu
from vitcap.metrics.caption import (
    POINT_METRICS,
    CaptionMetrics,
    caption_scores,
    java_available,
    java_metrics,
    to_points,
)
from vitcap.metrics.cider import CaptionCIDErD, cider_d
from vitcap.metrics.rouge import CaptionROUGEL, rouge_l
from vitcap.metrics.stats import caption_stats
from vitcap.metrics.tokenize import PUNCTUATIONS, coco_tokenize

__all__ = [
    "POINT_METRICS",
    "PUNCTUATIONS",
    "CaptionBLEU",
    "CaptionCIDErD",
    "CaptionMetrics",
    "CaptionROUGEL",
    "caption_scores",
    "caption_stats",
    "cider_d",
    "coco_tokenize",
    "corpus_bleu",
    "java_available",
    "java_metrics",
    "rouge_l",
    "to_points",
]
