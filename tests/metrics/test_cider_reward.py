"""The SCST reward's metric side: token ids -> COCO words, and sentence CIDEr-D with corpus document frequencies,
against pycocoevalcap."""

from __future__ import annotations

import random

import pytest

from vitcap.metrics.cider_reward import CiderDReward
from vitcap.metrics.tokenize import coco_tokenize
from vitcap.metrics.words import EOS_WORD, CocoWords
from vitcap.tokenizer import CaptionTokenizer

# Captions with what tokenisation can trip over: punctuation, clitics, hyphens, slashes, numbers, upper case.
REFERENCES = [
    ["A dog runs on the beach.", "A brown dog is running along the shore .", "The dog's T-shirt is red!"],
    ["Two kids play soccer in a field.", "Children kick a ball on the grass", "Two boys, playing soccer."],
    ["A man rides a bike down a hill.", "A cyclist on a dirt-bike jumps", "a man riding his bicycle downhill ."],
    ["A woman in a red coat walks in the snow.", "Someone walks through snow-covered streets", "woman's red coat"],
    ["A black and white dog catches a frisbee.", "The dog jumps for a Frisbee in mid-air .", "dog/frisbee at 3:30"],
]
CANDIDATES = [
    "a dog runs on the beach.",
    "two kids play soccer in the field",
    "a man's bike jumps down a hill",
    "a woman walks in the snow-covered street.",
    "a dog catches a frisbee",
]


def _pycoco_scores(gts: dict[int, list[str]], res: dict[int, list[str]]) -> list[float]:
    cider = pytest.importorskip("pycocoevalcap.cider.cider")
    _, scores = cider.Cider().compute_score(gts, res)
    return [float(s) for s in scores]


def test_reward_equals_pycocoevalcap_sentence_cider() -> None:
    words = CocoWords(lambda ids: "", 4, 2)
    reward = CiderDReward([[words.of_text(r) for r in refs] for refs in REFERENCES])
    expected = _pycoco_scores(
        {i: [coco_tokenize(r) for r in refs] for i, refs in enumerate(REFERENCES)},
        {i: [coco_tokenize(c)] for i, c in enumerate(CANDIDATES)},
    )
    ours = [reward.scores(i, [words.of_text(c)])[0] for i, c in enumerate(CANDIDATES)]
    assert ours == pytest.approx(expected, abs=1e-9)
    assert max(ours) > 1.0  # the first candidate is a reference: a real match, not a test of zeros


def test_reward_of_token_ids_equals_the_decoded_caption_score() -> None:
    """Ids of vitcap's word-level vocabulary, scored without decoding, against the evaluation's string path."""
    tok = CaptionTokenizer.train([r for refs in REFERENCES for r in refs] + CANDIDATES)
    words = CocoWords(tok.decode, tok.vocab_size, tok.eos_id, (tok.pad_id, tok.bos_id))
    reward = CiderDReward([[words.of_text(r) for r in refs] for refs in REFERENCES])
    ids = [tok.encode(c) for c in CANDIDATES]  # [BOS] ... [EOS], as samples are rewarded
    expected = _pycoco_scores(
        {i: [coco_tokenize(r) for r in refs] for i, refs in enumerate(REFERENCES)},
        {i: [coco_tokenize(tok.decode(row))] for i, row in enumerate(ids)},
    )
    ours = [reward.scores(i, [words.of_ids(row)])[0] for i, row in enumerate(ids)]
    assert ours == pytest.approx(expected, abs=1e-9)


def test_eos_counts_as_a_word_of_samples_and_references() -> None:
    """With eos, the reward is pycocoevalcap's CIDEr-D of "caption <eos>" against "reference <eos>"."""
    words = CocoWords(lambda ids: "", 4, 2)
    reward = CiderDReward([[words.of_text(r) + [EOS_WORD] for r in refs] for refs in REFERENCES])
    end = " zzeoszz"  # a word no caption contains, standing in for eos on the string side
    expected = _pycoco_scores(
        {i: [coco_tokenize(r) + end for r in refs] for i, refs in enumerate(REFERENCES)},
        {i: [coco_tokenize(c) + end] for i, c in enumerate(CANDIDATES)},
    )
    ours = [reward.scores(i, [words.of_text(c) + [EOS_WORD]])[0] for i, c in enumerate(CANDIDATES)]
    assert ours == pytest.approx(expected, abs=1e-9)
    # A caption cut before its end scores lower with eos than the same words that ended.
    cut = reward.scores(0, [words.of_text("a dog runs on the beach")])[0]
    assert cut < ours[0]


def test_equal_samples_get_equal_rewards_and_a_lone_image_scores_zero() -> None:
    words = CocoWords(lambda ids: "", 4, 2)
    reward = CiderDReward([[words.of_text(r) for r in refs] for refs in REFERENCES])
    sample = words.of_text(CANDIDATES[1])
    assert len(set(reward.scores(1, [sample] * 5))) == 1
    # One image: every n-gram has df = N = 1, so idf = 0 and every score is 0 (pycocoevalcap agrees).
    alone = CiderDReward([[words.of_text(r) for r in REFERENCES[0]]])
    assert alone.scores(0, [words.of_text(REFERENCES[0][0])]) == [0.0]
    with pytest.raises(ValueError, match="no reference"):
        CiderDReward([[words.of_text("a dog")], []])


def test_real_captions_match_pycocoevalcap(flickr_captions: dict[str, list[str]]) -> None:
    images = sorted(flickr_captions)[:150]
    rng = random.Random(0)
    candidates = [rng.choice(flickr_captions[other]) for other in rng.sample(images, len(images))]
    tok = CaptionTokenizer.train([c for i in images for c in flickr_captions[i]], min_freq=3)  # [UNK]s included
    words = CocoWords(tok.decode, tok.vocab_size, tok.eos_id, (tok.pad_id, tok.bos_id))
    reward = CiderDReward([[words.of_text(r) for r in flickr_captions[i]] for i in images])
    ids = [tok.encode(c) for c in candidates]
    expected = _pycoco_scores(
        {k: [coco_tokenize(r) for r in flickr_captions[i]] for k, i in enumerate(images)},
        {k: [coco_tokenize(tok.decode(row))] for k, row in enumerate(ids)},
    )
    ours = [reward.scores(k, [words.of_ids(row)])[0] for k, row in enumerate(ids)]
    assert ours == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("kind, options", [("word", {"min_freq": 3}), ("bpe", {"vocab_size": 600})])
def test_words_of_ids_equal_the_words_of_the_decoded_text(kind: str, options: dict, flickr_captions) -> None:
    """Every Flickr8k-mini caption: the id path gives exactly the evaluation's words (hyphens, clitics, [UNK])."""
    captions = [c for caps in flickr_captions.values() for c in caps]
    tok = CaptionTokenizer.train(captions, kind=kind, **options)
    words = CocoWords(tok.decode, tok.vocab_size, tok.eos_id, (tok.pad_id, tok.bos_id))
    for caption in captions:
        ids = tok.encode(caption)
        assert words.of_ids(ids) == words.of_text(tok.decode(ids)), tok.decode(ids)
