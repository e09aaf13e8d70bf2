"""Degenerate-output statistics of generated captions.

Overlap metrics can stay respectable while a captioner collapses to a few generic sentences or stutters
("a man a man riding a a horse"). These numbers make that visible:

- ``distinct_ratio``: distinct captions / number of images (1.0 = every image got its own caption; above 1
  is possible when several captions per image are scored, e.g. beam alternatives);
- ``distinct_per_image``: mean number of distinct captions among the captions of one image (1.0 with one
  caption per image; tells whether n-best alternatives differ at all);
- ``vocab_used``: number of distinct words over all captions;
- ``mean_length``: mean number of words per caption;
- ``repeat_word_share``: share of captions with a word repeated immediately ("a a", "dog dog");
- ``repeat_ngram_share``: share of captions in which some 2- or 3-gram occurs more than once (a repeated
  trigram always contains a repeated bigram, so this is the share with a repeated bigram);
- ``repeat_trigram_share``: share of captions in which some trigram occurs more than once.

Words are COCO-tokenised (lower case, punctuation removed), so "A dog." and "a dog" are the same caption.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from vitcap.metrics.tokenize import coco_tokenize

__all__ = ["STAT_KEYS", "caption_stats", "has_consecutive_repeat", "has_repeated_ngram"]

STAT_KEYS = (
    "num_images",
    "num_captions",
    "distinct_captions",
    "distinct_ratio",
    "distinct_per_image",
    "vocab_used",
    "mean_length",
    "repeat_word_share",
    "repeat_ngram_share",
    "repeat_trigram_share",
)


def has_consecutive_repeat(words: Sequence[str]) -> bool:
    """True if some word directly follows itself."""
    return any(a == b for a, b in zip(words, words[1:]))


def has_repeated_ngram(words: Sequence[str], n: int) -> bool:
    """True if some n-gram occurs more than once (overlapping occurrences count: "a a a" repeats "a a")."""
    seen: set[tuple[str, ...]] = set()
    for i in range(len(words) - n + 1):
        gram = tuple(words[i : i + n])
        if gram in seen:
            return True
        seen.add(gram)
    return False


def caption_stats(
    captions: Sequence[str], images: Sequence[str] | None = None, tokenize: bool = True
) -> dict[str, float]:
    """Degenerate-output statistics of a set of captions (see the module docstring for each key).

    Args:
        captions: Generated captions, one per entry.
        images: The image of each caption (same length), when several captions may share an image; by default
            every caption is its own image.
        tokenize: COCO-tokenise the captions first (pass False for captions that already are).

    Returns:
        The keys of :data:`STAT_KEYS`; counts are floats too, so the dict can be logged as is. Shares are in 0-1.

    Raises:
        ValueError: If ``captions`` is empty or ``images`` has a different length.
    """
    if len(captions) == 0:
        raise ValueError("caption statistics of an empty set of captions are undefined")
    if images is None:
        images = [str(i) for i in range(len(captions))]
    if len(images) != len(captions):
        raise ValueError(f"got {len(captions)} captions but {len(images)} images")
    texts = [coco_tokenize(c) for c in captions] if tokenize else [" ".join(c.split()) for c in captions]
    words = [t.split() for t in texts]
    per_image: defaultdict[str, set[str]] = defaultdict(set)
    for image, text in zip(images, texts, strict=True):
        per_image[image].add(text)
    num, num_images = len(texts), len(per_image)
    distinct = len(set(texts))
    return {
        "num_images": float(num_images),
        "num_captions": float(num),
        "distinct_captions": float(distinct),
        "distinct_ratio": distinct / num_images,
        "distinct_per_image": sum(len(s) for s in per_image.values()) / num_images,
        "vocab_used": float(len({w for ws in words for w in ws})),
        "mean_length": sum(len(ws) for ws in words) / num,
        "repeat_word_share": sum(has_consecutive_repeat(ws) for ws in words) / num,
        "repeat_ngram_share": sum(has_repeated_ngram(ws, 2) or has_repeated_ngram(ws, 3) for ws in words) / num,
        "repeat_trigram_share": sum(has_repeated_ngram(ws, 3) for ws in words) / num,
    }
