"""Image captioner: encoder -> projection -> text decoder."""

from __future__ import annotations

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
        return self.proj(self.encoder.forward_features(images))

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
        if caption_index is not None:
            memory = memory.index_select(0, caption_index)  # (B, N, Dm) -> (M, N, Dm)
        return self.decoder(tokens, memory)
