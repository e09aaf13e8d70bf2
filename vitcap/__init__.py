"""vitcap: vision transformers and image captioning on timm, PyTorch and Lightning."""

__version__ = "0.1.0"
