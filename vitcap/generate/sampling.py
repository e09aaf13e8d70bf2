"""Ancestral sampling: ``num_return_sequences`` independent captions per image, drawn through the warpers."""

from __future__ import annotations

import torch
from torch import Tensor

from vitcap.generate.config import GenerationConfig
from vitcap.generate.greedy import decode_rows
from vitcap.generate.outputs import Generated
from vitcap.generate.processors import draw
from vitcap.models import TextDecoder

__all__ = ["sample"]


@torch.inference_mode()
def sample(
    decoder: TextDecoder,
    memory: Tensor,
    config: GenerationConfig,
    *,
    bos_id: int,
    eos_id: int,
    pad_id: int = 0,
) -> Generated:
    """Ancestral sampling with temperature, top-k and top-p; ``num_return_sequences`` samples per image.

    The samples of one image are drawn independently in one batch (grouped rows sharing the image's keys and
    values) and returned best score first. ``config.seed`` makes them reproducible.

    Args:
        decoder: The text decoder.
        memory: Image tokens ``(B, N, Dm)``.
        config: Warpers, limits and processors; ``num_beams`` and ``do_sample`` are ignored (this samples).
        bos_id: Start token.
        eos_id: End token.
        pad_id: Padding token.
    """
    generator = None
    if config.seed is not None:
        generator = torch.Generator(device=memory.device).manual_seed(config.seed)

    def choose(logprobs: Tensor) -> Tensor:
        return draw(logprobs, config, generator)

    group = config.num_return_sequences
    return decode_rows(decoder, memory, config, group, choose, bos_id=bos_id, eos_id=eos_id, pad_id=pad_id)
