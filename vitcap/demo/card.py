"""The model card of the demo page, and what its attention pictures are, both as Markdown.

Everything comes from the loaded pipeline: the model spec and settings stored in the checkpoint
(`vitcap.checkpoint.CheckpointMeta`), the rebuilt model, and the metrics logged when the checkpoint was saved.
"""

from __future__ import annotations

import os
from typing import Any

from vitcap.inference import CaptionPipeline, ClassifyPipeline, model_spec

__all__ = ["attention_note", "code", "escape", "model_card", "rollout_note"]

CROSS_ATTENTION = {
    "scaled_dot": "scaled dot-product",
    "additive": "additive (Bahdanau)",
    "linear": "linear (Shen et al.; the implied map softmax(q)·softmax(k)ᵀ)",
}
VOCABULARY_SHOWN = 80  # tokens listed in the card before "..."
_MARKDOWN_SPECIAL = "\\`*_{}[]<>()#+-.!|~"


def escape(text: str) -> str:
    """``text`` with Markdown's special characters escaped (file names and captions shown in Markdown)."""
    return "".join(f"\\{c}" if c in _MARKDOWN_SPECIAL else c for c in text)


def code(text: str) -> str:
    """``text`` as a Markdown code span (backticks inside it become quotes; nothing else needs escaping there)."""
    return "`" + str(text).replace("`", "'") + "`"


def _ordinal_block(index: int, depth: int) -> str:
    where = " (the last)" if index == depth - 1 else " (the first)" if index == 0 else ""
    return f"block {index + 1} of {depth}{where}"


def attention_note(pipeline: CaptionPipeline) -> str:
    """How the per-word maps are made: which decoder block, how heads are combined, what is dropped and scaled."""
    decoder, encoder = pipeline.model.decoder, pipeline.model.encoder
    depth = len(decoder.blocks)
    layer = pipeline.generation.attention_layer
    index = layer % depth
    heads = decoder.blocks[index].cross_attn.num_heads
    kind = (model_spec(pipeline.meta).to_dict().get("decoder") or {}).get("cross_attn", "scaled_dot")
    h, w = encoder.grid_size
    prefix = encoder.num_prefix_tokens
    dropped = (
        f"The encoder's {prefix} class/register token{' is' if prefix == 1 else 's are'} left out and the rest is "
        "not renormalised; the label gives the share of attention that fell on the image grid. "
        if prefix
        else ""
    )
    return (
        f"**How to read the heat map.** A word's map is the {CROSS_ATTENTION.get(kind, kind)} cross-attention of the "
        f"decoder query that predicted the word (its input is the word before), taken from decoder "
        f"{_ordinal_block(index, depth)}, `generation.attention_layer = {layer}`, and **averaged over that "
        f"block's {heads} heads**. It spans the {h}×{w} grid of image tokens. {dropped}"
        "For display the grid is upsampled bilinearly to the image and scaled to its own minimum and maximum (red "
        "high, blue low), over the centred square the model sees."
    )


def rollout_note(pipeline: ClassifyPipeline) -> str:
    """What the rollout picture shows (Abnar & Zuidema's attention rollout, as `vitcap.viz` computes it)."""
    return (
        "**How to read the heat map.** Attention rollout (Abnar & Zuidema, 2020) from the class token: each ViT "
        "block's attention is averaged over its heads, the identity added for the residual path, rows "
        "renormalised, and the matrices multiplied through all blocks. Shown upsampled bilinearly and scaled to its "
        "own minimum and maximum (red high, blue low), over the centred square the model sees."
    )


def _encoder_row(spec: dict[str, Any], encoder: Any) -> str:
    h, w = encoder.grid_size
    name = f"`{spec.get('model_name', '?')}`"
    if spec.get("kind") == "cnn":
        stage = spec.get("out_index", -1)
        upto = "all stages" if stage == -1 else f"features up to stage {stage}"
        stride = getattr(encoder, "reduction", None)
        stride = f" (stride {stride})" if stride else ""
        return (
            f"CNN {name} ({spec.get('source', 'timm')}), {upto}{stride}: {h}×{w} grid of {encoder.embed_dim}-d tokens"
        )
    vit = getattr(encoder, "model", None)
    depth = len(vit.blocks) if vit is not None and hasattr(vit, "blocks") else spec.get("depth")
    heads = vit.blocks[0].attn.num_heads if depth else spec.get("num_heads")
    patch = getattr(getattr(vit, "patch_embed", None), "patch_size", None) or spec.get("patch_size")
    patch = patch[0] if isinstance(patch, (tuple, list)) else patch
    stem = ", conv stem" if spec.get("stem") == "conv" else ""
    prefix = encoder.num_prefix_tokens
    return (
        f"ViT {name} (timm){stem}: patch {patch}, {h}×{w} grid + {prefix} prefix token{'s' * (prefix != 1)}, "
        f"width {encoder.embed_dim}, depth {depth}, {heads} heads"
    )


def _decoder_row(spec: dict[str, Any]) -> str:
    return (
        f"Transformer decoder: {spec.get('depth')} blocks, width {spec.get('embed_dim')}, {spec.get('num_heads')} "
        f"heads, MLP ×{spec.get('mlp_ratio', 4):g}, {CROSS_ATTENTION.get(spec.get('cross_attn', ''), spec.get('cross_attn'))} "
        f"cross-attention, {spec.get('pos_embed')} positions (up to {spec.get('max_len')}), "
        f"{'pre' if spec.get('norm_first', True) else 'post'}-norm"
    )


def _decoding_row(pipeline: CaptionPipeline) -> str:
    g = pipeline.generation
    if g.num_beams > 1:
        strategy = f"beam search, width {g.num_beams}, length penalty {g.length_penalty}"
    elif g.do_sample:
        strategy = f"sampling, temperature {g.temperature}, top-p {g.top_p}"
    else:
        strategy = "greedy"
    return f"{strategy}; at most {g.max_length} tokens"


def _preprocessing_row(p: dict[str, Any]) -> str:
    crop = float(p.get("crop_pct") or 1.0)
    return (
        f"{p.get('img_size')}×{p.get('img_size')} px, {p.get('in_chans', 3)} channel(s), {p.get('interpolation')} "
        f"resize, centre crop {crop:.0%}, mean {p.get('mean')}, std {p.get('std')}"
    )


def _metrics(metrics: dict[str, float]) -> str:
    if not metrics:
        return "No metrics were recorded in this checkpoint."
    rows = "\n".join(f"| {code(name)} | {value:.4g} |" for name, value in sorted(metrics.items()))
    return (
        "Logged on the validation/test split when the checkpoint was saved (caption scores ×100):\n\n"
        f"| metric | value |\n| --- | --- |\n{rows}"
    )


def _training_data(pipeline: CaptionPipeline | ClassifyPipeline) -> str:
    unrecorded = "The data set's name and size are not recorded in vitcap checkpoints."
    if isinstance(pipeline, ClassifyPipeline):
        names = ", ".join(code(name) for name in pipeline.class_names)
        return f"{unrecorded} It was trained on {len(pipeline.class_names)} classes: {names}."
    vocab = sorted(pipeline.tokenizer.get_vocab().items(), key=lambda item: item[1])
    words = [token for token, _ in vocab if not (token.startswith("[") and token.endswith("]"))]
    shown = ", ".join(code(w) for w in words[:VOCABULARY_SHOWN])
    more = f", ... ({len(words) - VOCABULARY_SHOWN} more)" if len(words) > VOCABULARY_SHOWN else ""
    return (
        f"{unrecorded} What it learned to say: its tokenizer, trained on the training captions, holds "
        f"{len(words)} tokens besides the special ones: {shown}{more}."
    )


def model_card(pipeline: CaptionPipeline | ClassifyPipeline, source: str | os.PathLike = "") -> str:
    """The model card: architecture, input, decoding, training data and recorded metrics, as Markdown."""
    meta, model = pipeline.meta, pipeline.model
    spec = model_spec(meta).to_dict()  # format-1 checkpoints store no spec; it is derived from their arguments
    params = sum(p.numel() for p in model.parameters())
    rows = [("task", meta.task)]
    if source:
        rows.append(("checkpoint", code(str(source))))
    rows.append(("encoder", _encoder_row(spec.get("encoder") or {}, model.encoder)))
    if isinstance(pipeline, CaptionPipeline):
        rows.append(("decoder", _decoder_row(spec.get("decoder") or {})))
        rows.append(("vocabulary", f"{pipeline.tokenizer.vocab_size} tokens"))
        rows.append(("default decoding", _decoding_row(pipeline)))
    else:
        rows.append(("head", f"{spec.get('pool', 'token')} pooling → {len(pipeline.class_names)} classes"))
    rows.append(("parameters", f"{params / 1e6:.2f} M"))
    rows.append(("input", _preprocessing_row(pipeline.preprocessing)))
    rows.append(("written by", f"vitcap {meta.version or '?'} (checkpoint format {meta.format})"))
    listing = "\n".join(f"- **{key}**: {value}" for key, value in rows)
    return f"{listing}\n\n**Training data.** {_training_data(pipeline)}\n\n**Metrics.** {_metrics(meta.metrics)}"
