"""``GenerationConfig``: the strategy, limits, logit processors and outputs of caption generation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NoReturn

from vitcap.errors import ConfigError
from vitcap.overrides import overrides_of

__all__ = ["GenerationConfig"]

# Fields that must be true ints (not bools, not floats): they count tokens, beams or hypotheses.
_INT_FIELDS = ("max_length", "min_length", "num_beams", "num_return_sequences", "top_k", "no_repeat_ngram_size")


@dataclass
class GenerationConfig:
    """How to generate captions; validated on construction.

    A bad value raises ``ConfigError`` (a ``ValueError``) with a one-line message naming the field, e.g.
    ``generation.num_beams: expected >= 1, got 0``. Keep it a plain dataclass of its fields:
    ``CaptionPipeline.caption`` rebuilds it from ``vars(config)``.

    Attributes:
        max_length: Most *new* tokens per caption: its words plus the eos that ends it; the bos every caption
            starts from is not counted. A caption that reaches ``max_length`` without eos is cut there
            (``Hypothesis.ended`` False), so a caption has at most ``max_length - 1`` words when it ends with eos and
            ``max_length`` when cut. Other parts of vitcap use the word differently: the data modules' and
            ``Tokenizer.encode_batch``'s ``max_length`` is a whole training row, bos and eos both counted
            (``max_length - 2`` words), so captions trained with data ``max_length=M`` fit in generation
            ``max_length=M - 1``; the decoder's ``max_len`` is the size of its position table. The decoder reads
            bos and every generated token but the last, ``max_length`` positions, so a decoder with learned
            positions needs ``max_length <= decoder.max_len``.
        min_length: eos is forbidden before this many tokens have been generated (same unit as ``max_length``,
            ``0 <= min_length <= max_length``), so a caption that ends with eos has at least ``min_length`` words
            (unless the bans leave a row nothing else to emit).
        num_beams: Beam width k; 1 = greedy (or sampling with ``do_sample``).
        length_penalty: Exponent ``alpha`` of ``score = logprob / length ** alpha`` (Hugging Face's definition);
            0 ranks by raw log-probability, > 0 favours longer captions.
        num_return_sequences: Hypotheses returned per image: the n best finished beams (<= ``num_beams``), or n
            independent samples. Greedy returns 1.
        do_sample: Draw tokens instead of taking the most probable one (only with ``num_beams=1``).
        temperature: Sampling temperature (> 0).
        top_k: Sample among the k most probable tokens; 0 = off.
        top_p: Nucleus sampling: sample among the smallest set of tokens whose probability reaches p; 1 = off.
        repetition_penalty: CTRL-style penalty (> 0) on tokens already in the caption: positive logits are divided
            by it, negative ones multiplied; 1 = off.
        no_repeat_ngram_size: Forbid tokens that would complete an n-gram already in the caption; 0 = off.
        use_cache: Decode one token per step against the self-attention KV cache. False recomputes the whole
            prefix every step with ``decoder(tokens, memory)`` (a reference path for tests and benchmarks).
        output_attentions: Return each caption's cross-attention maps. Only then the decoder takes its explicit
            softmax path; otherwise it keeps the fused kernel.
        attention_layer: Decoder block whose cross-attention maps are returned (negative counts from the end).
        seed: Seed of the sampling ``torch.Generator``; None draws from torch's global generator.
    """

    max_length: int = 32
    min_length: int = 0
    num_beams: int = 1
    length_penalty: float = 1.0
    num_return_sequences: int = 1
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    use_cache: bool = True
    output_attentions: bool = False
    attention_layer: int = -1
    seed: int | None = None

    def __post_init__(self) -> None:
        for key in _INT_FIELDS:
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool):
                self._fail(key, "an int")
        if self.max_length < 1:
            self._fail("max_length", ">= 1")
        if not 0 <= self.min_length <= self.max_length:
            self._fail("min_length", f"between 0 and max_length={self.max_length}")
        if self.num_beams < 1:
            self._fail("num_beams", ">= 1")
        if self.num_return_sequences < 1:
            self._fail("num_return_sequences", ">= 1")
        if self.num_beams > 1 and self.num_return_sequences > self.num_beams:
            self._fail("num_return_sequences", f"<= num_beams={self.num_beams} (beam search returns its n best beams)")
        if self.num_beams > 1 and self.do_sample:
            self._fail("do_sample", f"False with num_beams={self.num_beams} (beam sampling is not supported)")
        if self.num_beams == 1 and not self.do_sample and self.num_return_sequences != 1:
            self._fail("num_return_sequences", "1 for greedy decoding (set do_sample=True or num_beams > 1 for more)")
        if not self.temperature > 0:
            self._fail("temperature", "> 0")
        if self.top_k < 0:
            self._fail("top_k", ">= 0 (0 = off)")
        if not 0 < self.top_p <= 1:
            self._fail("top_p", "in (0, 1] (1 = off)")
        if not self.repetition_penalty > 0:
            self._fail("repetition_penalty", "> 0 (1 = off)")
        if self.no_repeat_ngram_size < 0:
            self._fail("no_repeat_ngram_size", ">= 0 (0 = off)")
        if self.seed is not None and (not isinstance(self.seed, int) or isinstance(self.seed, bool)):
            self._fail("seed", "an int or None")

    def _fail(self, field: str, expected: str) -> NoReturn:
        """Raise ``ConfigError`` for ``field``, whose current value is not ``expected``."""
        raise ConfigError(
            f"generation.{field}: expected {expected}, got {getattr(self, field)!r}", key=f"generation.{field}"
        )


GenerationOverrides = overrides_of(
    GenerationConfig,
    "GenerationOverrides",
    "Decoding settings that replace the defaults; every field is a `GenerationConfig` field, None keeps the default.",
    __name__,
)
