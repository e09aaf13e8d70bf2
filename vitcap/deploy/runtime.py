"""Captioning without PyTorch: onnxruntime sessions over an ONNX export folder, the search in numpy.

`load_onnx(folder)` returns an `OnnxCaptionPipeline` (`.caption(images, **decoding)`, the same `CaptionResult`s
as `vitcap.load(folder).caption`, token for token) or an `OnnxClassifyPipeline` (`.classify(images, top_k)`).
The image tokens are computed once per image (`encoder_model.onnx`), the cross-attention keys/values once per
image in the first decoder step (`decoder_model.onnx`), and every later step (`decoder_with_past_model.onnx`)
feeds the self-attention cache back in as numpy arrays; beam search reorders those rows, never the image's
keys/values, which all of an image's beams share.

Needs onnxruntime, numpy, Pillow and tokenizers; nothing here imports torch (a test runs it with torch blocked).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from vitcap.checkpoint import CheckpointMeta
from vitcap.data.images import load_image
from vitcap.deploy.layout import (
    ENCODER_HIDDEN_STATES,
    INPUT_IDS,
    LAST_HIDDEN_STATE,
    LOGITS,
    PIXEL_VALUES,
    OnnxConfig,
    past_names,
    present_names,
    read_onnx_folder,
)
from vitcap.deploy.preprocess import Preprocessor
from vitcap.deploy.search import Hypothesis, beam_search, greedy
from vitcap.errors import CheckpointError, ConfigError, ExportError
from vitcap.generate.config import GenerationConfig
from vitcap.results import CaptionResult
from vitcap.tokenizer import CaptionTokenizer

__all__ = ["OnnxCaptionPipeline", "OnnxClassifyPipeline", "load_onnx"]

ImageInput = str | os.PathLike | Image.Image | np.ndarray


def load_onnx(
    folder: str | os.PathLike, quantized: bool | None = None, threads: int | None = None
) -> OnnxCaptionPipeline | OnnxClassifyPipeline:
    """Load an ONNX export folder (`vitcap export --format onnx`) for onnxruntime.

    Args:
        folder: The export folder.
        quantized: Run the int8 files (True), the float32 ones (False), or int8 when the folder has them (None).
        threads: onnxruntime's intra-op threads (None: onnxruntime's default, one per physical core).

    Raises:
        ExportError: naming the file: not an ONNX export, a missing or corrupt `.onnx`, a newer layout.
        CheckpointError: naming the file: `config.json` missing, unreadable or of a newer format.
    """
    meta, onnx_config, paths = read_onnx_folder(folder, quantized)
    if not meta.preprocessing:
        raise CheckpointError(f"{folder}: the export has no preprocessing settings")
    pipeline = OnnxCaptionPipeline if meta.task == "captioning" else OnnxClassifyPipeline
    return pipeline(meta, onnx_config, paths, threads)


def _session(path: Path, threads: int | None, expect_inputs: list[str], expect_outputs: list[str]) -> Any:
    try:
        import onnxruntime as ort
    except ImportError:
        raise ExportError("onnxruntime is not installed: pip install 'vitcap[onnx]'") from None
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3  # errors only
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - onnxruntime raises its own exception types for unreadable models
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        raise ExportError(f"{path}: not a readable ONNX model ({reason}); export it again") from None
    inputs = [i.name for i in session.get_inputs()]
    outputs = [o.name for o in session.get_outputs()]
    if inputs != expect_inputs or not set(expect_outputs) <= set(outputs):
        raise ExportError(
            f"{path}: not the model this export's config.json describes (inputs {inputs[:4]}..., "
            f"expected {expect_inputs[:4]}...); export it again"
        )
    return session


class _Pipeline:
    def __init__(self, meta: CheckpointMeta, onnx_config: OnnxConfig) -> None:
        self.meta = meta
        self.onnx_config = onnx_config
        self.preprocessing = meta.preprocessing
        self.transform = Preprocessor(meta.preprocessing)

    @property
    def task(self) -> str:
        return self.meta.task

    def load_images(self, images: ImageInput | Sequence[ImageInput]) -> np.ndarray:
        """Paths / PIL images / preprocessed `(C, H, W)` arrays (or a `(B, C, H, W)` batch) -> float32 batch."""
        if isinstance(images, np.ndarray) and images.ndim == 4:
            return images.astype(np.float32, copy=False)
        if isinstance(images, (str, os.PathLike, Image.Image, np.ndarray)):
            images = [images]
        batch = []
        for item in images:
            if isinstance(item, np.ndarray):
                batch.append(item.astype(np.float32, copy=False))
            else:
                image = item if isinstance(item, Image.Image) else load_image(item)
                batch.append(self.transform.one(image))
        return np.stack(batch)


class _OnnxDecoder:
    """The `StepDecoder` of `vitcap.deploy.search` over the two decoder sessions, with the cache in numpy."""

    def __init__(self, first: Any, with_past: Any, memory: np.ndarray, depth: int) -> None:
        self.first, self.with_past, self.memory, self.depth = first, with_past, memory, depth
        self.past_names = past_names(depth)
        self.first_outputs = [LOGITS, *present_names(depth, encoder=True)]
        self.past_outputs = [LOGITS, *present_names(depth, encoder=False)]
        self.self_kv: list[np.ndarray] | None = None  # per layer key, value: (R, H, L, Dh)
        self.cross_kv: list[np.ndarray] = []  # per layer key, value: (B, H, N, Dh), fixed after the first step

    def __call__(self, tokens: np.ndarray) -> np.ndarray:
        if self.self_kv is None:
            out = self.first.run(self.first_outputs, {INPUT_IDS: tokens, ENCODER_HIDDEN_STATES: self.memory})
            self.self_kv = [x for i in range(self.depth) for x in out[1 + 4 * i : 3 + 4 * i]]
            self.cross_kv = [x for i in range(self.depth) for x in out[3 + 4 * i : 5 + 4 * i]]
        else:
            past = []
            for i in range(self.depth):
                past += self.self_kv[2 * i : 2 * i + 2] + self.cross_kv[2 * i : 2 * i + 2]
            out = self.with_past.run(self.past_outputs, {INPUT_IDS: tokens, **dict(zip(self.past_names, past))})
            self.self_kv = out[1:]
        return out[0][:, -1]  # (R, V)

    def reorder(self, index: np.ndarray) -> None:
        assert self.self_kv is not None
        self.self_kv = [kv[index] for kv in self.self_kv]


class OnnxCaptionPipeline(_Pipeline):
    """Caption images with onnxruntime (see `load_onnx`); `caption` mirrors `vitcap.inference.CaptionPipeline`'s."""

    def __init__(
        self, meta: CheckpointMeta, onnx_config: OnnxConfig, paths: dict[str, Path], threads: int | None = None
    ) -> None:
        super().__init__(meta, onnx_config)
        if not meta.tokenizer:
            raise CheckpointError(f"{paths['encoder'].parent}: a captioning export without a tokenizer")
        self.tokenizer = CaptionTokenizer.from_json(meta.tokenizer)
        known = {f.name for f in dataclasses.fields(GenerationConfig)}
        self.generation = GenerationConfig(**{k: v for k, v in meta.generation.items() if k in known})
        depth = onnx_config.num_layers
        self.encoder = _session(paths["encoder"], threads, [PIXEL_VALUES], [LAST_HIDDEN_STATE])
        self.decoder = _session(
            paths["decoder"], threads, [INPUT_IDS, ENCODER_HIDDEN_STATES], [LOGITS, *present_names(depth, True)]
        )
        self.decoder_with_past = _session(
            paths["decoder_with_past"], threads, [INPUT_IDS, *past_names(depth)], [LOGITS, *present_names(depth, False)]
        )

    def encode(self, pixel_values: np.ndarray) -> np.ndarray:
        """Image tokens `(B, N, D)` of a preprocessed batch `(B, C, H, W)`."""
        return self.encoder.run([LAST_HIDDEN_STATE], {PIXEL_VALUES: pixel_values})[0]

    def generate(self, memory: np.ndarray, config: GenerationConfig | None = None) -> list[list[Hypothesis]]:
        """Each image's n-best list for image tokens `memory (B, N, D)`, best first (greedy or beam search)."""
        config = config or self.generation
        self._check(config)
        tok = self.tokenizer
        decoder = _OnnxDecoder(self.decoder, self.decoder_with_past, memory, self.onnx_config.num_layers)
        search = beam_search if config.num_beams > 1 else greedy
        V = self.onnx_config.vocab_size
        return search(decoder, memory.shape[0], V, config, bos_id=tok.bos_id, eos_id=tok.eos_id, pad_id=tok.pad_id)

    def _check(self, config: GenerationConfig) -> None:
        if config.do_sample:
            raise ConfigError(
                "generation.do_sample: sampling is not available with the ONNX runtime (greedy and beam search "
                "are); use the PyTorch runtime",
                key="generation.do_sample",
            )
        if config.output_attentions:
            raise ConfigError(
                "generation.output_attentions: attention maps need the PyTorch runtime",
                key="generation.output_attentions",
            )
        limit = self.onnx_config.max_positions
        if limit and config.max_length > limit:
            raise ConfigError(
                f"generation.max_length: expected <= {limit}, the size of the decoder's learned position table "
                f"(max_len), got {config.max_length}",
                key="generation.max_length",
            )

    def caption(
        self, images: ImageInput | Sequence[ImageInput], return_attention: bool = False, **decoding: Any
    ) -> list[CaptionResult]:
        """Caption a batch of images (as `vitcap.inference.CaptionPipeline.caption`, without attention maps).

        Args:
            images: Paths, PIL images or preprocessed `(C, H, W)` float32 arrays (or one, or a `(B, C, H, W)` batch).
            return_attention: Must be False: attention maps need the PyTorch runtime.
            **decoding: `GenerationConfig` fields replacing the export's default decoding.
        """
        config = dataclasses.replace(self.generation, **decoding, output_attentions=return_attention)
        self._check(config)
        hyps = self.generate(self.encode(self.load_images(images)), config)
        tok = self.tokenizer
        results = []
        for nbest in hyps:
            best = nbest[0]
            results.append(
                CaptionResult(
                    caption=tok.decode(best.tokens),
                    score=_mean(best.token_logprobs),
                    tokens=list(best.tokens),
                    token_logprobs=[float(x) for x in best.token_logprobs],
                    alternatives=[
                        {"caption": tok.decode(h.tokens), "score": _mean(h.token_logprobs)} for h in nbest[1:]
                    ],
                    words=[tok.decode([t]) for t in best.tokens],
                )
            )
        return results


class OnnxClassifyPipeline(_Pipeline):
    """Classify images with onnxruntime (`model.onnx`); `classify` mirrors `vitcap.inference.ClassifyPipeline`'s."""

    def __init__(
        self, meta: CheckpointMeta, onnx_config: OnnxConfig, paths: dict[str, Path], threads: int | None = None
    ) -> None:
        super().__init__(meta, onnx_config)
        self.model = _session(paths["model"], threads, [PIXEL_VALUES], [LOGITS])

    @property
    def class_names(self) -> list[str]:
        return list(self.meta.class_names) or [str(i) for i in range(self.model.get_outputs()[0].shape[-1])]

    def classify(self, images: ImageInput | Sequence[ImageInput], top_k: int = 5) -> list[list[tuple[str, float]]]:
        """Top-k (class name, probability) pairs per image, most likely first."""
        logits = self.model.run([LOGITS], {PIXEL_VALUES: self.load_images(images)})[0].astype(np.float32)
        probs = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        names = self.class_names
        order = np.argsort(-probs, axis=1, kind="stable")[:, : min(top_k, probs.shape[1])]
        return [[(names[i], float(p[i])) for i in row] for p, row in zip(probs, order)]


def _mean(values: np.ndarray) -> float:
    values = np.asarray(values, dtype=np.float32)
    return float(values.mean()) if values.size else 0.0
