"""Caption tokenizer: trained from the training captions, serialisable to a string stored in checkpoints.

Two kinds, both built with the Hugging Face ``tokenizers`` library and no network:

- ``"word"`` (default): NFKC + lower-casing + strip, split on whitespace, every punctuation character its own
  token, one id per word (``WordLevel``); words seen fewer than ``min_freq`` times map to ``[UNK]``.
  ``decode`` joins words with spaces and re-attaches punctuation: no space before ``. , ! ? ; : % ) ] }``,
  none after ``( [ { $``, none on either side of ``' - /``. Round trip is on the normalised text:
  ``decode(encode(t)) == normalize(t)`` for every ``t`` whose words are in the vocabulary, and
  ``normalize`` is idempotent. Example: ``"A dog 's T-shirt ."`` -> ``"a dog's t-shirt."``.
- ``"bpe"``: byte-level BPE (``vocab_size`` ids, default 1000) over the same normalisation; lossless, so
  ``decode(encode(t)) == normalize(t)`` for every ``t`` (NFKC, lower-cased, stripped).

Special tokens have fixed ids: ``[PAD]=0, [BOS]=1, [EOS]=2, [UNK]=3``. ``encode`` wraps a caption as
``[BOS] ... [EOS]``; ``decode`` drops ``[PAD]``/``[BOS]`` and stops at the first ``[EOS]``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Literal

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

if TYPE_CHECKING:  # torch only for `encode_batch`: the ONNX runtime decodes captions without it
    import torch

__all__ = ["BOS_ID", "EOS_ID", "PAD_ID", "SPECIAL_TOKENS", "UNK_ID", "CaptionTokenizer"]

PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3
SPECIAL_TOKENS = ("[PAD]", "[BOS]", "[EOS]", "[UNK]")
_KINDS = ("word", "bpe")
_NO_SPACE_BEFORE = frozenset(".,!?;:%)]}")
_NO_SPACE_AFTER = frozenset("([{$")
_JOINERS = frozenset("'-/")


class CaptionTokenizer:
    """Word-level or BPE caption tokenizer with fixed special-token ids.

    Build one with ``CaptionTokenizer.train`` or ``CaptionTokenizer.from_json``.

    Args:
        tokenizer: A trained ``tokenizers.Tokenizer`` whose first four ids are ``SPECIAL_TOKENS``.
        kind: ``"word"`` or ``"bpe"``.
    """

    PAD_ID = PAD_ID
    BOS_ID = BOS_ID
    EOS_ID = EOS_ID
    UNK_ID = UNK_ID
    pad_id = PAD_ID
    bos_id = BOS_ID
    eos_id = EOS_ID
    unk_id = UNK_ID

    def __init__(self, tokenizer: Tokenizer, kind: Literal["word", "bpe"] = "word") -> None:
        if kind not in _KINDS:
            raise ValueError(f"tokenizer kind must be one of {_KINDS}, got {kind!r}")
        for expected_id, token in enumerate(SPECIAL_TOKENS):
            if tokenizer.token_to_id(token) != expected_id:
                raise ValueError(
                    f"tokenizer has {token} at id {tokenizer.token_to_id(token)}, expected {expected_id}; "
                    "build tokenizers with CaptionTokenizer.train"
                )
        self._tok = tokenizer
        self.kind = kind

    @classmethod
    def train(
        cls,
        captions: Iterable[str],
        kind: Literal["word", "bpe"] = "word",
        min_freq: int = 1,
        vocab_size: int | None = None,
    ) -> CaptionTokenizer:
        """Build a tokenizer from training captions.

        Args:
            captions: Training captions (raw text; normalisation is part of the tokenizer).
            kind: ``"word"`` (one id per normalised word) or ``"bpe"`` (byte-level BPE).
            min_freq: Minimum count for a word (or BPE merge) to enter the vocabulary.
            vocab_size: Cap on the vocabulary size including special tokens; word-level default unlimited,
                BPE default 1000 (at least 300: the 256 byte symbols plus specials and merges).

        Returns:
            The trained tokenizer.
        """
        if kind not in _KINDS:
            raise ValueError(f"tokenizer kind must be one of {_KINDS}, got {kind!r}")
        if min_freq < 1:
            raise ValueError(f"min_freq must be >= 1, got {min_freq}")
        tok = _empty_tokenizer(kind)
        if kind == "word":
            trainer = trainers.WordLevelTrainer(
                vocab_size=vocab_size if vocab_size is not None else 10_000_000,
                min_frequency=min_freq,
                special_tokens=list(SPECIAL_TOKENS),
                show_progress=False,
            )
        else:
            vocab_size = 1000 if vocab_size is None else vocab_size
            if vocab_size < 300:
                raise ValueError(f"bpe vocab_size must be >= 300 (256 byte symbols + specials), got {vocab_size}")
            trainer = trainers.BpeTrainer(
                vocab_size=vocab_size,
                min_frequency=min_freq,
                special_tokens=list(SPECIAL_TOKENS),
                initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                show_progress=False,
            )
        # Streamed, not listed: a web-scale corpus's captions need not fit in memory (vitcap.data.shards).
        tok.train_from_iterator(iter(captions), trainer=trainer)
        return cls(tok, kind)

    # -- serialisation -------------------------------------------------------------------------------------

    def to_json(self) -> str:
        """Serialise to a JSON string (the HF tokenizer plus the kind), for storing inside checkpoints."""
        return json.dumps({"vitcap_tokenizer": 1, "kind": self.kind, "tokenizer": self._tok.to_str()})

    @classmethod
    def from_json(cls, s: str) -> CaptionTokenizer:
        """Rebuild a tokenizer from ``to_json`` output.

        Raises:
            ValueError: ``s`` is not a serialised ``CaptionTokenizer``.
        """
        try:
            payload = json.loads(s)
            kind, inner = payload["kind"], payload["tokenizer"]
        except (json.JSONDecodeError, TypeError, KeyError) as e:
            raise ValueError(
                f"not a serialised CaptionTokenizer (expected JSON with 'kind' and 'tokenizer'): {e}"
            ) from e
        return cls(Tokenizer.from_str(inner), kind)

    def __getstate__(self) -> dict:
        return {"json": self.to_json()}

    def __setstate__(self, state: dict) -> None:
        other = CaptionTokenizer.from_json(state["json"])
        self._tok, self.kind = other._tok, other.kind

    # -- vocabulary ----------------------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        """Number of ids, special tokens included (the decoder's output size V)."""
        return self._tok.get_vocab_size(with_added_tokens=True)

    def __len__(self) -> int:
        return self.vocab_size

    def token_to_id(self, token: str) -> int | None:
        """Id of a vocabulary entry, or None."""
        return self._tok.token_to_id(token)

    def id_to_token(self, idx: int) -> str | None:
        """Vocabulary entry of an id, or None."""
        return self._tok.id_to_token(idx)

    def get_vocab(self) -> dict[str, int]:
        """Token -> id mapping, special tokens included."""
        return dict(self._tok.get_vocab(with_added_tokens=True))

    # -- text ----------------------------------------------------------------------------------------------

    def normalize(self, text: str) -> str:
        """The normalised form of ``text``: what ``decode(encode(text))`` returns when no word is unknown."""
        norm = self._tok.normalizer.normalize_str(text)
        if self.kind == "bpe":
            return norm
        return _join_words([w for w, _ in self._tok.pre_tokenizer.pre_tokenize_str(norm)])

    def encode(self, text: str, add_special: bool = True) -> list[int]:
        """Token ids of one caption, ``[BOS] ... [EOS]`` when ``add_special``."""
        ids = self._tok.encode(text, add_special_tokens=False).ids
        return [BOS_ID, *ids, EOS_ID] if add_special else list(ids)

    def encode_batch(self, texts: Sequence[str], max_length: int | None = None) -> torch.Tensor:
        """Encode captions into a right-padded id matrix.

        Args:
            texts: M captions.
            max_length: Maximum row length T including ``[BOS]`` and ``[EOS]`` (>= 2); longer captions are
                truncated and keep their final ``[EOS]``. ``None`` = no limit.

        Returns:
            LongTensor (M, T), each row ``[BOS] ... [EOS] [PAD]...`` with T the longest row (<= max_length).
        """
        import torch

        if max_length is not None and max_length < 2:
            raise ValueError(f"max_length must be >= 2 to hold [BOS] and [EOS], got {max_length}")
        encodings = self._tok.encode_batch(list(texts), add_special_tokens=False)
        rows = []
        for enc in encodings:
            ids = enc.ids
            if max_length is not None and len(ids) > max_length - 2:
                ids = ids[: max_length - 2]
            rows.append([BOS_ID, *ids, EOS_ID])
        T = max((len(r) for r in rows), default=2)
        out = torch.full((len(rows), T), PAD_ID, dtype=torch.long)
        for i, r in enumerate(rows):
            out[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        return out

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        """Text of one id sequence: drops ``[PAD]``/``[BOS]``, stops at the first ``[EOS]``, keeps ``[UNK]``."""
        if hasattr(ids, "tolist"):  # a torch tensor or numpy array
            ids = ids.tolist()
        kept = []
        for i in ids:
            i = int(i)
            if i == EOS_ID:
                break
            if i not in (PAD_ID, BOS_ID):
                kept.append(i)
        if self.kind == "bpe":
            return self._tok.decode(kept, skip_special_tokens=False)
        return _join_words([self._tok.id_to_token(i) or SPECIAL_TOKENS[UNK_ID] for i in kept])

    def decode_batch(self, ids: torch.Tensor | Sequence[Sequence[int]]) -> list[str]:
        """Decode rows of ids (LongTensor (M, T), numpy array or lists) with ``decode``."""
        if hasattr(ids, "tolist"):
            ids = ids.tolist()
        return [self.decode(row) for row in ids]

    def __repr__(self) -> str:
        return f"CaptionTokenizer(kind={self.kind!r}, vocab_size={self.vocab_size})"


def _empty_tokenizer(kind: str) -> Tokenizer:
    unk = SPECIAL_TOKENS[UNK_ID]
    norm = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase(), normalizers.Strip()])
    if kind == "word":
        tok = Tokenizer(models.WordLevel(unk_token=unk))
        tok.normalizer = norm
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation(behavior="isolated")]
        )
    else:
        tok = Tokenizer(models.BPE(unk_token=unk))
        tok.normalizer = norm
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        tok.decoder = decoders.ByteLevel()
    return tok


def _join_words(words: Sequence[str]) -> str:
    """Join word-level tokens with spaces, re-attaching punctuation (see the module docstring)."""
    out: list[str] = []
    glue_next = True  # no space before the first word
    for w in words:
        glue = glue_next or w in _NO_SPACE_BEFORE or w in _JOINERS
        out.append(w if glue else " " + w)
        glue_next = w in _NO_SPACE_AFTER or w in _JOINERS
    return "".join(out)
