"""vitcap: vision transformers and image captioning on timm, PyTorch and Lightning."""

__version__ = "0.1.0"


def load(checkpoint, device="cpu"):  # noqa: ANN001, ANN201 - documented in vitcap.inference.load
    """Load a trained checkpoint (`.ckpt` or export folder) for inference; see `vitcap.inference.load`."""
    from vitcap.inference import load as _load

    return _load(checkpoint, device=device)
