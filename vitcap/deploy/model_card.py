"""The `README.md` model card of an export folder: what the model is, what it was trained on, how to run it."""

from __future__ import annotations

import json

from vitcap.checkpoint import CheckpointMeta
from vitcap.deploy.layout import OnnxConfig

__all__ = ["model_card"]


def _table(rows: list[tuple[str, str]]) -> str:
    return "\n".join(["| | |", "| --- | --- |", *(f"| {k} | {v} |" for k, v in rows)])


def model_card(meta: CheckpointMeta, onnx_config: OnnxConfig, description: str, params: int, files: list[str]) -> str:
    """Markdown text of the card.

    Args:
        meta: The checkpoint's metadata (model spec, tokenizer, preprocessing, decoding, metrics).
        onnx_config: The folder's `onnx` entry.
        description: One line naming the model's parts.
        params: Number of parameters.
        files: The folder's file names.
    """
    spec, pre = meta.model, meta.preprocessing
    enc, dec = spec.get("encoder") or {}, spec.get("decoder") or {}
    captioner = meta.task == "captioning"
    title = "image captioner" if captioner else "image classifier"
    arch = [
        ("model", description),
        ("parameters", f"{params / 1e6:.2f} M"),
        ("encoder", f"{enc.get('kind')} `{enc.get('model_name')}`" + (f", out_index {enc.get('out_index')}" if enc.get("kind") == "cnn" else "")),
        ("input", f"{pre.get('in_chans', 3)} x {pre.get('img_size')} x {pre.get('img_size')}, mean {pre.get('mean')}, std {pre.get('std')}, {pre.get('interpolation', 'bicubic')} resize, crop_pct {pre.get('crop_pct', 1.0)}"),
    ]  # fmt: skip
    if captioner:
        tokenizer = json.loads(meta.tokenizer or "{}")
        arch += [
            ("decoder", f"width {dec.get('embed_dim')}, depth {dec.get('depth')}, {dec.get('num_heads')} heads, {dec.get('cross_attn')} cross-attention, {dec.get('pos_embed')} positions"),
            ("image tokens", str(onnx_config.encoder_sequence_length)),
            ("vocabulary", f"{onnx_config.vocab_size} tokens ({tokenizer.get('kind', '?')}-level, learned from the training captions)"),
            ("decoding", ", ".join(f"{k}={v}" for k, v in meta.generation.items() if k in ("num_beams", "max_length", "length_penalty", "min_length"))),
        ]  # fmt: skip
    else:
        arch.append(("classes", ", ".join(meta.class_names) or "?"))
    metrics = "\n".join(f"- {k}: {v:.4g}" for k, v in sorted(meta.metrics.items())) or "Not recorded in the checkpoint."
    quantized = (
        "`*_quantized.onnx`: int8 weights (dynamic quantisation of every MatMul/Gemm); onnxruntime runs them by "
        "default, `load_onnx(folder, quantized=False)` the float32 files."
        if onnx_config.quantized
        else "float32 only (`vitcap export --format onnx --quantize int8` adds int8 copies)."
    )
    use = (
        [
            "```bash",
            "pip install onnxruntime numpy pillow tokenizers vitcap  # no PyTorch needed for --runtime onnx",
            "vitcap caption --checkpoint THIS_FOLDER --runtime onnx image.png",
            "vitcap caption --checkpoint THIS_FOLDER --runtime onnx --beams 3 --num-captions 3 --json image.png",
            "```",
            "",
            "```python",
            "from vitcap.deploy import load_onnx",
            'model = load_onnx("THIS_FOLDER")',
            'print(model.caption(["image.png"], num_beams=3)[0].caption)',
            "",
            "import vitcap  # the same folder in PyTorch",
            'print(vitcap.load("THIS_FOLDER").caption(["image.png"])[0].caption)',
            "```",
        ]
        if captioner
        else [
            "```python",
            "from vitcap.deploy import load_onnx",
            'print(load_onnx("THIS_FOLDER").classify(["image.png"], top_k=3))',
            "```",
        ]
    )
    return "\n".join(
        [
            f"# vitcap {title}",
            "",
            f"Exported by vitcap {meta.version or '?'} ({onnx_config.exporter}, ONNX opset {onnx_config.opset}).",
            "",
            "## Architecture",
            "",
            _table(arch),
            "",
            "## Data",
            "",
            "The checkpoint does not record its training data set; the tokenizer holds the vocabulary of its "
            "training captions and `preprocessor_config.json` the image preprocessing it was trained with.",
            "",
            "## Metrics (from the checkpoint)",
            "",
            metrics,
            "",
            "## Files",
            "",
            "Hugging Face Optimum's layout: `encoder_model.onnx` (pixel_values -> last_hidden_state), "
            "`decoder_model.onnx` (the first step; returns `present.{i}.decoder.*` and `present.{i}.encoder.*`), "
            "`decoder_with_past_model.onnx` (one token per row; `past_key_values.{i}.decoder.*` in and out, the "
            "image's `past_key_values.{i}.encoder.*` in only). The rows of `input_ids` may be several per image "
            "(beams; contiguous), sharing the image's encoder keys/values. "
            if captioner
            else "`model.onnx` (pixel_values -> logits). "
            "`model.safetensors` + `config.json` are the same model for PyTorch (`vitcap.load`).",
            "",
            f"Precision: {quantized}",
            "",
            "\n".join(f"- `{name}`" for name in files),
            "",
            "## Use",
            "",
            *use,
            "",
        ]
    )
