"""vitcap: vision transformers and image captioning on timm, PyTorch and Lightning."""

__version__ = "0.1.0"


def load(checkpoint, device="cpu", runtime="torch", task=None):  # noqa: ANN001, ANN201 - see vitcap.inference.load
    """Load a trained checkpoint (`.ckpt` or export folder) for inference; see `vitcap.inference.load`.

    `task` ("captioning" / "classification") picks the head of a joint checkpoint (captioning by default) and
    checks any other checkpoint is of that task.

    `runtime="onnx"` runs an ONNX export folder (`vitcap export --format onnx`) in onnxruntime without PyTorch
    (`vitcap.deploy.load_onnx`); the pipelines of both runtimes caption alike.
    """
    if runtime == "onnx":
        from vitcap.deploy.runtime import load_onnx

        return load_onnx(checkpoint)
    if runtime != "torch":
        raise ValueError(f"runtime must be 'torch' or 'onnx', got {runtime!r}")
    from vitcap.inference import load as _load

    return _load(checkpoint, device=device, task=task)
