"""Degenerate-output statistics."""

from __future__ import annotations

import pytest

from vitcap.metrics.stats import STAT_KEYS, caption_stats, has_consecutive_repeat, has_repeated_ngram


def test_collapsed_outputs_are_visible() -> None:
    captions = ["A dog runs.", "a dog runs", "a man a man on a horse", "a a dog", "a red car"]
    stats = caption_stats(captions)
    assert set(stats) == set(STAT_KEYS)
    assert stats["num_images"] == 5 and stats["num_captions"] == 5
    assert stats["distinct_captions"] == 4  # "A dog runs." == "a dog runs" after COCO tokenisation
    assert stats["distinct_ratio"] == pytest.approx(4 / 5)
    assert stats["vocab_used"] == 8  # a dog runs man on horse red car
    assert stats["mean_length"] == pytest.approx((3 + 3 + 7 + 3 + 3) / 5)
    assert stats["repeat_word_share"] == pytest.approx(1 / 5)  # "a a dog"
    assert stats["repeat_ngram_share"] == pytest.approx(1 / 5)  # "a man" twice
    assert stats["repeat_trigram_share"] == 0.0


def test_alternatives_per_image() -> None:
    captions = ["a dog", "a dog", "a cat", "a bird", "a bird sings"]
    images = ["1.jpg", "1.jpg", "1.jpg", "2.jpg", "2.jpg"]
    stats = caption_stats(captions, images)
    assert stats["num_images"] == 2 and stats["num_captions"] == 5
    assert stats["distinct_per_image"] == pytest.approx((2 + 2) / 2)
    assert stats["distinct_ratio"] == pytest.approx(4 / 2)  # distinct captions overall per image


def test_repeat_helpers() -> None:
    assert has_consecutive_repeat("a dog dog".split()) and not has_consecutive_repeat("a dog a dog".split())
    assert has_repeated_ngram("a dog a dog".split(), 2) and not has_repeated_ngram("a dog a cat".split(), 2)
    assert has_repeated_ngram("a a a".split(), 2)  # overlapping occurrences count
    assert has_repeated_ngram("on the left on the left".split(), 3)


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="empty"):
        caption_stats([])
    with pytest.raises(ValueError, match="2 captions but 1 images"):
        caption_stats(["a", "b"], ["x"])
