"""Token ids -> the words the COCO evaluation scores, without tokenising whole captions.

The caption metrics score *text*: a caption is decoded, run through :func:`~vitcap.metrics.tokenize.coco_tokenize`
(PTB tokenisation, lower-casing, punctuation removal) and split into words. A reward computed at every training
step (self-critical training scores k samples of every image) should not decode and re-tokenise every sample.
:class:`CocoWords` gets the same words from token ids:

- every vocabulary entry is COCO-tokenised once (``"dog"`` -> ``dog``, ``"."`` -> nothing, ``"[UNK]"`` ->
  ``-lsb- unk -rsb-``, as the evaluation sees it);
- a *chunk* is a run of tokens that ``decode`` writes without a space between them (``beach .``, ``t - shirt``,
  ``dog ' s``); a chunk of several tokens is COCO-tokenised as the text ``decode`` makes of it (``t-shirt`` stays
  one word, ``dog's`` becomes ``dog 's``), once, then cached;
- words are interned as ints (:data:`EOS_WORD` is reserved for the end-of-caption token), so n-grams are tuples of
  small ints.

Whether two tokens are written together is probed through ``decode`` itself (not copied from the tokenizer's
rules), so word-level and BPE tokenizers both work. The words equal ``coco_tokenize(decode(ids)).split()``
whenever the PTB tokenisation of a caption is the concatenation of the tokenisations of its space-separated parts;
the PTB rules that look across a space (an acronym's period before a sentence-initial word, phone numbers) are the
exception, and they never occur in vitcap's word-level captions, whose words are lower-case (tested on every
Flickr8k-mini caption).

This module imports only ``vitcap.metrics``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from vitcap.metrics.tokenize import coco_tokenize

__all__ = ["EOS_WORD", "CocoWords"]

EOS_WORD = 0  # the interned id of the end-of-caption token (never a COCO word)
_CHUNK_CACHE = 1 << 18  # multi-token chunks remembered before the cache starts over


class CocoWords:
    """Map token ids (and reference texts) to interned COCO words.

    Args:
        decode: The tokenizer's ``decode``: token ids -> text (drops pad/bos, stops at eos, keeps unknowns).
        vocab_size: Number of token ids V.
        eos_id: End-of-caption id: words stop there.
        skip_ids: Ids that are not part of a caption (pad, bos); skipped.
    """

    def __init__(
        self, decode: Callable[[Sequence[int]], str], vocab_size: int, eos_id: int, skip_ids: Iterable[int] = ()
    ) -> None:
        self._decode = decode
        self.eos_id = eos_id
        self._skip = frozenset(skip_ids)
        self._ids: dict[str, int] = {}  # word -> interned id (EOS_WORD excluded)
        texts = [decode([i]) if i != eos_id and i not in self._skip else "" for i in range(vocab_size)]
        self._single: list[tuple[int, ...]] = [tuple(self.intern(coco_tokenize(t).split())) for t in texts]
        self._chunks: dict[tuple[int, ...], tuple[int, ...]] = {}
        self._glue_before, self._glue_after = _probe_glue(decode, texts)

    @property
    def num_words(self) -> int:
        """Distinct words interned so far (EOS_WORD not counted)."""
        return len(self._ids)

    def intern(self, words: Iterable[str]) -> list[int]:
        """Interned ids of COCO words (new words get new ids, from 1 up)."""
        ids = self._ids
        return [ids.setdefault(w, len(ids) + 1) for w in words]

    def of_text(self, text: str) -> list[int]:
        """Words of a raw caption, as the evaluation tokenises it (``coco_tokenize``); for references."""
        return self.intern(coco_tokenize(text).split())

    def of_ids(self, ids: Sequence[int]) -> list[int]:
        """Words of a caption given as token ids: skips pad/bos, stops at eos (which adds no word).

        Equal to ``of_text(decode(ids))`` (see the module docstring for the one kind of exception).
        """
        words: list[int] = []
        start = 0
        row = [i for i in _until(ids, self.eos_id) if i not in self._skip]
        for j in range(1, len(row) + 1):
            if j < len(row) and (self._glue_after[row[j - 1]] or self._glue_before[row[j]]):
                continue
            words.extend(self._single[row[start]] if j - start == 1 else self._chunk(tuple(row[start:j])))
            start = j
        return words

    def _chunk(self, chunk: tuple[int, ...]) -> tuple[int, ...]:
        words = self._chunks.get(chunk)
        if words is None:
            if len(self._chunks) >= _CHUNK_CACHE:
                self._chunks.clear()
            words = tuple(self.of_text(self._decode(list(chunk))))
            self._chunks[chunk] = words
        return words


def _until(ids: Sequence[int], eos_id: int) -> Sequence[int]:
    for j, i in enumerate(ids):
        if i == eos_id:
            return ids[:j]
    return ids


def _written_together(decode: Callable[[Sequence[int]], str], texts: list[str], a: int, b: int) -> bool:
    """Whether ``decode([a, b])`` writes the two tokens with no whitespace between them."""
    return decode([a, b]) == texts[a] + texts[b] and not texts[b][:1].isspace() and not texts[a][-1:].isspace()


def _probe_glue(decode: Callable[[Sequence[int]], str], texts: list[str]) -> tuple[list[bool], list[bool]]:
    """Per token: written against the token before it (``glue_before``) / after it (``glue_after``).

    Two tokens are written together when the first glues after or the second glues before (word-level: no space
    before ``.`` or ``'``, none after ``(`` or ``-``; BPE: a token without a leading space glues before). Each is
    probed against a plain word that glues on neither side.
    """
    V = len(texts)
    plain = [i for i in range(V) if texts[i].strip().isalnum()]
    glue_before = [False] * V
    glue_after = [False] * V
    if not plain:  # no ordinary word to probe with: keep every token separate
        return glue_before, glue_after
    y = plain[0]
    for b in range(V):
        glue_before[b] = bool(texts[b]) and _written_together(decode, texts, y, b)
    separate = [i for i in plain if not glue_before[i]]
    if separate:
        x = separate[0]
        for a in range(V):
            glue_after[a] = bool(texts[a]) and _written_together(decode, texts, a, x)
    return glue_before, glue_after
