"""N-gram counting shared by BLEU and CIDEr-D (pycocoevalcap's ``precook``)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

__all__ = ["NGram", "ngram_counts"]

NGram = tuple[str, ...]


def ngram_counts(words: Sequence[str], n: int) -> Counter[NGram]:
    """Count every n-gram of orders 1..n in a list of words.

    Args:
        words: A tokenised caption split into words.
        n: Highest n-gram order.

    Returns:
        ``Counter`` mapping each n-gram (a tuple of 1..n words) to its number of occurrences; an n-gram's order
        is its length.
    """
    counts: Counter[NGram] = Counter()
    for k in range(1, n + 1):
        for i in range(len(words) - k + 1):
            counts[tuple(words[i : i + k])] += 1
    return counts
