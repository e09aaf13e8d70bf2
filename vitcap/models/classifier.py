"""Image classifier: encoder -> pooled token -> linear head."""

from __future__ import annotations

from typing import Literal

from torch import Tensor, nn

from vitcap.models.encoders import Encoder

__all__ = ["Classifier"]


class Classifier(nn.Module):
    """Pool the encoder's tokens and classify them.

    No extra norm: a timm ViT already ends ``forward_features`` with its final norm, and ``CNNEncoder`` with its own.

    Args:
        encoder: Any encoder (``ViTEncoder``, ``CNNEncoder``).
        num_classes: Number of classes.
        pool: ``"token"`` uses the first prefix (class) token; without prefix tokens (CNN, ``class_token=False``
            ViTs) it falls back to ``"mean"``, the mean over the spatial tokens.
        drop_rate: Dropout before the head.
    """

    def __init__(
        self, encoder: Encoder, num_classes: int, pool: Literal["token", "mean"] = "token", drop_rate: float = 0.0
    ) -> None:
        super().__init__()
        if pool not in ("token", "mean"):
            raise ValueError(f"unknown pool {pool!r}; expected 'token' or 'mean'")
        self.encoder = encoder
        self.num_classes = num_classes
        self.pool = pool if encoder.num_prefix_tokens > 0 else "mean"
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(encoder.embed_dim, num_classes)

    def forward_features(self, images: Tensor) -> Tensor:
        """The encoder's tokens ``(B, N, D)``."""
        return self.encoder.forward_features(images)

    def forward_head(self, tokens: Tensor) -> Tensor:
        """Pool tokens ``(B, N, D)`` and return logits ``(B, num_classes)``."""
        if self.pool == "token":
            x = tokens[:, 0]
        else:
            x = tokens[:, self.encoder.num_prefix_tokens :].mean(dim=1)
        return self.head(self.head_drop(x))

    def forward(self, images: Tensor) -> Tensor:
        """Logits ``(B, num_classes)`` for images ``(B, C, H, W)``."""
        return self.forward_head(self.forward_features(images))
