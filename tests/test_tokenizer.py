import pickle

import pytest
import torch

from vitcap.tokenizer import BOS_ID, EOS_ID, PAD_ID, SPECIAL_TOKENS, UNK_ID, CaptionTokenizer

CAPTIONS = [
    "A dog runs on the grass .",
    "A black dog's ball , red and round .",
    "Two children (a boy and a girl) play in the T-shirt shop!",
    "  The   CAFÉ is open  ",
    "a man rides a bike on a dirt path / road",
]


@pytest.fixture(scope="module")
def word() -> CaptionTokenizer:
    return CaptionTokenizer.train(CAPTIONS, kind="word")


@pytest.fixture(scope="module")
def bpe() -> CaptionTokenizer:
    return CaptionTokenizer.train(CAPTIONS * 3, kind="bpe", vocab_size=320)


@pytest.mark.parametrize("kind", ["word", "bpe"])
def test_special_ids_are_fixed(kind, word, bpe):
    tok = word if kind == "word" else bpe
    assert [tok.token_to_id(t) for t in SPECIAL_TOKENS] == [PAD_ID, BOS_ID, EOS_ID, UNK_ID] == [0, 1, 2, 3]
    assert (tok.pad_id, tok.bos_id, tok.eos_id, tok.unk_id) == (0, 1, 2, 3)
    ids = tok.encode("a dog")
    assert ids[0] == BOS_ID and ids[-1] == EOS_ID and BOS_ID not in ids[1:-1]


def test_word_round_trip_on_normalised_text(word):
    for text in CAPTIONS:
        assert word.decode(word.encode(text)) == word.normalize(text)
        # normalisation is idempotent, so the normalised text round-trips exactly
        norm = word.normalize(text)
        assert word.normalize(norm) == norm
        assert word.decode(word.encode(norm)) == norm
    assert word.normalize("A black dog's ball , red and round .") == "a black dog's ball, red and round."
    assert word.normalize("Two children (a boy and a girl) play") == "two children (a boy and a girl) play"
    assert word.normalize("  The   CAFÉ is open  ") == "the café is open"
    assert word.normalize("the T-shirt shop!") == "the t-shirt shop!"


def test_word_vocabulary_is_words(word):
    vocab = word.get_vocab()
    assert "dog" in vocab and "," in vocab and "Dog" not in vocab
    assert len(word.encode("a dog runs", add_special=False)) == 3
    assert word.vocab_size == len(vocab)


def test_min_freq_maps_rare_words_to_unk():
    tok = CaptionTokenizer.train(["a dog", "a dog runs", "a cat"], min_freq=2)
    assert tok.token_to_id("dog") is not None and tok.token_to_id("cat") is None
    ids = tok.encode("a cat")
    assert ids == [BOS_ID, tok.token_to_id("a"), UNK_ID, EOS_ID]
    assert tok.decode(ids) == "a [UNK]"
    assert tok.encode("a zebra")[2] == UNK_ID


def test_serialise_through_a_string(word, bpe):
    for tok in (word, bpe):
        s = tok.to_json()
        assert isinstance(s, str)
        again = CaptionTokenizer.from_json(s)
        assert again.kind == tok.kind and again.vocab_size == tok.vocab_size
        assert torch.equal(again.encode_batch(CAPTIONS), tok.encode_batch(CAPTIONS))
        assert again.decode_batch(tok.encode_batch(CAPTIONS)) == tok.decode_batch(tok.encode_batch(CAPTIONS))
        restored = pickle.loads(pickle.dumps(tok))
        assert restored.encode(CAPTIONS[1]) == tok.encode(CAPTIONS[1])


def test_training_is_deterministic():
    assert CaptionTokenizer.train(CAPTIONS).to_json() == CaptionTokenizer.train(CAPTIONS).to_json()


def test_from_json_rejects_garbage():
    with pytest.raises(ValueError, match="not a serialised CaptionTokenizer"):
        CaptionTokenizer.from_json("{}")


def test_bpe_round_trip_is_lossless(bpe):
    for text in [*CAPTIONS, "Zebra-like xylophones, über-quick!", "numbers 123 and  two  spaces"]:
        assert bpe.decode(bpe.encode(text)) == bpe.normalize(text)
    assert bpe.normalize(" Zebra  X ") == "zebra  x"
    assert UNK_ID not in bpe.encode("Zebra-like xylophones, über-quick!")
    assert bpe.vocab_size <= 320


def test_bpe_vocab_size_too_small():
    with pytest.raises(ValueError, match="vocab_size"):
        CaptionTokenizer.train(CAPTIONS, kind="bpe", vocab_size=100)


def test_encode_batch_pads_right_and_truncation_keeps_eos(word):
    texts = ["a dog", "a black dog's ball, red and round."]
    out = word.encode_batch(texts)
    assert out.dtype == torch.long and out.shape == (2, 2 + len(word.encode(texts[1], add_special=False)))
    assert out[:, 0].tolist() == [BOS_ID, BOS_ID]
    assert out[0, 3] == EOS_ID and (out[0, 4:] == PAD_ID).all()
    assert out[1, -1] == EOS_ID
    short = word.encode_batch(texts, max_length=5)
    assert short.shape == (2, 5)
    assert short[1].tolist() == [BOS_ID, *word.encode(texts[1], add_special=False)[:3], EOS_ID]
    assert short[0].tolist() == [BOS_ID, *word.encode(texts[0], add_special=False), EOS_ID, PAD_ID]
    assert word.decode(short[1]) == "a black dog"
    with pytest.raises(ValueError, match="max_length"):
        word.encode_batch(texts, max_length=1)


def test_decode_stops_at_eos_and_skips_pad(word):
    ids = word.encode("a dog runs")
    assert word.decode([PAD_ID, *ids, *word.encode("the grass", add_special=False), PAD_ID]) == "a dog runs"
    assert word.decode(torch.tensor(ids)) == "a dog runs"
