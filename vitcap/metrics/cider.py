"""CIDEr-D exactly as the COCO caption evaluation computes it.

``pycocoevalcap``'s ``Cider`` class (``cider/cider_scorer.py``) is, despite its name, **CIDEr-D** (Vedantam et
al., 2015, section 5), the variant the COCO leaderboard reports as "CIDEr":

- n-grams of orders 1..4 of each caption weighted by TF-IDF, where the document frequency of an n-gram is the
  number of images whose references contain it, counted over the references of the *evaluated set*, and
  ``idf = log(number of images) - log(max(1, df))``;
- per order, a cosine similarity between the candidate vector and each reference vector in which candidate
  weights are **clipped** by the reference weights (``min(w_cand, w_ref) * w_ref``, "vrama91: added clipping");
- a **Gaussian length penalty** ``exp(-(l_cand - l_ref)^2 / (2 * 6^2))`` (sigma = 6). Like the original, the
  lengths are counted in *bigrams* (its ``if n == 1`` indexes bigrams); differences of bigram counts equal those
  of word counts unless a caption is empty, and an empty caption scores 0 anyway, so this never changes a score;
- the mean over orders, averaged over the references, **times 10**; the corpus score is the mean over images.

So scores are on pycocoevalcap's scale: 1.2 here is reported as "CIDEr 120" in papers. Because the document
frequencies come from the evaluated references, the score of an image depends on the whole set: with a single
image every reference n-gram has ``df = 1 = number of images`` and the score is exactly 0 (pycocoevalcap agrees).
The metric therefore keeps every (candidate, references) sample as UTF-8 bytes (see :func:`encode_sample`) and
computes at the end.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from vitcap.metrics.ngrams import NGram, ngram_counts
from vitcap.metrics.tokenize import prepare_batch

__all__ = ["CaptionCIDErD", "cider_d", "decode_samples", "encode_batch", "encode_sample"]

# Separators of the byte encoding. coco_tokenize never outputs control characters, so they cannot collide.
FIELD_SEP = "\x1f"  # between the candidate and each reference of one image
RECORD_SEP = "\x1e"  # ends one image, so concatenated (gathered) states split back into images


def cider_d(
    candidates: Sequence[str], references: Sequence[Sequence[str]], n: int = 4, sigma: float = 6.0
) -> tuple[float, list[float]]:
    """Corpus CIDEr-D of already tokenised captions, as ``pycocoevalcap.cider.Cider().compute_score``.

    Args:
        candidates: One tokenised candidate per image.
        references: The tokenised references of each image (same order); at least one per image.
        n: Highest n-gram order.
        sigma: Standard deviation of the Gaussian length penalty.

    Returns:
        ``(mean, per-image scores)`` on pycocoevalcap's x10 scale.
    """
    if len(candidates) != len(references):
        raise ValueError(f"got {len(candidates)} candidates but {len(references)} reference lists")
    if len(candidates) == 0:
        raise ValueError("CIDEr-D of an empty corpus is undefined")
    test_counts = [ngram_counts(c.split(), n) for c in candidates]
    ref_counts = []
    for i, refs in enumerate(references):
        if len(refs) == 0:
            raise ValueError(f"references[{i}] is empty: CIDEr-D needs at least one reference caption per image")
        ref_counts.append([ngram_counts(r.split(), n) for r in refs])

    document_frequency: defaultdict[NGram, float] = defaultdict(float)
    for refs in ref_counts:
        for ngram in {ngram for ref in refs for ngram in ref}:
            document_frequency[ngram] += 1
    ref_len = math.log(float(len(ref_counts)))

    def counts2vec(counts: Counter[NGram]) -> tuple[list[dict[NGram, float]], list[float], int]:
        vec: list[dict[NGram, float]] = [{} for _ in range(n)]
        norm = [0.0] * n
        length = 0
        for ngram, term_freq in counts.items():
            df = math.log(max(1.0, document_frequency.get(ngram, 0.0)))
            k = len(ngram) - 1
            vec[k][ngram] = float(term_freq) * (ref_len - df)
            norm[k] += vec[k][ngram] ** 2
            if k == 1:  # pycocoevalcap's "length" counts bigrams (see the module docstring)
                length += term_freq
        return vec, [math.sqrt(x) for x in norm], length

    def sim(vec_hyp, vec_ref, norm_hyp, norm_ref, length_hyp, length_ref) -> list[float]:  # noqa: ANN001
        delta = float(length_hyp - length_ref)
        penalty = math.e ** (-(delta**2) / (2 * sigma**2))
        val = [0.0] * n
        for k in range(n):
            for ngram, weight in vec_hyp[k].items():
                ref_weight = vec_ref[k].get(ngram, 0.0)
                val[k] += min(weight, ref_weight) * ref_weight
            if norm_hyp[k] != 0 and norm_ref[k] != 0:
                val[k] /= norm_hyp[k] * norm_ref[k]
            val[k] *= penalty
        return val

    scores = []
    for test, refs in zip(test_counts, ref_counts, strict=True):
        vec, norm, length = counts2vec(test)
        total = [0.0] * n
        for ref in refs:
            vec_ref, norm_ref, length_ref = counts2vec(ref)
            total = [a + b for a, b in zip(total, sim(vec, vec_ref, norm, norm_ref, length, length_ref), strict=True)]
        scores.append(sum(total) / n / len(refs) * 10.0)
    return sum(scores) / len(scores), scores


def encode_sample(candidate: str, references: Sequence[str]) -> Tensor:
    """Pack one image's candidate and references into a uint8 tensor of UTF-8 bytes, ended by a record separator.

    torchmetrics cannot all-gather strings, but it can concatenate byte tensors (``dist_reduce_fx="cat"``);
    the record separator keeps images apart after concatenation.

    Raises:
        ValueError: If a caption contains one of the separators (only possible with ``tokenize=False``).
    """
    for text in (candidate, *references):
        if FIELD_SEP in text or RECORD_SEP in text or "\x00" in text:
            raise ValueError(f"caption contains a reserved control character (\\x1e, \\x1f or \\x00): {text!r}")
    data = (FIELD_SEP.join([candidate, *references]) + RECORD_SEP).encode("utf-8")
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


def encode_batch(candidates: Sequence[str], references: Sequence[Sequence[str]]) -> Tensor:
    """:func:`encode_sample` over a batch, as one tensor (records are self-delimiting, so one copy per batch)."""
    return torch.cat([encode_sample(c, r) for c, r in zip(candidates, references, strict=True)])


def decode_samples(state: list[Tensor] | Tensor) -> tuple[list[str], list[list[str]]]:
    """Inverse of :func:`encode_sample` over a list state (local) or its concatenation (after a sync).

    Zero bytes are dropped, so padding added by a gather cannot leak into the captions.

    Returns:
        ``(candidates, references)`` in the order the samples were added (rank order after a sync).
    """
    if isinstance(state, list):
        if len(state) == 0:
            return [], []
        state = dim_zero_cat(state)
    # An empty rank contributes a float tensor in torchmetrics' sync; cast back before reading bytes.
    data = state.detach().to("cpu", torch.uint8).numpy().tobytes().replace(b"\x00", b"")
    candidates, references = [], []
    for record in data.decode("utf-8").split(RECORD_SEP)[:-1]:
        candidate, *refs = record.split(FIELD_SEP)
        candidates.append(candidate)
        references.append(refs)
    return candidates, references


class CaptionCIDErD(Metric):
    """COCO CIDEr-D as a torchmetrics ``Metric`` (pycocoevalcap parity, no Java).

    Document frequencies come from all references seen (across batches and, after a sync, processes), so the
    samples are stored as byte tensors and the score is computed in ``compute``.

    Args:
        tokenize: Apply :func:`~vitcap.metrics.tokenize.coco_tokenize` to the captions in ``update``.
        n_gram: Highest n-gram order.
        sigma: Standard deviation of the Gaussian length penalty.
        kwargs: Forwarded to ``torchmetrics.Metric`` (``sync_on_compute``, ``process_group``, ``dist_sync_fn``, ...).
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, tokenize: bool = True, n_gram: int = 4, sigma: float = 6.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.tokenize = tokenize
        self.n_gram = n_gram
        self.sigma = sigma
        self.add_state("samples", [], dist_reduce_fx="cat")

    def update(self, predictions: Sequence[str], references: Sequence[Sequence[str]]) -> None:
        """Add a batch: one predicted caption and a list of reference captions per image."""
        predictions, references = prepare_batch(predictions, references, self.tokenize)
        self.samples.append(encode_batch(predictions, references).to(self.device))

    def compute(self) -> Tensor:
        """Mean CIDEr-D over all images seen, a float64 scalar on pycocoevalcap's x10 scale."""
        candidates, references = decode_samples(self.samples)
        if not candidates:
            raise RuntimeError("CaptionCIDErD.compute() called before any update()")
        return torch.tensor(cider_d(candidates, references, self.n_gram, self.sigma)[0], dtype=torch.float64)
