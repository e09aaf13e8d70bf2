"""``DecodeState``: the rows every strategy decodes, their histories and the one step that extends them.

Images are encoded once and their cross-attention keys and values projected once (``decoder.project_memory``);
the ``g`` rows of one image (beams, or independent samples) are contiguous, ``b * g .. b * g + g - 1``, and read
that one copy through the decoder's grouped cross-attention.
"""

from __future__ import annotations

import torch
from torch import Tensor

from vitcap.errors import ConfigError
from vitcap.generate.config import GenerationConfig
from vitcap.generate.processors import banned_specials, process_logits
from vitcap.layers import LearnedPositionEmbedding
from vitcap.models import TextDecoder

__all__ = ["DecodeState", "check_inputs"]


class DecodeState:
    """``R`` rows decoded together: token histories, the decoder's KV cache, and the step that extends them.

    The step is the same for every strategy: next-token logits (with the KV cache, one new token per step, or
    without it, the whole prefix) turned into log-probabilities by the logit processors. Strategies choose tokens
    from them and write them back with ``append`` (and, in beam search, follow the beams with ``reorder``).

    Args:
        decoder: The text decoder.
        memory: Image tokens ``(B, N, Dm)``.
        group: Rows per image ``g``: ``R = B * g`` rows, row ``r`` reading image ``r // g``.
        config: Limits, processors and outputs.
        bos_id: Start token.
        eos_id: End token.
        pad_id: Padding token, written after a row's eos.

    Attributes:
        seq: ``(R, L + 1)`` bos and the generated tokens (``L = config.max_length``), pad where none is yet.
        token_lp: ``(R, L)`` log-probability of each generated token.
        attn: ``(R, L, N)`` cross-attention of the query that chose each token, or None unless
            ``config.output_attentions``.
    """

    def __init__(
        self,
        decoder: TextDecoder,
        memory: Tensor,
        group: int,
        config: GenerationConfig,
        *,
        bos_id: int,
        eos_id: int,
        pad_id: int,
    ) -> None:
        check_inputs(decoder, memory, config, bos_id, eos_id, pad_id)
        B, N, _ = memory.shape
        L, R, device = config.max_length, B * group, memory.device
        self.decoder = decoder
        self.memory = memory
        self.config = config
        self.eos_id = eos_id
        self.need_weights = config.output_attentions
        self.bans = banned_specials(decoder.vocab_size, bos_id, eos_id, pad_id, device)
        # Keys/values of every image, projected once and shared by its rows.
        self.cross_kv = decoder.project_memory(memory) if config.use_cache or config.output_attentions else None
        self.cache = decoder.init_cache(R) if config.use_cache else None

        self.seq = torch.full((R, L + 1), pad_id, dtype=torch.long, device=device)  # bos + generated tokens
        self.seq[:, 0] = bos_id
        self.token_lp = torch.zeros(R, L, device=device)  # log-prob of each generated token
        self.attn = torch.zeros(R, L, N, device=device) if self.need_weights else None

    def step(self, t: int) -> tuple[Tensor, Tensor | None]:
        """Processed log-probabilities ``(R, V)`` of generated token ``t``, and its cross-attention ``(R, N)``.

        The cross-attention is None unless ``config.output_attentions``.
        """
        logits, weights = self._logits(self.seq[:, : t + 1])  # (R, V), (R, N) or None
        return process_logits(logits, self.seq[:, 1 : t + 1], t, self.config, self.bans, self.eos_id), weights

    def _logits(self, prefix: Tensor) -> tuple[Tensor, Tensor | None]:
        """Logits ``(R, V)`` after ``prefix (R, t + 1)`` (bos + generated), and its cross-attention ``(R, N)``."""
        if self.cache is not None:
            assert self.cross_kv is not None
            logits, weights = self.decoder.forward_step(prefix[:, -1:], self.cross_kv, self.cache, self.need_weights)
        elif self.need_weights:
            # The explicit path over the whole prefix: a throwaway cache makes forward_step a teacher-forced pass.
            assert self.cross_kv is not None
            scratch = self.decoder.init_cache(prefix.shape[0])
            logits, weights = self.decoder.forward_step(prefix, self.cross_kv, scratch, True)
        else:
            # The uncached reference path recomputes everything, image keys/values included (HF's use_cache=False).
            return self.decoder(prefix, self.memory)[:, -1], None
        attn = weights[self.config.attention_layer][:, -1] if weights is not None else None
        return logits[:, -1], attn

    def append(self, t: int, token: Tensor, lp: Tensor, weights: Tensor | None) -> None:
        """Write generated token ``t`` of every row: ids ``(R,)``, log-probs ``(R,)``, cross-attention ``(R, N)``."""
        self.seq[:, t + 1] = token
        self.token_lp[:, t] = lp
        if self.attn is not None and weights is not None:
            self.attn[:, t] = weights

    def reorder(self, index: Tensor) -> None:
        """Row ``r`` continues row ``index[r]`` ``(R,)``: histories and KV cache follow (beam search)."""
        self.seq = self.seq.index_select(0, index)
        self.token_lp = self.token_lp.index_select(0, index)
        if self.attn is not None:
            self.attn = self.attn.index_select(0, index)
        if self.cache is not None:
            self.cache.reorder(index)

    def histories(self, rows: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """Copies of the generated tokens ``(n, L)``, their log-probs ``(n, L)`` and maps ``(n, L, N)`` of ``rows``."""
        return self.seq[rows, 1:], self.token_lp[rows], None if self.attn is None else self.attn[rows]


def check_inputs(
    decoder: TextDecoder, memory: Tensor, config: GenerationConfig, bos_id: int, eos_id: int, pad_id: int
) -> None:
    """Raise ``ValueError`` for inputs that do not fit together (``ConfigError`` for a config that does not fit)."""
    if memory.ndim != 3:
        raise ValueError(f"memory must be (B, N, D) image tokens, got shape {tuple(memory.shape)}")
    V = decoder.vocab_size
    for name, value in (("bos_id", bos_id), ("eos_id", eos_id), ("pad_id", pad_id)):
        if not 0 <= value < V:
            raise ValueError(f"{name}={value} is outside the decoder's vocabulary of {V} tokens")
    if bos_id == eos_id:
        raise ValueError(f"bos_id and eos_id must differ, both are {bos_id}")
    depth = len(decoder.blocks)
    if not -depth <= config.attention_layer < depth:
        raise ConfigError(
            f"generation.attention_layer: expected -{depth}..{depth - 1} (the decoder has {depth} blocks), "
            f"got {config.attention_layer}",
            key="generation.attention_layer",
        )
    if isinstance(decoder.pos_embed, LearnedPositionEmbedding) and config.max_length > decoder.max_len:
        raise ConfigError(
            f"generation.max_length: expected <= {decoder.max_len}, the size of the decoder's learned position "
            f"table (max_len), got {config.max_length}",
            key="generation.max_length",
        )
