"""Greedy decoding, and the row-by-row loop it shares with sampling (``decode_rows``)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from vitcap.generate.config import GenerationConfig
from vitcap.generate.outputs import Generated, HypothesisTensors, length_norm
from vitcap.generate.state import DecodeState
from vitcap.models import TextDecoder

__all__ = ["decode_rows", "greedy"]


@torch.inference_mode()
def greedy(
    decoder: TextDecoder,
    memory: Tensor,
    config: GenerationConfig | None = None,
    *,
    bos_id: int,
    eos_id: int,
    pad_id: int = 0,
) -> Generated:
    """Greedy decoding: the most probable (processed) token at every step, one caption per image.

    Args:
        decoder: The text decoder.
        memory: Image tokens ``(B, N, Dm)``.
        config: Limits and processors; ``num_beams``, ``do_sample``, ``num_return_sequences`` and the sampling
            warpers are ignored.
        bos_id: Start token.
        eos_id: End token.
        pad_id: Padding token.
    """
    config = config or GenerationConfig()
    return decode_rows(decoder, memory, config, 1, _most_probable, bos_id=bos_id, eos_id=eos_id, pad_id=pad_id)


def _most_probable(logprobs: Tensor) -> Tensor:
    return logprobs.argmax(dim=1)


def decode_rows(
    decoder: TextDecoder,
    memory: Tensor,
    config: GenerationConfig,
    group: int,
    choose: Callable[[Tensor], Tensor],
    *,
    bos_id: int,
    eos_id: int,
    pad_id: int,
) -> Generated:
    """Decode ``group`` independent rows per image, ``(B * group)`` rows in all, each returned as one hypothesis.

    Args:
        decoder: The text decoder.
        memory: Image tokens ``(B, N, Dm)``.
        config: Limits, processors and outputs.
        group: Rows (captions) per image.
        choose: Picks each row's next token ``(R,)`` from its processed log-probabilities ``(R, V)``: the most
            probable (greedy) or a draw (sampling).
        bos_id: Start token.
        eos_id: End token.
        pad_id: Padding token.

    Returns:
        Each image's ``group`` captions, best score first.
    """
    state = DecodeState(decoder, memory, group, config, bos_id=bos_id, eos_id=eos_id, pad_id=pad_id)
    B, N, _ = memory.shape
    L, R, device = config.max_length, B * group, memory.device
    total = torch.zeros(R, device=device)  # summed step by step, in the same order as beam search's running sums
    finished = torch.zeros(R, dtype=torch.bool, device=device)
    length = torch.full((R,), L, dtype=torch.long, device=device)  # generated tokens, eos included
    for t in range(L):
        logprobs, weights = state.step(t)  # (R, V), (R, N) or None
        token = choose(logprobs)  # (R,)
        # Finished rows keep stepping (the batch stays rectangular) but add pad at log-prob 0.
        lp = logprobs.gather(1, token[:, None]).squeeze(1).masked_fill(finished, 0.0)
        state.append(t, token.masked_fill(finished, pad_id), lp, weights)
        total = total + lp
        ended = (token == eos_id) & ~finished
        length = torch.where(ended, t + 1, length)
        finished = finished | ended
        if bool(finished.all()):  # the one host sync per step
            break

    score = total / length_norm(length, config.length_penalty)
    # Best first within each image (matters for several samples per image).
    score_g, order = score.view(B, group).sort(dim=1, descending=True, stable=True)
    rows = (order + torch.arange(B, device=device)[:, None] * group).view(-1)
    seqs, token_lp, attn = state.histories(rows)  # (R, L), (R, L), (R, L, N) or None
    return HypothesisTensors(
        seqs.view(B, group, L),
        token_lp.view(B, group, L),
        length[rows].view(B, group),
        total[rows].view(B, group),
        score_g,
        finished[rows].view(B, group),
        None if attn is None else attn.view(B, group, L, N),
    ).to_generated()
