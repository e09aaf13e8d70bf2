"""BLEU / ROUGE-L / CIDEr-D: parity with pycocoevalcap's scorers and hand-computed values."""

from __future__ import annotations

import math

import pytest

from vitcap.metrics import CaptionBLEU, CaptionCIDErD, CaptionMetrics, CaptionROUGEL, coco_tokenize
from vitcap.metrics.bleu import corpus_bleu
from vitcap.metrics.cider import cider_d
from vitcap.metrics.rouge import lcs_length, rouge_l, sentence_rouge_l

TOL = 1e-6


def pycoco_scores(candidates: list[str], references: list[list[str]]) -> dict[str, float]:
    """pycocoevalcap's pure-Python scorers on the same (already tokenised) input."""
    bleu = pytest.importorskip("pycocoevalcap.bleu.bleu")
    rouge = pytest.importorskip("pycocoevalcap.rouge.rouge")
    cider = pytest.importorskip("pycocoevalcap.cider.cider")
    gts = {i: list(r) for i, r in enumerate(references)}
    res = {i: [c] for i, c in enumerate(candidates)}
    b, _ = bleu.Bleu(4).compute_score(gts, res, verbose=0)
    out = {f"bleu{k + 1}": float(v) for k, v in enumerate(b)}
    out["rouge_l"] = float(rouge.Rouge().compute_score(gts, res)[0])
    out["cider_d"] = float(cider.Cider().compute_score(gts, res)[0])
    return out


def ours(candidates: list[str], references: list[list[str]]) -> dict[str, float]:
    out = {f"bleu{k + 1}": v for k, v in enumerate(corpus_bleu(candidates, references))}
    out["rouge_l"] = rouge_l(candidates, references)[0]
    out["cider_d"] = cider_d(candidates, references)[0]
    return out


def assert_close(a: dict[str, float], b: dict[str, float], tol: float = TOL) -> None:
    assert a.keys() <= b.keys()
    for key in a:
        assert abs(float(a[key]) - float(b[key])) <= tol, f"{key}: {float(a[key])!r} != {float(b[key])!r}"


# ------------------------------------------------------------------------------------------- real captions
@pytest.fixture(scope="module")
def held_out(flickr_captions: dict[str, list[str]]) -> tuple[list[str], list[list[str]]]:
    """Each image's first human caption as the candidate, the other four as references, COCO-tokenised."""
    names = sorted(flickr_captions)
    candidates = [coco_tokenize(flickr_captions[n][0]) for n in names]
    references = [[coco_tokenize(c) for c in flickr_captions[n][1:]] for n in names]
    return candidates, references


@pytest.fixture(scope="module")
def held_out_expected(held_out: tuple[list[str], list[list[str]]]) -> dict[str, float]:
    return pycoco_scores(*held_out)


def test_parity_with_pycocoevalcap_on_flickr8k(
    held_out: tuple[list[str], list[list[str]]], held_out_expected: dict[str, float]
) -> None:
    candidates, references = held_out
    expected = held_out_expected
    assert_close(ours(candidates, references), expected)
    # Human captions against humans: sanity range of the COCO-style numbers (CIDEr-D on its x10 scale).
    assert 0.6 < expected["bleu1"] < 0.7 and 0.15 < expected["bleu4"] < 0.3 and 0.5 < expected["cider_d"] < 1.1


def test_metric_classes_match_pycocoevalcap_on_flickr8k(
    flickr_captions: dict[str, list[str]], held_out_expected: dict[str, float]
) -> None:
    # The Metric classes tokenise raw captions themselves and accumulate over batches of 100.
    names = sorted(flickr_captions)
    raw_candidates = [flickr_captions[n][0] for n in names]
    raw_references = [flickr_captions[n][1:] for n in names]
    metrics = [CaptionMetrics(), CaptionBLEU(), CaptionROUGEL(), CaptionCIDErD()]
    for start in range(0, len(names), 100):
        for metric in metrics:
            metric.update(raw_candidates[start : start + 100], raw_references[start : start + 100])
    expected = held_out_expected
    combined, bleu, rouge, cider = (m.compute() for m in metrics)
    assert_close(expected, combined)
    assert_close({k: v for k, v in expected.items() if k.startswith("bleu")}, bleu)
    assert abs(float(rouge) - expected["rouge_l"]) <= TOL
    assert abs(float(cider) - expected["cider_d"]) <= TOL


# --------------------------------------------------------------------------------------- hand-made cases
def test_identical_caption_scores_one_except_single_image_cider() -> None:
    bleu = corpus_bleu(["a dog runs on the grass"], [["a dog runs on the grass"]])
    assert all(abs(b - 1) < 1e-8 for b in bleu) and all(b < 1 for b in bleu)  # the 1e-9 "small" constant
    assert sentence_rouge_l("a dog runs on the grass", ["a dog runs on the grass"]) == 1.0
    # One image: every reference n-gram has df = 1 = number of images, so idf = log(1) - log(1) = 0.
    assert cider_d(["a dog runs on the grass"], [["a dog runs on the grass"]])[0] == 0.0


def test_bleu_by_hand() -> None:
    # candidate vs reference: clipped matches 5/6 unigrams, 3/5 bigrams, 1/4 trigrams, 0/3 4-grams; equal length.
    b1, b2, b3, b4 = corpus_bleu(["the cat sat on the mat"], [["the cat is on the mat"]])
    assert b1 == pytest.approx(5 / 6, abs=1e-9)
    assert b2 == pytest.approx(math.sqrt(5 / 6 * 3 / 5), abs=1e-9)
    assert b3 == pytest.approx(0.5, abs=1e-9)
    # No 4-gram matches: pycocoevalcap's tiny/small constants give ~1e-4, not 0.
    assert b4 == pytest.approx((5 / 6 * 3 / 5 * 1 / 4 * 1e-15 / 3) ** 0.25, rel=1e-6)


def test_bleu_brevity_penalty_uses_closest_reference_length() -> None:
    # c = 2; references of length 6 and 3: closest is 3 -> BP = exp(1 - 3/2).
    b1, b2, *_ = corpus_bleu(["the cat"], [["the cat sat on the mat", "the cat sat"]])
    assert b1 == pytest.approx(math.exp(1 - 3 / 2), rel=1e-8)
    assert b2 == pytest.approx(math.exp(1 - 3 / 2), rel=1e-8)
    # Ties in closeness pick the shorter reference (|4-3| == |4-5|): r = 3 < c, no penalty.
    assert corpus_bleu(["a b c d"], [["a b c", "a b c d e"]])[0] == pytest.approx(1.0, abs=1e-8)


def test_candidate_longer_than_every_reference() -> None:
    # c = 6 > r = 3 (closest): no brevity penalty, precision 3/6.
    cands, refs = ["a b c d e f"], [["a b", "a b c"]]
    assert corpus_bleu(cands, refs)[0] == pytest.approx(0.5, abs=1e-9)
    assert sentence_rouge_l(cands[0], refs[0]) == pytest.approx(2.44 * 0.5 * 1 / (1 + 1.44 * 0.5))


def test_rouge_l_maximises_precision_and_recall_separately() -> None:
    # Best precision (1.0) comes from the long reference, best recall (1.0) from the short one: F = 1,
    # although no single reference gives F = 1. The per-reference F would be lower.
    assert sentence_rouge_l("a b c d", ["a b", "a b c d e f g h"]) == pytest.approx(1.0)
    assert sentence_rouge_l("the cat sat on the mat", ["the cat is on the mat"]) == pytest.approx(5 / 6)
    assert lcs_length("a b c d".split(), "x b y d".split()) == 2


def test_cider_d_by_hand() -> None:
    # 2 images, ref_len = log 2. Image 1 matches its reference exactly: cosine 1 for unigrams and bigrams, 0 for
    # the absent 3/4-grams -> mean 0.5 -> x10 = 5. Image 2 ("c d" vs "c e"): unigram cosine 1/2 (weights log 2,
    # "d" never in a reference still weighs log 2 - log 1), bigram 0 -> 1.25. Corpus mean 3.125.
    score, per_image = cider_d(["a b", "c d"], [["a b"], ["c e"]])
    assert per_image == pytest.approx([5.0, 1.25], abs=1e-12)
    assert score == pytest.approx(3.125, abs=1e-12)


def test_cider_d_gaussian_length_penalty() -> None:
    # Same words, the candidate padded with 6 unseen words: unigram cosine drops AND the length penalty
    # exp(-delta^2 / 72) applies; compare with pycocoevalcap rather than re-deriving the cosine.
    cands = ["a b c", "a b c x y z u v w", "d e"]
    refs = [["a b c"], ["a b c"], ["d e f"]]
    assert_close({"cider_d": cider_d(cands, refs)[0]}, pycoco_scores(cands, refs))


def test_edge_cases_match_pycocoevalcap() -> None:
    # empty candidate, empty reference, candidate longer than all references, a repeated word, one-word captions
    cands = ["", "a dog", "a man riding a horse on a beach near the sea at sunset", "dog dog dog", "dog"]
    refs = [["a cat on a mat", "a cat"], ["", "a dog runs"], ["a man rides", "a horse"], ["a dog"], ["dog", "a dog"]]
    assert_close(ours(cands, refs), pycoco_scores(cands, refs))
    metric = CaptionMetrics(tokenize=False)
    metric.update(cands, refs)
    assert_close(pycoco_scores(cands, refs), metric.compute())


def test_single_image_metric_matches_pycocoevalcap() -> None:
    cands, refs = ["a dog on the grass"], [["a dog runs on the grass", "a brown dog"]]
    metric = CaptionMetrics()
    metric.update(cands, refs)
    out = metric.compute()
    assert float(out["cider_d"]) == 0.0
    assert_close(pycoco_scores(cands, refs), out)


@pytest.mark.filterwarnings("ignore:The ``compute`` method of metric")
def test_empty_references_raise_clear_errors() -> None:
    with pytest.raises(ValueError, match="at least one reference"):
        corpus_bleu(["a dog"], [[]])
    with pytest.raises(ValueError, match="at least one reference"):
        rouge_l(["a dog"], [[]])
    with pytest.raises(ValueError, match="at least one reference"):
        cider_d(["a dog"], [[]])
    for metric in (CaptionMetrics(), CaptionBLEU(), CaptionROUGEL(), CaptionCIDErD()):
        with pytest.raises(ValueError, match=r"references\[0\] is empty"):
            metric.update(["a dog"], [[]])
        with pytest.raises(RuntimeError, match="before any update"):
            metric.compute()
