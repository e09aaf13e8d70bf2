"""Sentence-level CIDEr-D against a fixed reference corpus: the reward of self-critical sequence training.

:func:`~vitcap.metrics.cider.cider_d` (the evaluation metric) takes its document frequencies from the evaluated
set. A training reward takes them once from the *training* references (Rennie et al. 2017; the "corpus" mode of
the self-critical code bases), so a sample's reward depends only on the sample and its image's references.
:class:`CiderDReward` holds those frequencies and scores captions given as interned words (ints, see
:class:`~vitcap.metrics.words.CocoWords`), with pycocoevalcap's formula: TF-IDF vectors of n-grams 1..4, the
candidate's weights clipped by the reference's, a Gaussian length penalty (sigma 6, lengths counted in bigrams as
pycocoevalcap does), the mean over orders and references, times 10.

With the corpus equal to the scored images' references it returns exactly pycocoevalcap's per-image scores
(``Cider().compute_score``'s second output), which is how the tests check it.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import NamedTuple

__all__ = ["CiderDReward", "WordNGram"]

WordNGram = tuple[int, ...]
_Vector = tuple[dict[WordNGram, float], list[float], int]  # n-gram -> weight, norm per order, bigram count


class _RefTable(NamedTuple):
    """One image's reference vectors, merged: n-gram -> [(reference, weight)], norms and lengths per reference."""

    weights: dict[WordNGram, list[tuple[int, float]]]
    norms: list[list[float]]
    lengths: list[int]


def _counts(words: Sequence[int], n: int) -> Counter[WordNGram]:
    """Counts of every n-gram of orders 1..n (``Counter.update`` over ``zip`` counts in C)."""
    counts: Counter[WordNGram] = Counter()
    for k in range(1, n + 1):
        counts.update(zip(*[words[i:] for i in range(k)]))
    return counts


class CiderDReward:
    """CIDEr-D of single captions against the references of a corpus image, with the corpus' document frequencies.

    Args:
        corpus: For every image of the corpus, its reference captions as word-id sequences. Document frequency of
            an n-gram = number of images whose references contain it; ``idf = log(len(corpus)) - log(max(1, df))``.
        n: Highest n-gram order.
        sigma: Standard deviation of the length penalty, in words.
        cache_images: Images whose reference vectors are kept after first use (a whole Flickr8k; a COCO-sized
            corpus recomputes the rest, about a millisecond an image).

    Attributes:
        num_images: Images in the corpus.
        num_ngrams: Distinct n-grams in the corpus references.
    """

    def __init__(
        self, corpus: Sequence[Sequence[Sequence[int]]], n: int = 4, sigma: float = 6.0, cache_images: int = 50_000
    ) -> None:
        if not corpus:
            raise ValueError("CIDEr-D document frequencies need at least one image of references")
        for i, refs in enumerate(corpus):
            if not refs:
                raise ValueError(f"corpus image {i} has no reference caption")
        self.n, self.sigma = n, sigma
        self._refs = [[tuple(ref) for ref in refs] for refs in corpus]
        df: Counter[WordNGram] = Counter()
        for refs in self._refs:
            df.update({ngram for ref in refs for ngram in _counts(ref, n)})
        self.num_images = len(corpus)
        self.num_ngrams = len(df)
        self._log_images = math.log(float(self.num_images))
        # idf of every corpus n-gram; an n-gram outside the corpus has df 0 -> max(1, 0) = 1 -> idf log(N).
        self._idf = {ngram: self._log_images - math.log(float(count)) for ngram, count in df.items()}
        self._tables: dict[int, _RefTable] = {}
        self._cache_images = cache_images

    def vector(self, words: Sequence[int]) -> _Vector:
        """TF-IDF weights of a caption's n-grams, their norm per order, and its length in bigrams."""
        idf, log_images = self._idf, self._log_images
        weights = {ngram: tf * idf.get(ngram, log_images) for ngram, tf in _counts(words, self.n).items()}
        squares = [0.0] * self.n
        for ngram, weight in weights.items():
            squares[len(ngram) - 1] += weight * weight
        # pycocoevalcap counts a caption's length in bigrams (see vitcap.metrics.cider).
        return weights, [math.sqrt(s) for s in squares], max(0, len(words) - 1)

    def scores(self, image: int, candidates: Sequence[Sequence[int]]) -> list[float]:
        """CIDEr-D (pycocoevalcap's x10 scale) of each candidate against the references of corpus image ``image``.

        The k samples of an image share its reference vectors; equal samples are scored once.
        """
        table = self._table(image)
        done: dict[tuple[int, ...], float] = {}
        out = []
        for candidate in candidates:
            key = tuple(candidate)
            if key not in done:
                done[key] = self._score(self.vector(key), table)
            out.append(done[key])
        return out

    def _table(self, image: int) -> _RefTable:
        table = self._tables.get(image)
        if table is None:
            vectors = [self.vector(ref) for ref in self._refs[image]]
            weights: dict[WordNGram, list[tuple[int, float]]] = {}
            for j, (ref_weights, _, _) in enumerate(vectors):
                for ngram, weight in ref_weights.items():
                    weights.setdefault(ngram, []).append((j, weight))
            table = _RefTable(weights, [v[1] for v in vectors], [v[2] for v in vectors])
            if len(self._tables) < self._cache_images:
                self._tables[image] = table
        return table

    def _score(self, candidate: _Vector, refs: _RefTable) -> float:
        """Mean over references and orders of the clipped, length-penalised cosine, times 10."""
        n = self.n
        cand, cand_norm, cand_len = candidate
        dots = [[0.0] * n for _ in refs.norms]  # per reference and order: sum of min(w_cand, w_ref) * w_ref
        for ngram, weight in cand.items():
            hits = refs.weights.get(ngram)
            if hits:
                k = len(ngram) - 1
                for j, ref_weight in hits:
                    dots[j][k] += min(weight, ref_weight) * ref_weight
        total = 0.0
        for dot, ref_norm, ref_len in zip(dots, refs.norms, refs.lengths, strict=True):
            delta = float(cand_len - ref_len)
            penalty = math.e ** (-(delta**2) / (2 * self.sigma**2))
            for k in range(n):
                if cand_norm[k] != 0 and ref_norm[k] != 0:
                    total += dot[k] / (cand_norm[k] * ref_norm[k]) * penalty
                else:
                    total += dot[k] * penalty
        return total / n / len(refs.norms) * 10.0
