"""coco_tokenize against the output of pycocoevalcap's Java pipeline (Stanford PTBTokenizer 3.4.1 -lowerCase,
then PUNCTUATIONS removed). The expected strings were produced by that Java tokenizer."""

from __future__ import annotations

import pytest

from vitcap.metrics.tokenize import PUNCTUATIONS, coco_tokenize, prepare_batch

JAVA_OUTPUT = [
    # clitics, quotes, sentence punctuation
    ("A man's dog isn't running, he's \"happy\" and can't stop.", "a man 's dog is n't running he 's happy and ca n't stop"),
    ("I'm you're we've I'd y'all o'clock rock'n'roll 'tis 'em", "i 'm you 're we 've i 'd y' all o'clock rock 'n' roll 't is 'em"),
    ("Children's toys, kids' toys and James' car.", "children 's toys kids toys and james car"),
    ("A man cannot won't gonna wanna lemme gimme", "a man can not wo n't gon na wan na lem me gim me"),
    ("don’t can’t isn’t dog’sa", "do n't ca n't is n't dog 's a"),
    ("a man ' s dog and a dog 's bone", "a man s dog and a dog 's bone"),
    ("'Quoted' text `here' and ``there''  with   spaces", "quoted text here and there with spaces"),
    ("he said 'no' and \"yes\"", "he said no and yes"),
    ("Dogs ’s it’s “smart” quotes — em dash – en dash … ellipsis", "dogs 's it 's smart quotes em dash en dash ellipsis"),
    # hyphens and dashes: words keep inner hyphens; 3-4 hyphens become "--" (removed), 5 stay
    ("Two dogs -- one black, one white -- play in the U.S. today.", "two dogs one black one white play in the u.s. today"),
    ("A T-shirt, a co-op and an x-ray; the '90s.", "a t-shirt a co-op and an x-ray the '90s"),
    ("a ----- b --- c - d -- e", "a ----- b c d e"),
    # brackets become -LRB- etc., which -lowerCase turns into -lrb-: pycocoevalcap then fails to remove them
    ("A black-and-white dog (a collie) jumps over a log...", "a black-and-white dog -lrb- a collie -rrb- jumps over a log"),
    ("happy :) (a) [b] {c}", "happy :-rrb- -lrb- a -rrb- -lsb- b -rsb- -lcb- c -rcb-"),
    # numbers, symbols, currency, abbreviations
    ("It's 3.5 miles & costs $20 / day; they'd've gone: yes!", "it 's 3.5 miles & costs $ 20 / day they 'd 've gone yes"),
    ("A 2-year-old 10:30 3,000 people 50% 1st", "a 2-year-old 10:30 3,000 people 50 % 1st"),
    ("£5 €5 ¢5 US$5", "# 5 $ 5 cents 5 us$ 5"),
    ("AT&T at&t R&B", "at&t at & t r&b"),
    ("A {curly} [square] ½ 1/2 and/or e-mail http://x.com a@b.com #tag @user",
     "a -lcb- curly -rcb- -lsb- square -rsb- 1/2 1/2 and/or e-mail http://x.com a@b.com #tag @user"),
    ("Mr. Smith and Dr. Jones at 5 p.m. in St. Louis.", "mr. smith and dr. jones at 5 p.m. in st. louis"),
    ("a dog., cat etc.A dog", "a dog. cat etc. a dog"),
    ("the letter A. The end", "the letter a the end"),
    # runs of ?/! are single tokens that are not in PUNCTUATIONS
    ("WHAT?! No way!!! Yes?? ... .. .", "what ?! no way !!! yes ??"),
    # case and whitespace
    ("A DOG RUNS ON THE BEACH.", "a dog runs on the beach"),
    ("  A   dog\tin the\nsnow .  ", "a dog in the snow"),
    ("", ""),
    (".", ""),
    ("!!", "!!"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "expected"), JAVA_OUTPUT)
def test_matches_java_ptb_tokenizer(text: str, expected: str) -> None:
    assert coco_tokenize(text) == expected


def test_punctuation_list_is_pycocoevalcaps() -> None:
    ptb = pytest.importorskip("pycocoevalcap.tokenizer.ptbtokenizer")
    assert PUNCTUATIONS == frozenset(ptb.PUNCTUATIONS)


def test_pretokenised_flickr_captions_only_lose_case_and_punctuation(flickr_captions: dict[str, list[str]]) -> None:
    # Flickr8k captions are already space-tokenised; PTB only lower-cases them and drops the punctuation tokens,
    # except for clitics written "dog 's" (already split) and the rare glued punctuation.
    captions = [c for caps in flickr_captions.values() for c in caps]
    unchanged = 0
    for caption in captions:
        words = [w.lower() for w in caption.split() if w not in PUNCTUATIONS]
        unchanged += coco_tokenize(caption) == " ".join(words)
    assert unchanged / len(captions) > 0.97


def test_output_is_lower_case_single_spaced() -> None:
    for text, _ in JAVA_OUTPUT:
        out = coco_tokenize(text)
        assert out == out.strip() and "  " not in out and out == out.lower()


def test_emoji_and_control_characters_are_dropped() -> None:
    assert coco_tokenize("a dog \U0001f600 on\x07 grass") == "a dog on grass"


def test_prepare_batch_validates_shapes() -> None:
    with pytest.raises(ValueError, match=r"references\[1\] is empty"):
        prepare_batch(["a", "b"], [["a"], []])
    with pytest.raises(ValueError, match="2 predictions but 1 reference lists"):
        prepare_batch(["a", "b"], [["a"]])
    with pytest.raises(TypeError, match="got a string|got str"):
        prepare_batch(["a"], ["a dog"])
    with pytest.raises(TypeError, match="predictions must be a list"):
        prepare_batch("a dog", [["a dog"]])
    assert prepare_batch(["A Dog."], [["A dog!", "DOGS"]]) == (["a dog"], [["a dog", "dogs"]])
