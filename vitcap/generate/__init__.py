"""Caption generation: greedy decoding, batched beam search and sampling over a ``Captioner``.

Every strategy is a plain function over a ``TextDecoder``, the encoded images (``memory``) and an explicit
``DecoderCache`` it creates (litgpt's ``generate/base.py`` and nanochat's ``engine.py`` keep the same split: the
model computes logits, these functions choose tokens). Images are encoded once and their cross-attention keys and
values projected once (``decoder.project_memory``); the ``g`` rows of one image (beams, or independent samples)
are contiguous, ``b * g .. b * g + g - 1``, and read that one copy through the decoder's grouped cross-attention.

Scores, for every strategy alike:

- ``logprob``: the sum of the chosen tokens' log-probabilities, eos included, under the decoder's distribution
  *after* the logit processors (repetition penalty, no-repeat-n-gram, min-length and special-token bans), that
  is ``log_softmax`` of the processed logits. Sampling warpers (temperature, top-k, top-p) only change how a
  token is drawn, not the reported log-probability, so sampled and searched captions are comparable.
- ``score = logprob / length ** length_penalty`` with ``length`` the number of generated tokens, eos included:
  Hugging Face's definition (``BeamSearchScorer``), not GNMT's ``((5 + length) / 6) ** alpha``. Beam search
  ranks by it.

pad and bos are never generated: a caption contains neither, and the decoder was never trained to emit them.

Modules, in import order:

- ``config``: ``GenerationConfig`` (strategy, limits, processors, outputs; validated).
- ``processors``: the logit processors and the sampling warpers, functions over ``(R, V)`` logits.
- ``outputs``: ``Hypothesis``, ``Generated``, the batched ``HypothesisTensors`` every strategy finishes in,
  ``attention_grid``.
- ``state``: ``DecodeState``, the rows being decoded and the one step (logits, processors) all strategies share.
- ``greedy``, ``sampling``, ``beam``: the strategies.
- ``base``: ``generate`` and ``generate_from_memory``, which pick the strategy.
"""

from __future__ import annotations

import sys
import types
from typing import TYPE_CHECKING, Any

from vitcap.lazy import lazy_exports

if TYPE_CHECKING:  # the names load on first use (below), so `vitcap.generate.config` imports without torch
    from vitcap.generate.base import generate, generate_from_memory
    from vitcap.generate.beam import beam_search
    from vitcap.generate.config import GenerationConfig, GenerationOverrides
    from vitcap.generate.greedy import greedy
    from vitcap.generate.outputs import Generated, Hypothesis, attention_grid
    from vitcap.generate.sampling import sample

# name -> submodule that defines it; `GenerationConfig` is torch-free (the ONNX runtime validates decoding with it)
_EXPORTS = {
    "generate": "base",
    "generate_from_memory": "base",
    "beam_search": "beam",
    "GenerationConfig": "config",
    "GenerationOverrides": "config",
    "greedy": "greedy",
    "Generated": "outputs",
    "Hypothesis": "outputs",
    "attention_grid": "outputs",
    "sample": "sampling",
}


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)


class _Package(types.ModuleType):
    """`vitcap.generate.greedy` stays the function: importing the submodule of the same name must not replace it
    (the import system sets a loaded submodule as an attribute of its package)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType) and _EXPORTS.get(name) == name:
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


__all__ = [
    "GenerationConfig",
    "GenerationOverrides",
    "Generated",
    "Hypothesis",
    "attention_grid",
    "beam_search",
    "generate",
    "generate_from_memory",
    "greedy",
    "sample",
]
