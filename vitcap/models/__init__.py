"""Models: image encoders, the text decoder, the captioner, classifier and joint model, and named presets."""

from vitcap.models.captioner import Captioner
from vitcap.models.classifier import Classifier
from vitcap.models.decoder import DecoderCache, TextDecoder
from vitcap.models.encoders import CNNEncoder, Encoder, ViTEncoder, build_encoder, load_checkpoint_state
from vitcap.models.joint import JointModel
from vitcap.models.registry import (
    PRESETS,
    DecoderConfig,
    EncoderConfig,
    Preset,
    create_captioner,
    create_classifier,
)

__all__ = [
    "PRESETS",
    "CNNEncoder",
    "Captioner",
    "Classifier",
    "DecoderCache",
    "DecoderConfig",
    "Encoder",
    "EncoderConfig",
    "JointModel",
    "Preset",
    "TextDecoder",
    "ViTEncoder",
    "build_encoder",
    "create_captioner",
    "create_classifier",
    "load_checkpoint_state",
]
