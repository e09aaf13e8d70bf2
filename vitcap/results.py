"""What captioning returns, whichever runtime produced it: PyTorch (`vitcap.inference`) or onnxruntime
(`vitcap.deploy.runtime`). Imports nothing, so the ONNX runtime needs no torch for it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["CaptionResult"]


@dataclass
class CaptionResult:
    """One image's caption: the best hypothesis, its mean token log-prob, and the other n-best entries.

    Attributes:
        caption: The best caption's text.
        score: Mean log-probability of its tokens (eos included when it ended).
        tokens: Its token ids, without bos and eos.
        token_logprobs: The log-probability of each generated token (eos included when it ended).
        alternatives: The other n-best entries, best first: ``{"caption": str, "score": mean token log-prob}``.
        words: The text of each token.
        attention: ``(words, h, w)`` cross-attention over the spatial grid (a torch tensor), when asked for.
    """

    caption: str
    score: float
    tokens: list[int]
    token_logprobs: list[float]
    alternatives: list[dict[str, Any]] = field(default_factory=list)
    words: list[str] = field(default_factory=list)
    attention: Any = None
