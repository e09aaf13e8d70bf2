"""The entry points: ``generate`` (images) and ``generate_from_memory`` (encoded images) pick the strategy."""

from __future__ import annotations

import torch
from torch import Tensor

from vitcap.generate.beam import beam_search
from vitcap.generate.config import GenerationConfig
from vitcap.generate.greedy import greedy
from vitcap.generate.outputs import Generated
from vitcap.generate.sampling import sample
from vitcap.models import Captioner, TextDecoder

__all__ = ["generate", "generate_from_memory"]


@torch.inference_mode()
def generate(
    model: Captioner,
    images: Tensor,
    config: GenerationConfig | None = None,
    *,
    bos_id: int,
    eos_id: int,
    pad_id: int = 0,
) -> Generated:
    """Caption images with greedy decoding, beam search or sampling, as ``config`` says.

    Put the model in eval mode first; this function does not change it.

    Args:
        model: The captioner.
        images: ``(B, C, H, W)`` preprocessed images.
        config: Strategy and limits; defaults to greedy with ``max_length=32``.
        bos_id: Token every caption starts from.
        eos_id: Token that ends a caption.
        pad_id: Padding token (never generated).

    Returns:
        ``Generated`` with an n-best list per image.
    """
    return generate_from_memory(model, model.encode(images), config, bos_id=bos_id, eos_id=eos_id, pad_id=pad_id)


@torch.inference_mode()
def generate_from_memory(
    model: Captioner | TextDecoder,
    memory: Tensor,
    config: GenerationConfig | None = None,
    *,
    bos_id: int,
    eos_id: int,
    pad_id: int = 0,
) -> Generated:
    """Like ``generate`` for images already encoded (``memory = model.encode(images)``, ``(B, N, Dm)``)."""
    config = config or GenerationConfig()
    decoder = model.decoder if isinstance(model, Captioner) else model
    if config.num_beams > 1:
        return beam_search(decoder, memory, config, bos_id=bos_id, eos_id=eos_id, pad_id=pad_id)
    if config.do_sample:
        return sample(decoder, memory, config, bos_id=bos_id, eos_id=eos_id, pad_id=pad_id)
    return greedy(decoder, memory, config, bos_id=bos_id, eos_id=eos_id, pad_id=pad_id)
