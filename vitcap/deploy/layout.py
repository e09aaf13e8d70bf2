"""The ONNX export folder: Hugging Face Optimum's file and tensor names, the JSON files beside them, and reading one.

An ONNX export folder is a safetensors export folder (`model.safetensors` + `config.json`, what `vitcap.load` reads)
with more files in it, so every export layout loads the same way in PyTorch:

- `encoder_model.onnx`: `pixel_values (batch_size, C, H, W)` -> `last_hidden_state (batch_size, N, D)`, the image
  tokens after the projection into the decoder's width (`Captioner.encode`).
- `decoder_model.onnx`, the first step: `input_ids (batch_size, decoder_sequence_length)` and
  `encoder_hidden_states (encoder_batch_size, N, D)` -> `logits (batch_size, decoder_sequence_length, V)`, every
  layer's self-attention keys/values `present.{i}.decoder.key|value (batch_size, H, decoder_sequence_length, Dh)`
  and cross-attention keys/values `present.{i}.encoder.key|value (encoder_batch_size, H, N, Dh)`.
- `decoder_with_past_model.onnx`, every later step: `input_ids (batch_size, 1)`,
  `past_key_values.{i}.decoder.key|value (batch_size, H, past_decoder_sequence_length, Dh)` and
  `past_key_values.{i}.encoder.key|value (encoder_batch_size, H, N, Dh)` -> `logits (batch_size, 1, V)` and
  `present.{i}.decoder.key|value` one position longer. The cross-attention keys/values go in unchanged at every
  step and do not come out again (Optimum's convention): they are projected once per image, in the first step.
- `model.onnx` (classifiers): `pixel_values` -> `logits (batch_size, classes)`.
- With `--quantize int8`, the same files with Optimum's `_quantized` suffix, beside the float ones.

One extension of Optimum's contract: the `batch_size` rows of `input_ids` may be `g` rows per image
(`batch_size = encoder_batch_size * g`, the `g` rows of image `b` contiguous), so the beams of an image share one
copy of its cross-attention keys/values (vitcap's grouped cross-attention). With `g = 1` it is Optimum's contract.

Beside them: `generation_config.json` (decoding defaults), `preprocessor_config.json` (size, mean, std,
interpolation), `tokenizer.json` (the Hugging Face tokenizer) and a `README.md` model card, written for other
tools; vitcap itself reads `config.json`, whose `onnx` entry (`OnnxConfig`) names the files.

This module imports no torch: the ONNX runtime reads folders with it.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vitcap.checkpoint import EXPORT_CONFIG, CheckpointMeta, read_export_meta
from vitcap.errors import ExportError
from vitcap.tokenizer import BOS_ID, EOS_ID, PAD_ID

__all__ = [
    "CLASSIFIER",
    "DECODER",
    "DECODER_WITH_PAST",
    "ENCODER",
    "LAYOUT",
    "OnnxConfig",
    "decoder_past_names",
    "hub_files",
    "past_names",
    "present_names",
    "quantized_name",
    "read_onnx_folder",
]

LAYOUT = 1  # version of the ONNX folder layout; a reader refuses a newer one
ENCODER = "encoder_model.onnx"
DECODER = "decoder_model.onnx"
DECODER_WITH_PAST = "decoder_with_past_model.onnx"
CLASSIFIER = "model.onnx"
GENERATION_CONFIG = "generation_config.json"
PREPROCESSOR_CONFIG = "preprocessor_config.json"
TOKENIZER = "tokenizer.json"
MODEL_CARD = "README.md"
ROLES = {"captioning": {"encoder", "decoder", "decoder_with_past"}, "classification": {"model"}}  # files per task

# Optimum's tensor names
PIXEL_VALUES = "pixel_values"
LAST_HIDDEN_STATE = "last_hidden_state"
INPUT_IDS = "input_ids"
ENCODER_HIDDEN_STATES = "encoder_hidden_states"
LOGITS = "logits"

# PIL's resampling filter numbers, as Hugging Face image processors store them
_RESAMPLE = {"nearest": 0, "bilinear": 2, "bicubic": 3}


def quantized_name(name: str) -> str:
    """Optimum's name of the quantized copy of a model file: `decoder_model.onnx` -> `decoder_model_quantized.onnx`."""
    stem, dot, ext = name.rpartition(".")
    return f"{stem}_quantized{dot}{ext}"


def _kv(prefix: str, layer: int, kind: str) -> list[str]:
    return [f"{prefix}.{layer}.{kind}.key", f"{prefix}.{layer}.{kind}.value"]


def decoder_past_names(depth: int, prefix: str = "past_key_values") -> list[str]:
    """Self-attention key/value names of every layer: `{prefix}.{i}.decoder.key`, `{prefix}.{i}.decoder.value`."""
    return [name for i in range(depth) for name in _kv(prefix, i, "decoder")]


def past_names(depth: int) -> list[str]:
    """Inputs of `decoder_with_past_model.onnx` after `input_ids`, per layer: decoder key, value, encoder key, value."""
    return [
        name
        for i in range(depth)
        for name in _kv("past_key_values", i, "decoder") + _kv("past_key_values", i, "encoder")
    ]


def present_names(depth: int, encoder: bool) -> list[str]:
    """Outputs after `logits`, per layer: decoder key, value (and encoder key, value when `encoder`)."""
    names = []
    for i in range(depth):
        names += _kv("present", i, "decoder") + (_kv("present", i, "encoder") if encoder else [])
    return names


@dataclass
class OnnxConfig:
    """The `onnx` entry of an ONNX export folder's `config.json`: which files hold which model, and their shapes.

    Attributes:
        layout: `LAYOUT` of the writer.
        task: "captioning" or "classification".
        files: Role ("encoder", "decoder", "decoder_with_past" or "model") -> float32 file name.
        quantized: Role -> int8 file name (empty without `--quantize int8`).
        opset: ONNX opset of the graphs.
        exporter: Which exporter wrote them (torch version included).
        num_layers: Decoder blocks (captioners).
        num_heads: Attention heads H of the decoder.
        head_dim: Width Dh of one head.
        hidden_size: Decoder width D.
        vocab_size: Vocabulary size V.
        encoder_sequence_length: Image tokens N per image.
        max_positions: Size of a learned position table (the longest decoding); 0 for sinusoidal positions.
    """

    layout: int
    task: str
    files: dict[str, str]
    quantized: dict[str, str] = field(default_factory=dict)
    opset: int = 0
    exporter: str = ""
    num_layers: int = 0
    num_heads: int = 0
    head_dim: int = 0
    hidden_size: int = 0
    vocab_size: int = 0
    encoder_sequence_length: int = 0
    max_positions: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any, source: str | os.PathLike) -> OnnxConfig:
        if not isinstance(data, dict):
            raise ExportError(f"{source}: the 'onnx' entry must be an object, got {type(data).__name__}")
        layout = data.get("layout")
        if not isinstance(layout, int) or isinstance(layout, bool):
            raise ExportError(f"{source}: 'onnx.layout' must be an integer, got {layout!r}")
        if layout > LAYOUT:
            raise ExportError(
                f"{source}: ONNX layout {layout} is newer than this vitcap reads (layout {LAYOUT}): upgrade vitcap"
            )
        known = {f.name for f in dataclasses.fields(cls)}
        try:
            return cls(**{k: v for k, v in data.items() if k in known})
        except TypeError as e:
            raise ExportError(f"{source}: the 'onnx' entry is incomplete ({e})") from None


def read_onnx_folder(
    folder: str | os.PathLike, quantized: bool | None = None
) -> tuple[CheckpointMeta, OnnxConfig, dict[str, Path]]:
    """Read an ONNX export folder's metadata and find its model files, without torch.

    Args:
        folder: The export folder.
        quantized: Use the int8 files (True), the float32 ones (False), or int8 when the folder has them (None).

    Returns:
        The checkpoint metadata, the `onnx` entry, and role -> path of the files to run.

    Raises:
        ExportError: naming the file: not an ONNX export, a newer layout, a missing model file.
        CheckpointError: naming the file: `config.json` missing, unreadable, or of a newer format.
    """
    folder = Path(folder)
    if folder.is_file():
        raise ExportError(
            f"{folder}: a file; the ONNX runtime takes an export folder (`vitcap export --checkpoint {folder} "
            "--out DIR --format onnx`)"
        )
    meta = read_export_meta(folder)
    config_path = folder / EXPORT_CONFIG
    config = json.loads(config_path.read_text(encoding="utf-8"))  # read_export_meta checked it is JSON
    if "onnx" not in config:
        raise ExportError(
            f"{config_path}: a safetensors export without ONNX files; write one with "
            f"`vitcap export --checkpoint {folder} --out DIR --format onnx`"
        )
    onnx_config = OnnxConfig.from_dict(config["onnx"], config_path)
    if quantized and not onnx_config.quantized:
        raise ExportError(f"{config_path}: this export has no int8 files; export with `--quantize int8`")
    use_int8 = bool(onnx_config.quantized) if quantized is None else quantized
    names = onnx_config.quantized if use_int8 else onnx_config.files
    roles = ROLES.get(meta.task, set())
    if set(names) != roles or onnx_config.task != meta.task:
        raise ExportError(
            f"{config_path}: the 'onnx' entry lists {sorted(names)} for a {onnx_config.task} model; a {meta.task} "
            f"export needs {sorted(roles)} (export it again)"
        )
    paths = {role: folder / name for role, name in names.items()}
    for path in paths.values():
        if not path.is_file():
            raise ExportError(f"{path}: missing; the ONNX export is incomplete (export it again)")
    return meta, onnx_config, paths


# ------------------------------------------------------------------------------------------------ the hub files
def generation_config(meta: CheckpointMeta, defaults: dict[str, Any]) -> dict[str, Any]:
    """`generation_config.json` in Hugging Face's words (`max_new_tokens` counts eos, as vitcap's `max_length`)."""
    g = {**defaults, **meta.generation}
    return {
        "decoder_start_token_id": BOS_ID,
        "bos_token_id": BOS_ID,
        "eos_token_id": EOS_ID,
        "pad_token_id": PAD_ID,
        "max_new_tokens": g["max_length"],
        "min_new_tokens": g["min_length"],
        "num_beams": g["num_beams"],
        "length_penalty": g["length_penalty"],
        "num_return_sequences": g["num_return_sequences"],
        "early_stopping": False,
        "do_sample": g["do_sample"],
        "temperature": g["temperature"],
        "top_k": g["top_k"],
        "top_p": g["top_p"],
        "repetition_penalty": g["repetition_penalty"],
        "no_repeat_ngram_size": g["no_repeat_ngram_size"],
        "bad_words_ids": [[PAD_ID], [BOS_ID]],  # never generated
        "use_cache": True,
    }


def preprocessor_config(meta: CheckpointMeta) -> dict[str, Any]:
    """`preprocessor_config.json` in Hugging Face's image-processor words, plus vitcap's own `preprocessing`."""
    p = meta.preprocessing
    size, crop_pct = int(p["img_size"]), float(p.get("crop_pct", 1.0))
    return {
        "image_processor_type": "ViTImageProcessor" if crop_pct == 1.0 else "ConvNextImageProcessor",
        "do_resize": True,
        "size": {"shortest_edge": int(size / crop_pct)},
        "do_center_crop": True,
        "crop_size": {"height": size, "width": size},
        "crop_pct": crop_pct,
        "resample": _RESAMPLE.get(p.get("interpolation", "bicubic"), 3),
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": list(p["mean"]),
        "image_std": list(p["std"]),
        "do_convert_rgb": True,
        "vitcap_preprocessing": dict(p),
    }


def hub_config(meta: CheckpointMeta, onnx_config: OnnxConfig) -> dict[str, Any]:
    """Top-level `config.json` entries other tools look for (model type, special ids, sizes) and the `onnx` entry."""
    extra: dict[str, Any] = {"model_type": "vitcap", "onnx": onnx_config.to_dict()}
    if meta.task == "captioning":
        extra.update(
            is_encoder_decoder=True,
            decoder_start_token_id=BOS_ID,
            bos_token_id=BOS_ID,
            eos_token_id=EOS_ID,
            pad_token_id=PAD_ID,
            vocab_size=onnx_config.vocab_size,
            decoder_layers=onnx_config.num_layers,
            decoder_attention_heads=onnx_config.num_heads,
            d_model=onnx_config.hidden_size,
        )
    else:
        extra.update(num_labels=len(meta.class_names), id2label=dict(enumerate(meta.class_names)))
    return extra


def hub_files(meta: CheckpointMeta, generation_defaults: dict[str, Any]) -> dict[str, str]:
    """File name -> text of the JSON files written beside the ONNX models (no model card)."""
    files = {PREPROCESSOR_CONFIG: _json(preprocessor_config(meta))}
    if meta.task == "captioning":
        files[GENERATION_CONFIG] = _json(generation_config(meta, generation_defaults))
        files[TOKENIZER] = json.loads(meta.tokenizer or "{}").get("tokenizer", "{}")
    return files


def _json(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=1, ensure_ascii=False) + "\n"
