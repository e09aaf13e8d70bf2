"""Reading vitcap checkpoints and export folders: what a trained model is made of, without Lightning.

Two containers hold a trained model:
- a `.ckpt` file written by `train.py fit` (Lightning's dictionary; read with `torch.load(weights_only=True)`, so a
  pickle carrying code is refused, never run), whose `"vitcap"` entry is the metadata below and whose
  `state_dict` keys start with `model.`;
- an export folder written by `vitcap export`: `model.safetensors` (keys relative to the model) and `config.json`
  (the metadata), no pickle at all.

The metadata (`CheckpointMeta`) is self-contained: the resolved model spec (every encoder and decoder setting, not
a preset name that could change), the tokenizer, the preprocessing and the default decoding. Checkpoints written
by vitcap 0.1 (format 1) kept only the task's constructor arguments; `read_checkpoint` returns them under
`legacy_hparams`, and `vitcap.inference` turns them into a spec.

This module imports torch, safetensors and `vitcap.errors` only, so any layer may read checkpoints; torch and
safetensors only when weights are read, so `read_export_meta` (the metadata of an export folder) works without
them (the ONNX runtime, `vitcap.deploy.runtime`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vitcap.errors import CheckpointError

if TYPE_CHECKING:
    from torch import Tensor

__all__ = [
    "CHECKPOINT_KEY",
    "EXPORT_CONFIG",
    "EXPORT_WEIGHTS",
    "FORMAT",
    "CheckpointMeta",
    "plain",
    "read_checkpoint",
    "read_export_meta",
    "torch_load",
    "write_export",
]

CHECKPOINT_KEY = "vitcap"  # the entry of a Lightning checkpoint that holds `CheckpointMeta`
FORMAT = 2  # 1: vitcap 0.1 (task constructor arguments only); 2: a resolved model spec
EXPORT_CONFIG = "config.json"
EXPORT_WEIGHTS = "model.safetensors"
MODEL_PREFIX = "model."  # Lightning state-dict keys of the task's `model` attribute
TASKS = ("captioning", "classification", "joint")  # joint: one encoder, a caption decoder and a class head


@dataclass
class CheckpointMeta:
    """What rebuilds a trained model besides its weights.

    Attributes:
        task: "captioning", "classification" or "joint" (both: tokenizer and class names).
        model: The model spec (`vitcap.models.registry.ModelSpec.to_dict()`); empty for format-1 checkpoints.
        tokenizer: Serialised `CaptionTokenizer` (captioners); it defines the special ids.
        preprocessing: Evaluation preprocessing (`vitcap.data.transforms.make_preprocessing`).
        generation: Default decoding (`GenerationConfig` fields) of a captioner.
        class_names: Class names of a classifier (or joint model), in output order.
        metrics: Metrics logged when the checkpoint was written (for model cards), name -> value.
        version: vitcap version that wrote it.
        format: Container format (`FORMAT`).
        legacy_hparams: Format 1 only: the task constructor arguments the model is rebuilt from.
    """

    task: str
    model: dict[str, Any] = field(default_factory=dict)
    tokenizer: str | None = None
    preprocessing: dict[str, Any] = field(default_factory=dict)
    generation: dict[str, Any] = field(default_factory=dict)
    class_names: list[str] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    version: str = ""
    format: int = FORMAT
    legacy_hparams: dict[str, Any] = field(default_factory=dict)

    def serves(self, use: str) -> bool:
        """Whether the model does `use` ("captioning" / "classification"): a joint model does both."""
        return self.task in (use, "joint")

    def to_dict(self) -> dict[str, Any]:
        """Plain containers only, so a checkpoint holding it loads with `weights_only=True`."""
        return plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str | os.PathLike) -> CheckpointMeta:
        if not isinstance(data, dict) or data.get("task") not in TASKS:
            task = data.get("task") if isinstance(data, dict) else None
            raise CheckpointError(f"{source}: unknown task {task!r}; expected one of {list(TASKS)}", path=None)
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def plain(value: Any) -> Any:
    """Config values as plain Python containers (dicts, lists, scalars), so checkpoints load with `weights_only`."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return plain(dataclasses.asdict(value))
    if isinstance(value, dict):  # also Lightning's AttributeDict
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if hasattr(value, "as_dict"):  # jsonargparse Namespace
        return plain(value.as_dict())
    return str(value)


def torch_load(path: str | os.PathLike, map_location: Any = "cpu", weights_only: bool = True) -> Any:
    """`torch.load` of a checkpoint file whose failures are one `CheckpointError` naming the file.

    With `weights_only=True` (the default) a pickle that carries code is refused, never run.
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder; expected a .ckpt file")
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty file (0 bytes), not a checkpoint")
    import torch

    try:
        return torch.load(path, map_location=map_location, weights_only=weights_only)
    except pickle.UnpicklingError as e:
        if "weights only" not in str(e).lower():  # not a pickle at all (a text file, random bytes)
            raise CheckpointError(f"{path}: not a PyTorch checkpoint ({str(e).strip() or type(e).__name__})") from None
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"{path}: refused: the file holds Python objects that weights_only loading does not allow "
            f"(a pickle that could run code): {reason}"
        ) from None
    except Exception as e:  # torch raises many kinds (KeyError, RuntimeError, EOFError...) for non-checkpoints
        raise CheckpointError(f"{path}: not a PyTorch checkpoint, or a truncated one ({type(e).__name__})") from None


def meta_of(checkpoint: dict[str, Any], source: str | os.PathLike) -> CheckpointMeta:
    """The `CheckpointMeta` of a loaded Lightning checkpoint dictionary (either format)."""
    raw = checkpoint.get(CHECKPOINT_KEY)
    if not isinstance(raw, dict) or "task" not in raw:
        raise CheckpointError(f"{source}: a Lightning checkpoint, but not one written by vitcap (no 'vitcap' metadata)")
    if int(raw.get("format", 1)) >= 2:
        return CheckpointMeta.from_dict(raw, source)
    hparams = dict(checkpoint.get("hyper_parameters") or {})
    legacy = {k: v for k, v in raw.items() if k in ("task", "version", "tokenizer", "class_names")}
    return CheckpointMeta(
        **legacy,
        preprocessing=raw.get("preprocessing") or hparams.get("preprocessing") or {},
        generation=dict(hparams.get("generation") or {}),
        format=1,
        legacy_hparams=hparams,
    )


def read_checkpoint(path: str | os.PathLike) -> tuple[CheckpointMeta, dict[str, Tensor]]:
    """Read the metadata and the model's state dict (keys relative to the model) of a `.ckpt` or export folder.

    Raises:
        CheckpointError: naming the file, for anything that is not a readable vitcap checkpoint.
    """
    path = Path(path)
    if path.is_dir():
        return _read_export(path)
    ckpt = torch_load(path)
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise CheckpointError(f"{path}: not a vitcap/Lightning checkpoint (no 'state_dict')")
    meta = meta_of(ckpt, path)
    state = {k.removeprefix(MODEL_PREFIX): v for k, v in ckpt["state_dict"].items() if k.startswith(MODEL_PREFIX)}
    return meta, state


def read_export_meta(folder: str | os.PathLike) -> CheckpointMeta:
    """The metadata of an export folder (its `config.json`), read without torch.

    Raises:
        CheckpointError: naming the file, when `config.json` is missing, unreadable, or written by a newer vitcap.
    """
    config_path = Path(folder) / EXPORT_CONFIG
    if not config_path.is_file():
        raise CheckpointError(f"{folder}: an export folder needs {EXPORT_CONFIG} and {EXPORT_WEIGHTS}")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{config_path}: not valid JSON ({e})") from None
    if not isinstance(config, dict) or "task" not in config:
        raise CheckpointError(f"{config_path}: not a vitcap export config (needs 'task')")
    if "hparams" in config and "model" not in config:  # written by vitcap 0.1's export
        meta = CheckpointMeta(
            task=config["task"],
            version=str(config.get("version", "")),
            tokenizer=config.get("tokenizer"),
            preprocessing=config.get("preprocessing") or config["hparams"].get("preprocessing") or {},
            generation=dict(config["hparams"].get("generation") or {}),
            class_names=list(config.get("class_names") or []),
            format=1,
            legacy_hparams=dict(config["hparams"]),
        )
    else:
        meta = CheckpointMeta.from_dict(config, config_path)
    if not isinstance(meta.format, int) or meta.format > FORMAT:
        raise CheckpointError(
            f"{config_path}: export format {meta.format!r} (written by vitcap {meta.version or '?'}) is newer than "
            f"this vitcap reads (format {FORMAT}): upgrade vitcap"
        )
    return meta


def _read_export(folder: Path) -> tuple[CheckpointMeta, dict[str, Tensor]]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    weights_path = folder / EXPORT_WEIGHTS
    meta = read_export_meta(folder)
    if not weights_path.is_file():
        raise CheckpointError(f"{folder}: an export folder needs {EXPORT_CONFIG} and {EXPORT_WEIGHTS}")
    try:
        state = load_file(str(weights_path))
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{weights_path}: not a readable safetensors file ({e})") from None
    if state and all(k.startswith(MODEL_PREFIX) for k in state):  # 0.1 exports kept the task's key prefix
        state = {k.removeprefix(MODEL_PREFIX): v for k, v in state.items()}
    return meta, state


def write_export(
    meta: CheckpointMeta,
    state: dict[str, Tensor],
    out_dir: str | os.PathLike,
    config_extra: dict[str, Any] | None = None,
    add_files: Callable[[Path], None] | None = None,
) -> Path:
    """Write `model.safetensors` + `config.json` into `out_dir`, all or nothing.

    The files are written into a temporary folder beside `out_dir`, which is renamed into place at the end, so a
    failure leaves no half-written export (an existing `out_dir` is replaced only once the new one is complete).

    Args:
        meta: The metadata, stored as `config.json`.
        state: The model's state dict.
        out_dir: The export folder.
        config_extra: More top-level `config.json` entries (other tools' keys; `read_checkpoint` ignores them).
        add_files: Called with the temporary folder once the weights and config are in it, to add more files
            (the ONNX export); whatever it raises removes the temporary folder.
    """
    import shutil
    import tempfile

    from safetensors.torch import save_file

    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        # safetensors refuses shared storage (the tied output head); store each tensor separately.
        save_file({k: v.detach().clone().contiguous() for k, v in state.items()}, str(tmp / EXPORT_WEIGHTS))
        text = json.dumps({**(config_extra or {}), **meta.to_dict()}, indent=1, ensure_ascii=False) + "\n"
        (tmp / EXPORT_CONFIG).write_text(text, encoding="utf-8")
        if add_files is not None:
            add_files(tmp)
        if out.exists():
            old = out.with_name(f".{out.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
