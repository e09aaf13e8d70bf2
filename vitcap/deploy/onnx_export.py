"""ONNX export: a checkpoint as Optimum's encoder / decoder / decoder-with-past graphs, each checked and verified.

The graphs are traced by torch's own exporter (`torch.onnx.export(..., dynamo=True)`, `torch.export` underneath)
through the model's real code paths: `Captioner.encode`, and `TextDecoder.forward_step` over a `DecoderCache`
whose `KVCache`s start empty (first step) or hold the past keys/values given as inputs (later steps). The cache
appends inside the graph, so `present.*` is `past.*` one position longer. Axes are dynamic with Optimum's names
(see `vitcap.deploy.layout`); example sizes are chosen distinct from each other and from the image-token count,
so `torch.export` keeps every named axis symbolic.

Every file is checked with `onnx.checker` and run once in onnxruntime on inputs of *other* sizes than the traced
ones (a different batch, beam group and cache length), its outputs compared with PyTorch's; a mismatch is an
`ExportError`, not a broken file. `--quantize int8` adds dynamically quantised copies (onnxruntime's
`quantize_dynamic`: int8 weights of every MatMul/Gemm, activations quantised on the fly; convolutions stay float).
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import io
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.export import Dim

from vitcap.checkpoint import read_checkpoint, write_export
from vitcap.deploy.layout import (
    CLASSIFIER,
    DECODER,
    DECODER_WITH_PAST,
    ENCODER,
    ENCODER_HIDDEN_STATES,
    INPUT_IDS,
    LAST_HIDDEN_STATE,
    LAYOUT,
    LOGITS,
    MODEL_CARD,
    PIXEL_VALUES,
    OnnxConfig,
    hub_config,
    hub_files,
    past_names,
    present_names,
    quantized_name,
)
from vitcap.deploy.model_card import model_card
from vitcap.errors import ConfigError, ExportError, one_line
from vitcap.generate.config import GenerationConfig
from vitcap.inference import build_model, current_meta
from vitcap.layers.kv_cache import CrossKV, KVCache
from vitcap.layers.pos_embed import LearnedPositionEmbedding
from vitcap.models import Captioner, Classifier, TextDecoder
from vitcap.models.decoder import DecoderCache

__all__ = ["QUANTIZE", "export_onnx"]

QUANTIZE = ("int8",)
OPSET = 18  # the exporter's oldest; onnxruntime >= 1.14 runs it
TOLERANCE = 1e-3  # onnxruntime vs PyTorch, relative to the output's scale (float32 round-off is ~1e-6)


class EncoderGraph(nn.Module):
    """`pixel_values` -> `last_hidden_state`: the image tokens in the decoder's width."""

    def __init__(self, model: Captioner) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: Tensor) -> Tensor:
        return self.model.encode(pixel_values)


class DecoderGraph(nn.Module):
    """The first step: every layer's cross-attention keys/values projected from the image tokens, and the
    self-attention keys/values of `input_ids`, returned for the steps that follow."""

    def __init__(self, decoder: TextDecoder) -> None:
        super().__init__()
        self.decoder = decoder

    def forward(self, input_ids: Tensor, encoder_hidden_states: Tensor) -> tuple[Tensor, ...]:
        cross_kv = self.decoder.project_memory(encoder_hidden_states)
        cache = self.decoder.init_cache(input_ids.shape[0])
        logits, _ = self.decoder.forward_step(input_ids, cross_kv, cache)
        out = [logits]
        for layer, kv in zip(cache.layers, cross_kv, strict=True):
            out += [layer.k, layer.v, kv.k, kv.v]
        return tuple(out)


class DecoderWithPastGraph(nn.Module):
    """A later step: one token per row against the past self-attention keys/values and the images' cross-attention
    keys/values (`past_key_values`, per layer: decoder key, value, encoder key, value), which pass through unused
    for anything but attention: nothing projects the image tokens again."""

    def __init__(self, decoder: TextDecoder) -> None:
        super().__init__()
        self.decoder = decoder

    def forward(self, input_ids: Tensor, past_key_values: list[Tensor]) -> tuple[Tensor, ...]:
        layers, cross_kv = [], []
        for i in range(len(self.decoder.blocks)):
            k, v, cross_k, cross_v = past_key_values[4 * i : 4 * i + 4]
            cache = KVCache()
            cache.k, cache.v = k, v  # (R, H, L, Dh)
            layers.append(cache)
            cross_kv.append(CrossKV(cross_k, cross_v))  # (B, H, N, Dh)
        cache = DecoderCache(layers, input_ids.shape[0])
        logits, _ = self.decoder.forward_step(input_ids, cross_kv, cache)
        return (logits, *[x for layer in cache.layers for x in (layer.k, layer.v)])


class ClassifierGraph(nn.Module):
    """`pixel_values` -> `logits`."""

    def __init__(self, model: Classifier) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: Tensor) -> Tensor:
        return self.model(pixel_values)


@dataclass
class Graph:
    """One ONNX file: the module to trace, example and verification inputs, names and dynamic axes."""

    role: str
    file: str
    module: nn.Module
    args: tuple[Any, ...]
    verify_args: tuple[Any, ...]
    input_names: list[str]
    output_names: list[str]
    dynamic_shapes: dict[str, Any]


def _distinct(avoid: set[int], *candidates: int) -> int:
    """The first candidate not in `avoid` (then added to it): equal example sizes would be unified by torch.export."""
    value = next(c for c in candidates if c not in avoid)
    avoid.add(value)
    return value


def _past(decoder: TextDecoder, rows: int, images: int, length: int, n_tokens: int) -> list[Tensor]:
    blk = decoder.blocks[0].attn
    H, Dh = blk.num_heads, blk.head_dim
    past = []
    for _ in decoder.blocks:
        past += [torch.randn(rows, H, length, Dh), torch.randn(rows, H, length, Dh)]
        past += [torch.randn(images, H, n_tokens, Dh), torch.randn(images, H, n_tokens, Dh)]
    return past


def captioner_graphs(model: Captioner, img_size: int, in_chans: int) -> list[Graph]:
    """The three graphs of a captioner, with example inputs whose sizes keep every named axis dynamic."""
    decoder = model.decoder
    depth, V = len(decoder.blocks), decoder.vocab_size
    gen = torch.Generator().manual_seed(0)
    pixels = torch.randn(2, in_chans, img_size, img_size, generator=gen)
    with torch.inference_mode():
        memory = model.encode(torch.cat([pixels, pixels[:1]]))  # 3 images: 2 to trace, 3 to verify
    N = memory.shape[1]
    learned = isinstance(decoder.pos_embed, LearnedPositionEmbedding)
    used = {N, 1}
    images = _distinct(used, 2, 3, 4)
    rows = _distinct(used, *(images * g for g in (3, 5, 7)))
    seq = _distinct(used, 3, 4, 5, 7)
    past_len = _distinct(used, 5, 7, 9, 11)
    max_seq = decoder.max_len if learned else None
    enc_len = Dim("encoder_sequence_length") if N > 1 else None
    rows_dim = Dim("batch_size")
    images_dim = Dim("encoder_batch_size")
    seq_dim = Dim("decoder_sequence_length", max=max_seq) if max_seq else Dim("decoder_sequence_length")
    past_dim = Dim("past_decoder_sequence_length", max=max_seq - 1) if max_seq else Dim("past_decoder_sequence_length")

    def ids(r: int, t: int) -> Tensor:
        return torch.randint(4, V, (r, t), generator=gen) if V > 4 else torch.zeros(r, t, dtype=torch.long)

    cross = {0: images_dim, 1: enc_len}
    past_spec = []
    for _ in range(depth):
        past_spec += [{0: rows_dim, 2: past_dim}] * 2 + [{0: images_dim, 2: enc_len}] * 2
    return [
        Graph(
            "encoder",
            ENCODER,
            EncoderGraph(model),
            (pixels,),
            (torch.cat([pixels, pixels[:1]]),),
            [PIXEL_VALUES],
            [LAST_HIDDEN_STATE],
            {"pixel_values": {0: Dim("batch_size")}},
        ),
        Graph(
            "decoder",
            DECODER,
            DecoderGraph(decoder),
            (ids(rows, seq), memory[:images]),
            (ids(3, 2), memory[:3]),  # one row per image (greedy), a shorter prefix
            [INPUT_IDS, ENCODER_HIDDEN_STATES],
            [LOGITS, *present_names(depth, encoder=True)],
            {"input_ids": {0: rows_dim, 1: seq_dim}, "encoder_hidden_states": cross},
        ),
        Graph(
            "decoder_with_past",
            DECODER_WITH_PAST,
            DecoderWithPastGraph(decoder),
            (ids(rows, 1), _past(decoder, rows, images, past_len, N)),
            (ids(4, 1), _past(decoder, 4, 1, 2, N)),  # 4 beams of one image, a cache of 2 positions
            [INPUT_IDS, *past_names(depth)],
            [LOGITS, *present_names(depth, encoder=False)],
            {"input_ids": {0: rows_dim}, "past_key_values": past_spec},
        ),
    ]


def classifier_graphs(model: Classifier, img_size: int, in_chans: int) -> list[Graph]:
    pixels = torch.randn(2, in_chans, img_size, img_size, generator=torch.Generator().manual_seed(0))
    return [
        Graph(
            "model",
            CLASSIFIER,
            ClassifierGraph(model),
            (pixels,),
            (torch.cat([pixels, pixels[:1]]),),
            [PIXEL_VALUES],
            [LOGITS],
            {"pixel_values": {0: Dim("batch_size")}},
        )
    ]


def _flat(args: tuple[Any, ...]) -> list[np.ndarray]:
    out = []
    for a in args:
        out += [x.numpy() for x in a] if isinstance(a, list) else [a.numpy()]
    return out


def export_graph(graph: Graph, path: Path, what: str) -> None:
    """Trace `graph` to `path`, check it with `onnx.checker`, verify it in onnxruntime."""

    module = graph.module.eval()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                module,
                graph.args,
                dynamo=True,
                input_names=graph.input_names,
                output_names=graph.output_names,
                dynamic_shapes=graph.dynamic_shapes,
                opset_version=OPSET,
                verbose=False,
            )
            program.save(str(path), external_data=False)
    except Exception as e:  # noqa: BLE001 - torch.export raises many types for code it cannot trace
        raise ExportError(
            f"{path.name}: the {what} cannot be exported to ONNX ({type(e).__name__}: {_first(e)})"
        ) from None
    check(path, what)
    verify(graph, path, what)


def check(path: Path, what: str) -> None:
    """`onnx.checker` (with shape inference) on `path`, as an `ExportError` naming the file."""
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as e:  # noqa: BLE001 - onnx.checker raises ValidationError and others
        raise ExportError(f"{path.name}: the exported {what} fails onnx.checker ({_first(e)})") from None


def verify(graph: Graph, path: Path, what: str, tolerance: float | None = TOLERANCE) -> None:
    """Run `path` in onnxruntime on `graph.verify_args` and compare with PyTorch (`tolerance` None: only run it)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = dict(zip(graph.input_names, _flat(graph.verify_args)))
    got = session.run(graph.output_names, feeds)
    with torch.inference_mode():
        expected = graph.module(*graph.verify_args)
    expected = [expected] if isinstance(expected, Tensor) else list(expected)
    for name, a, b in zip(graph.output_names, got, expected, strict=True):
        b = b.numpy()
        if a.shape != b.shape:
            raise ExportError(f"{path.name}: output {name} has shape {a.shape}, PyTorch's {b.shape} ({what})")
        if tolerance is not None:
            error = float(np.abs(a - b).max()) / max(1.0, float(np.abs(b).max()))
            if not error <= tolerance:
                raise ExportError(
                    f"{path.name}: output {name} differs from PyTorch by {error:.2g} (relative; tolerance {tolerance:g})"
                )


def quantize_int8(src: Path, dst: Path) -> None:
    """Dynamic int8 quantisation of every MatMul/Gemm weight of `src` into `dst`."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # quantize_dynamic logs advice on the root logger
    try:
        quantize_dynamic(
            src, dst, op_types_to_quantize=["MatMul", "Gemm"], per_channel=True, weight_type=QuantType.QInt8
        )
    finally:
        root.setLevel(level)


def _first(e: BaseException) -> str:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return (lines[0] if lines else type(e).__name__)[:300]


def _describe(model: nn.Module) -> str:
    if isinstance(model, Captioner):
        kind = type(model.decoder.blocks[0].cross_attn).__name__
        return f"{type(model.encoder).__name__} + TextDecoder ({kind})"
    return f"{type(model.encoder).__name__} classifier"


def export_onnx(checkpoint: str | os.PathLike, out_dir: str | os.PathLike, quantize: str | None = None) -> Path:
    """Write a checkpoint as an ONNX export folder (see `vitcap.deploy.layout`), all or nothing.

    The folder also holds `model.safetensors` + `config.json`, so `vitcap.load(out_dir)` loads it in PyTorch and
    `vitcap.deploy.load_onnx(out_dir)` in onnxruntime.

    Args:
        checkpoint: A `.ckpt` from training or an export folder.
        out_dir: The folder to write (replaced only once the new one is complete).
        quantize: None, or "int8" to add dynamically quantised copies of the models.

    Raises:
        ExportError: A model part that cannot be expressed in ONNX, or a file that fails the checks.
        CheckpointError: `checkpoint` is not a usable vitcap checkpoint.
    """
    if quantize is not None and quantize not in QUANTIZE:
        raise ConfigError(f"quantize: expected one of {list(QUANTIZE)} or None, got {quantize!r}", key="quantize")
    for package in ("onnx", "onnxruntime", "onnxscript"):
        if importlib.util.find_spec(package) is None:
            raise ExportError(f"ONNX export needs {package}: pip install 'vitcap[onnx]'")
    meta, state = read_checkpoint(checkpoint)
    if meta.task not in ("captioning", "classification"):
        raise ExportError(
            f"{checkpoint}: a {meta.task} checkpoint; ONNX export takes captioners and classifiers (export a joint "
            "model as safetensors: vitcap export, without --format onnx)"
        )
    model = build_model(meta, state, checkpoint)
    meta = current_meta(meta)
    pre = meta.preprocessing
    if not pre:
        raise ExportError(f"{checkpoint}: the checkpoint has no preprocessing settings (image size), needed to export")
    img_size, in_chans = int(pre["img_size"]), int(pre.get("in_chans", 3))
    if isinstance(model, Captioner):
        graphs = captioner_graphs(model, img_size, in_chans)
        dec = model.decoder
        attn = dec.blocks[0].attn
        learned = isinstance(dec.pos_embed, LearnedPositionEmbedding)
        sizes = dict(
            num_layers=len(dec.blocks),
            num_heads=attn.num_heads,
            head_dim=attn.head_dim,
            hidden_size=dec.embed_dim,
            vocab_size=dec.vocab_size,
            encoder_sequence_length=int(graphs[1].args[1].shape[1]),
            max_positions=dec.max_len if learned else 0,
        )
        known = {f.name for f in dataclasses.fields(GenerationConfig)}
        generation = dataclasses.asdict(GenerationConfig(**{k: v for k, v in meta.generation.items() if k in known}))
    else:
        graphs, sizes, generation = classifier_graphs(model, img_size, in_chans), {}, {}
    onnx_config = OnnxConfig(
        layout=LAYOUT,
        task=meta.task,
        files={g.role: g.file for g in graphs},
        quantized={g.role: quantized_name(g.file) for g in graphs} if quantize else {},
        opset=OPSET,
        exporter=f"torch.onnx.export(dynamo=True), torch {torch.__version__}",
        **sizes,
    )
    what = _describe(model)

    def add_files(folder: Path) -> None:
        for g in graphs:
            export_graph(g, folder / g.file, what)
        for g in graphs if quantize else []:
            quantize_int8(folder / g.file, folder / quantized_name(g.file))
            check(folder / quantized_name(g.file), what)
            verify(g, folder / quantized_name(g.file), what, tolerance=None)
        for name, text in hub_files(meta, generation).items():
            (folder / name).write_text(text, encoding="utf-8")
        params = sum(p.numel() for p in model.parameters())
        files = sorted({p.name for p in folder.iterdir()} | {MODEL_CARD})
        (folder / MODEL_CARD).write_text(model_card(meta, onnx_config, what, params, files), encoding="utf-8")

    try:
        return write_export(meta, state, out_dir, config_extra=hub_config(meta, onnx_config), add_files=add_files)
    except ExportError as e:
        raise ExportError(f"{out_dir}: nothing written: {one_line(e)}") from None
