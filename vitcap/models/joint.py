"""Joint model: one encoder feeding both a caption decoder and a classification head."""

from __future__ import annotations

from typing import Literal

from torch import Tensor, nn

from vitcap.models.captioner import Captioner
from vitcap.models.classifier import Classifier
from vitcap.models.decoder import TextDecoder
from vitcap.models.encoders import Encoder

__all__ = ["JointModel"]


class JointModel(Captioner):
    """A `Captioner` whose encoder also feeds a classification head (`Classifier`'s pooling and head).

    Its weights are a captioner's (`encoder.`, `proj.`, `decoder.`) plus a classifier's head (`head.`), so
    `as_classifier()` is a `Classifier` over the same modules, and the model itself captions like any captioner.

    Args:
        encoder: Any encoder (``ViTEncoder``, ``CNNEncoder``).
        decoder: The text decoder.
        num_classes: Number of classes.
        pool: ``"token"`` or ``"mean"``, as in `Classifier` (a CNN or a ViT without class token pools by mean).
        drop_rate: Dropout before the head.
    """

    def __init__(
        self,
        encoder: Encoder,
        decoder: TextDecoder,
        num_classes: int,
        pool: Literal["token", "mean"] = "token",
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__(encoder, decoder)
        self.num_classes = num_classes
        self.pool = pool if encoder.num_prefix_tokens > 0 else "mean"
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(encoder.embed_dim, num_classes)

    def forward_head(self, features: Tensor) -> Tensor:
        """Class logits ``(B, num_classes)`` from the encoder's tokens ``(B, N, D)`` (before the projection)."""
        x = features[:, 0] if self.pool == "token" else features[:, self.encoder.num_prefix_tokens :].mean(dim=1)
        return self.head(self.head_drop(x))

    def encode_both(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Decoder memory ``(B, N, memory_dim)`` and class logits ``(B, num_classes)`` from one encoder pass."""
        features = self.encoder(images)
        return self.proj(features), self.forward_head(features)

    def classify(self, images: Tensor) -> Tensor:
        """Class logits ``(B, num_classes)`` of images ``(B, C, H, W)``."""
        return self.forward_head(self.encoder(images))

    def as_classifier(self) -> Classifier:
        """A `Classifier` sharing this model's encoder and head (no copy): what `vitcap classify` runs."""
        view = Classifier(self.encoder, self.num_classes, self.pool, self.head_drop.p)
        view.head = self.head
        return view.train(self.training)
