"""Using a trained model: `vitcap.load(checkpoint)` -> `.caption(images)` or `.classify(images)`, and export.

A checkpoint is either a Lightning `.ckpt` file written by `train.py fit` (read with `weights_only=True`, so a
pickle carrying code is refused) or a folder written by `vitcap export` (safetensors weights + `config.json`,
no pickle at all).
"""

from __future__ import annotations

import inspect
import json
import os
import pickle
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor

EXPORT_CONFIG = "config.json"
EXPORT_WEIGHTS = "model.safetensors"
ImageInput = str | os.PathLike | Image.Image | Tensor


class CheckpointError(ValueError):
    """A file that is not a usable vitcap checkpoint; the message names the file and what is wrong."""


@dataclass
class CaptionResult:
    """One image's caption: the best hypothesis, its mean token log-prob, and the other n-best entries."""

    caption: str
    score: float
    tokens: list[int]
    token_logprobs: list[float]
    alternatives: list[dict[str, Any]] = field(default_factory=list)
    words: list[str] = field(default_factory=list)
    attention: Tensor | None = None  # (words, h, w) over the spatial grid, when asked for


# ----------------------------------------------------------------------------------------------------------- reading
def torch_load(path: str | os.PathLike, map_location: Any = "cpu", weights_only: bool = True) -> Any:
    """`torch.load` of a checkpoint file whose failures are one `CheckpointError` naming the file.

    Used by `read_checkpoint` and by the CLI's checkpoint plugin (`--ckpt_path` of fit/validate/test/predict).
    With `weights_only=True` (the default) a pickle that carries code is refused, never run.
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder; expected a .ckpt file")
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty file (0 bytes), not a checkpoint")
    try:
        return torch.load(path, map_location=map_location, weights_only=weights_only)
    except pickle.UnpicklingError as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"{path}: refused: the file holds Python objects that weights_only loading does not allow "
            f"(a pickle that could run code): {reason}"
        ) from None
    except Exception as e:  # torch raises many kinds (KeyError, RuntimeError, EOFError...) for non-checkpoints
        raise CheckpointError(f"{path}: not a PyTorch checkpoint, or a truncated one ({type(e).__name__})") from None


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """Read hyperparameters + metadata and the model state dict of a `.ckpt` file or an export folder.

    Returns:
        (`{"task", "hparams", ...meta}`, state dict with keys relative to the task module).
    """
    path = Path(path)
    if path.is_dir():
        return _read_export(path)
    ckpt = torch_load(path)
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise CheckpointError(f"{path}: not a vitcap/Lightning checkpoint (no 'state_dict')")
    meta = ckpt.get("vitcap")
    if not isinstance(meta, dict) or "task" not in meta:
        raise CheckpointError(f"{path}: a Lightning checkpoint, but not one written by vitcap (no 'vitcap' metadata)")
    return {**meta, "hparams": dict(ckpt.get("hyper_parameters") or {})}, ckpt["state_dict"]


def _read_export(folder: Path) -> tuple[dict[str, Any], dict[str, Tensor]]:
    from safetensors.torch import load_file

    config_path, weights_path = folder / EXPORT_CONFIG, folder / EXPORT_WEIGHTS
    if not config_path.is_file() or not weights_path.is_file():
        raise CheckpointError(f"{folder}: an export folder needs {EXPORT_CONFIG} and {EXPORT_WEIGHTS}")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{config_path}: not valid JSON ({e})") from None
    if not isinstance(config, dict) or "task" not in config or "hparams" not in config:
        raise CheckpointError(f"{config_path}: not a vitcap export config (needs 'task' and 'hparams')")
    return config, load_file(str(weights_path))


def build_task(meta: dict[str, Any], state_dict: dict[str, Tensor], source: str | os.PathLike = "checkpoint"):
    """Instantiate the task module a checkpoint was trained with and load its weights (strictly)."""
    from vitcap.tasks import CaptioningTask, ClassificationTask

    classes = {"captioning": CaptioningTask, "classification": ClassificationTask}
    if meta["task"] not in classes:
        raise CheckpointError(f"{source}: unknown task {meta['task']!r}; expected one of {sorted(classes)}")
    cls = classes[meta["task"]]
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    # LightningCLI adds bookkeeping keys (`_class_path`, `_instantiator`) that are not constructor arguments.
    hparams = {k: v for k, v in meta["hparams"].items() if k in accepted}
    task = cls(**hparams)
    missing, unexpected = task.load_state_dict(state_dict, strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"{source}: weights do not fit the model its hyperparameters describe "
            f"(missing {list(missing)[:3]}, unexpected {list(unexpected)[:3]})"
        )
    return task.eval()


def load(checkpoint: str | os.PathLike, device: str | torch.device = "cpu") -> CaptionPipeline | ClassifyPipeline:
    """Load a trained model for inference.

    Args:
        checkpoint: A `.ckpt` file from training or a folder from `vitcap export`.
        device: Where to run the model ("cpu", "cuda", "cuda:1", ...).

    Returns:
        A `CaptionPipeline` (`.caption(images, ...)`) or a `ClassifyPipeline` (`.classify(images, ...)`).
    """
    meta, state = read_checkpoint(checkpoint)
    task = build_task(meta, state, checkpoint).to(device)
    pipeline = CaptionPipeline if meta["task"] == "captioning" else ClassifyPipeline
    return pipeline(task, meta, torch.device(device))


def export(checkpoint: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Write a checkpoint as `model.safetensors` + `config.json` (tokenizer and preprocessing included)."""
    from safetensors.torch import save_file

    meta, state = read_checkpoint(checkpoint)
    build_task(meta, state, checkpoint)  # refuse to export weights that would not load
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # safetensors refuses shared storage (the tied output head); store each tensor separately.
    tensors = {k: v.detach().clone().contiguous() for k, v in state.items()}
    save_file(tensors, str(out / EXPORT_WEIGHTS))
    (out / EXPORT_CONFIG).write_text(json.dumps(meta, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return out


# ------------------------------------------------------------------------------------------------------- pipelines
class _Pipeline:
    def __init__(self, task: Any, meta: dict[str, Any], device: torch.device) -> None:
        from vitcap.data.transforms import build_eval_transform

        self.task = task
        self.meta = meta
        self.device = device
        preprocessing = meta.get("preprocessing") or meta["hparams"].get("preprocessing")
        if not preprocessing:
            raise CheckpointError("checkpoint has no preprocessing settings; retrain with a vitcap data module")
        self.preprocessing = preprocessing
        self.transform = build_eval_transform(preprocessing)

    def load_images(self, images: Iterable[ImageInput]) -> tuple[Tensor, list[Image.Image | None]]:
        """Preprocess paths / PIL images / tensors into a (B, C, H, W) batch (tensors are taken as preprocessed)."""
        from vitcap.data.images import load_image

        batch, originals = [], []
        for item in images:
            if isinstance(item, Tensor):
                batch.append(item)
                originals.append(None)
                continue
            image = item if isinstance(item, Image.Image) else load_image(item)
            image = image.convert("RGB")
            batch.append(self.transform(image))
            originals.append(image)
        return torch.stack(batch).to(self.device), originals


class CaptionPipeline(_Pipeline):
    """Caption images with a trained captioner (see `vitcap.load`)."""

    @property
    def model(self):
        return self.task.model

    @torch.inference_mode()
    def caption(
        self, images: ImageInput | Sequence[ImageInput], return_attention: bool = False, **decoding: Any
    ) -> list[CaptionResult]:
        """Caption a batch of images.

        Args:
            images: Paths, PIL images or preprocessed (C, H, W) tensors (or one of them).
            return_attention: Also return each word's cross-attention over the image grid.
            **decoding: `GenerationConfig` fields: num_beams, max_length, do_sample, temperature, top_k, top_p,
                num_return_sequences, length_penalty, repetition_penalty, no_repeat_ngram_size, seed, ...

        Returns:
            One `CaptionResult` per image.
        """
        from vitcap.generate import GenerationConfig, attention_grid, generate

        if isinstance(images, (str, os.PathLike, Image.Image, Tensor)) and not (
            isinstance(images, Tensor) and images.ndim == 4
        ):
            images = [images]
        batch, _ = self.load_images(images) if not isinstance(images, Tensor) else (images.to(self.device), None)
        base = {k: v for k, v in vars(self.task.generation).items()}
        config = GenerationConfig(**{**base, **decoding, "output_attentions": return_attention})
        hyps = generate(
            self.model, batch, config, bos_id=self.task.bos_id, eos_id=self.task.eos_id, pad_id=self.task.pad_id
        )
        results = []
        for nbest in hyps:
            best = nbest[0]
            words = [self.task.tokenizer.decode([t]) for t in best.tokens]
            attention = attention_grid(best.attention, self.model.encoder) if return_attention else None
            results.append(
                CaptionResult(
                    caption=self.task.decode(best.tokens),
                    score=_mean(best.token_logprobs),
                    tokens=list(map(int, best.tokens)),
                    token_logprobs=[float(x) for x in best.token_logprobs],
                    alternatives=[
                        {"caption": self.task.decode(h.tokens), "score": _mean(h.token_logprobs)} for h in nbest[1:]
                    ],
                    words=words,
                    attention=attention[: len(words)] if attention is not None else None,
                )
            )
        return results


class ClassifyPipeline(_Pipeline):
    """Classify images with a trained classifier (see `vitcap.load`)."""

    @property
    def class_names(self) -> list[str]:
        return self.task.class_names

    @torch.inference_mode()
    def classify(self, images: ImageInput | Sequence[ImageInput], top_k: int = 5) -> list[list[tuple[str, float]]]:
        """Top-k (class name, probability) pairs per image, most likely first."""
        if not isinstance(images, (list, tuple)) and not (isinstance(images, Tensor) and images.ndim == 4):
            images = [images]
        batch, _ = self.load_images(images) if not isinstance(images, Tensor) else (images.to(self.device), None)
        probs = self.task.model(batch).float().softmax(dim=-1)
        top = probs.topk(min(top_k, probs.shape[-1]), dim=-1)
        return [
            [(self.class_names[i], float(p)) for p, i in zip(ps, idx)]
            for ps, idx in zip(top.values.tolist(), top.indices.tolist())
        ]

    @torch.inference_mode()
    def rollout(self, images: ImageInput | Sequence[ImageInput]) -> Tensor:
        """Attention rollout (B, h, w) of a ViT classifier."""
        from vitcap.viz import attention_rollout

        if not isinstance(images, (list, tuple)):
            images = [images]
        batch, _ = self.load_images(images)
        vit = getattr(self.task.model.encoder, "vit", None) or getattr(self.task.model.encoder, "model", None)
        if vit is None or not hasattr(vit, "blocks"):
            raise ValueError("attention rollout needs a ViT encoder; this classifier has a CNN encoder")
        return attention_rollout(vit, batch)


def _mean(values: Any) -> float:
    values = torch.as_tensor(values, dtype=torch.float32)
    return float(values.mean()) if values.numel() else 0.0
