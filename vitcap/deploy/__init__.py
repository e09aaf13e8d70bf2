"""Deploying a trained model without PyTorch: an ONNX export in Hugging Face Optimum's layout and an onnxruntime
runtime that captions token for token as PyTorch does.

- `layout`: the folder's files, tensor names and JSON files, and reading a folder (no torch).
- `onnx_export`: `export_onnx(checkpoint, out_dir, quantize=None)`, torch's dynamo exporter (imports torch).
- `search`: greedy and batched beam search in numpy, `vitcap.generate`'s scoring rules (no torch).
- `preprocess`: the evaluation transform in numpy and Pillow (no torch).
- `runtime`: `load_onnx(folder)` -> `OnnxCaptionPipeline` / `OnnxClassifyPipeline` over onnxruntime (no torch).
- `model_card`: the folder's `README.md`.

The names below load on first use, so `from vitcap.deploy import load_onnx` does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vitcap.lazy import lazy_exports

if TYPE_CHECKING:
    from vitcap.deploy.onnx_export import export_onnx
    from vitcap.deploy.runtime import OnnxCaptionPipeline, OnnxClassifyPipeline, load_onnx

__all__ = ["OnnxCaptionPipeline", "OnnxClassifyPipeline", "export_onnx", "load_onnx"]


_EXPORTS = {
    "export_onnx": "onnx_export",
    "OnnxCaptionPipeline": "runtime",
    "OnnxClassifyPipeline": "runtime",
    "load_onnx": "runtime",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
