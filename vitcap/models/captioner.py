"""Image captioner: encoder -> projection -> text decoder."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from vitcap.models.decoder import TextDecoder
from vitcap.models.encoders import Encoder

__all__ = ["Captioner"]


class Captioner(nn.Module):
    """Encode images once, then decode captions that cross-attend to the image tokens.

    Returns logits only; the task owns the label shift and the loss.

    Args:
        encoder: Any encoder (``ViTEncoder``, ``CNNEncoder``).
        decoder: The text decoder; ``proj`` maps ``encoder.embed_dim`` to ``decoder.memory_dim`` (Identity when
            they match).
    """

    def __init__(self, encoder: Encoder, decoder: TextDecoder) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        if encoder.embed_dim == decoder.memory_dim:
            self.proj: nn.Module = nn.Identity()
        else:
            self.proj = nn.Linear(encoder.embed_dim, decoder.memory_dim)

    def encode(self, images: Tensor) -> Tensor:
        """Map images ``(B, C, H, W)`` to decoder memory ``(B, N, memory_dim)`` (prefix tokens included)."""
        # Through the module call (== forward_features by the encoder contract), so `encoder.compile()` applies.
        return self.proj(self.encoder(images))

    def forward(self, images: Tensor, tokens: Tensor) -> Tensor:
        """Teacher-forced logits ``(B, T, V)`` for captions ``tokens (B, T)`` of ``images (B, C, H, W)``."""
        return self.decoder(tokens, self.encode(images))

    def forward_memory(self, memory: Tensor, tokens: Tensor, caption_index: Tensor | None = None) -> Tensor:
        """Logits ``(M, T, V)`` for captions of already encoded images.

        Args:
            memory: ``encode(images)``, ``(B, N, memory_dim)``.
            tokens: Captions ``(M, T)``.
            caption_index: ``(M,)`` long, the memory row each caption belongs to, so an image with five captions
                is encoded once; None means caption ``i`` belongs to image ``i`` (``M == B``).
        """
        if caption_index is not None and not _is_identity(caption_index, memory.shape[0]):
            memory = memory.index_select(0, caption_index)  # (B, N, Dm) -> (M, N, Dm)
        return self.decoder(tokens, memory)


def _is_identity(index: Tensor, n: int) -> bool:
    """Whether ``index`` is ``arange(n)`` (training batches: one caption per image, in order), checked for free.

    Skipping the gather saves a copy of the memory and its scatter-add backward. The values are compared only on
    CPU: on an accelerator the comparison would cost a host sync, dearer than the gather it could save.
    """
    if index.shape[0] != n or index.device.type != "cpu" or torch.compiler.is_compiling():
        return False  # under torch.compile a data-dependent branch would break the graph
    return bool(torch.equal(index, torch.arange(n, dtype=index.dtype)))
