"""Using a trained model: `vitcap.load(checkpoint)` -> `.caption(images)` or `.classify(images)`, and export.

The model is rebuilt as a plain `nn.Module` (`Captioner` / `Classifier`) from the spec a checkpoint stores
(`vitcap.checkpoint`), together with its tokenizer, preprocessing and default decoding. Nothing here imports
Lightning or the training tasks, so loading a model for inference costs the model's imports only.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor, nn

from vitcap.checkpoint import FORMAT, CheckpointMeta, read_checkpoint, write_export
from vitcap.data.images import load_image
from vitcap.data.transforms import build_eval_transform
from vitcap.errors import CheckpointError, ConfigError
from vitcap.generate import GenerationConfig, attention_grid, generate
from vitcap.models.joint import JointModel
from vitcap.models.registry import ModelSpec, resolve_configs
from vitcap.results import CaptionResult
from vitcap.tokenizer import CaptionTokenizer

__all__ = [
    "CaptionPipeline",
    "CaptionResult",
    "ClassifyPipeline",
    "build_model",
    "current_meta",
    "export",
    "load",
    "model_spec",
]

ImageInput = str | os.PathLike | Image.Image | Tensor
USES = ("captioning", "classification")  # what a pipeline does; a joint checkpoint serves both


# ---------------------------------------------------------------------------------------------------- rebuilding
def model_spec(meta: CheckpointMeta) -> ModelSpec:
    """The `ModelSpec` of a checkpoint: stored as such since format 2, derived from the task arguments before."""
    if meta.model:
        return ModelSpec.from_dict(meta.model)
    hp = meta.legacy_hparams
    encoder = dict(hp.get("encoder") or {})
    if hp.get("img_size") is not None:
        encoder.setdefault("img_size", hp["img_size"])
    if meta.task == "captioning":
        enc, dec = resolve_configs(hp.get("preset", "tiny"), encoder, hp.get("decoder"))
        return ModelSpec("captioner", enc, dec, vocab_size=int(hp["vocab_size"]), pad_id=int(hp.get("pad_id", 0)))
    encoder.setdefault("in_chans", hp.get("in_chans", 3))
    enc, _ = resolve_configs(hp.get("preset", "tiny"), encoder)
    return ModelSpec(
        "classifier",
        enc,
        num_classes=int(hp["num_classes"]),
        pool=hp.get("pool", "token"),
        drop_rate=float(hp.get("drop_rate", 0.0)),
    )


def build_model(meta: CheckpointMeta, state: dict[str, Tensor], source: str | os.PathLike = "checkpoint") -> nn.Module:
    """Rebuild the model a checkpoint describes and load its weights strictly (in eval mode)."""
    try:
        model = model_spec(meta).build(weights_from_source=False)
    except (KeyError, TypeError, ConfigError) as e:
        raise CheckpointError(
            f"{source}: the stored model settings cannot be built ({type(e).__name__}: {e})"
        ) from None
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"{source}: weights do not fit the model its settings describe "
            f"(missing {list(missing)[:3]}, unexpected {list(unexpected)[:3]})"
        )
    return model.eval()


def load(
    checkpoint: str | os.PathLike, device: str | torch.device = "cpu", task: str | None = None
) -> CaptionPipeline | ClassifyPipeline:
    """Load a trained model for inference.

    Args:
        checkpoint: A `.ckpt` file from training or a folder from `vitcap export`.
        device: Where to run the model ("cpu", "cuda", "cuda:1", ...).
        task: "captioning" or "classification": the use asked for. A joint checkpoint (one encoder with a caption
            decoder and a classification head) serves both and captions by default; any other checkpoint must be
            of that task. None: whatever the checkpoint is.

    Returns:
        A `CaptionPipeline` (`.caption(images, ...)`) or a `ClassifyPipeline` (`.classify(images, ...)`).

    Raises:
        CheckpointError: naming the file, when it cannot be read or is not a model for `task`.
    """
    if task not in (None, *USES):
        raise ConfigError(f"expected one of {list(USES)}, got {task!r}", key="task")
    meta, state = read_checkpoint(checkpoint)
    if task is not None and not meta.serves(task):
        raise CheckpointError(f"{checkpoint}: a {meta.task} checkpoint; this needs a {task} model")
    use = task or ("captioning" if meta.task == "joint" else meta.task)
    model = build_model(meta, state, checkpoint).to(device)
    if use == "classification" and isinstance(model, JointModel):
        model = model.as_classifier()
    pipeline = CaptionPipeline if use == "captioning" else ClassifyPipeline
    return pipeline(model, meta, torch.device(device), source=checkpoint)


def export(checkpoint: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Write a checkpoint as `model.safetensors` + `config.json` (tokenizer and preprocessing included).

    The stored metadata is upgraded to the current format (a resolved model spec), so the export folder loads
    without the presets of the vitcap version that trained it.
    """
    meta, state = read_checkpoint(checkpoint)
    build_model(meta, state, checkpoint)  # refuse to export weights that would not load
    return write_export(current_meta(meta), state, out_dir)


def current_meta(meta: CheckpointMeta) -> CheckpointMeta:
    """The metadata in the current format (a resolved model spec, no task arguments), as export folders store it."""
    return dataclasses.replace(meta, model=model_spec(meta).to_dict(), legacy_hparams={}, format=FORMAT)


# ------------------------------------------------------------------------------------------------------- pipelines
class _Pipeline:
    use = ""  # "captioning" or "classification"

    def __init__(
        self, model: nn.Module, meta: CheckpointMeta, device: torch.device, source: str | os.PathLike = ""
    ) -> None:
        if not meta.preprocessing:
            raise CheckpointError(
                f"{source}: checkpoint has no preprocessing settings; retrain with a vitcap data module"
            )
        self.model = model
        self.meta = meta
        self.device = device
        self.preprocessing = meta.preprocessing
        self.transform = build_eval_transform(meta.preprocessing)

    @property
    def task(self) -> str:
        """What this pipeline does ("captioning" / "classification"); `meta.task` says what was trained."""
        return self.use

    def load_images(self, images: Iterable[ImageInput]) -> Tensor:
        """Preprocess paths / PIL images / tensors into a (B, C, H, W) batch (tensors are taken as preprocessed)."""
        batch = []
        for item in images:
            if isinstance(item, Tensor):
                batch.append(item)
                continue
            image = item if isinstance(item, Image.Image) else load_image(item)
            batch.append(self.transform(image.convert("RGB")))
        return torch.stack(batch).to(self.device)

    def _batch(self, images: ImageInput | Sequence[ImageInput]) -> Tensor:
        if isinstance(images, Tensor) and images.ndim == 4:
            return images.to(self.device)
        if isinstance(images, (str, os.PathLike, Image.Image, Tensor)):
            images = [images]
        return self.load_images(images)


class CaptionPipeline(_Pipeline):
    """Caption images with a trained captioner (see `vitcap.load`)."""

    use = "captioning"

    def __init__(
        self, model: nn.Module, meta: CheckpointMeta, device: torch.device, source: str | os.PathLike = ""
    ) -> None:
        super().__init__(model, meta, device, source)
        if not meta.tokenizer:
            raise CheckpointError(f"{source}: a captioning checkpoint without a tokenizer")
        self.tokenizer = CaptionTokenizer.from_json(meta.tokenizer)
        known = {f.name for f in dataclasses.fields(GenerationConfig)}
        self.generation = GenerationConfig(**{k: v for k, v in meta.generation.items() if k in known})

    @torch.inference_mode()
    def caption(
        self, images: ImageInput | Sequence[ImageInput], return_attention: bool = False, **decoding: Any
    ) -> list[CaptionResult]:
        """Caption a batch of images.

        Args:
            images: Paths, PIL images or preprocessed (C, H, W) tensors (or one of them, or a (B, C, H, W) batch).
            return_attention: Also return each word's cross-attention over the image grid.
            **decoding: `GenerationConfig` fields replacing the checkpoint's default decoding (num_beams,
                max_length, do_sample, temperature, top_k, top_p, num_return_sequences, length_penalty, ...).

        Returns:
            One `CaptionResult` per image.
        """
        batch = self._batch(images)
        config = dataclasses.replace(self.generation, **decoding, output_attentions=return_attention)
        tok = self.tokenizer
        hyps = generate(self.model, batch, config, bos_id=tok.bos_id, eos_id=tok.eos_id, pad_id=tok.pad_id)
        results = []
        for nbest in hyps:
            best = nbest[0]
            words = [tok.decode([t]) for t in best.tokens]
            attention = attention_grid(best.attention, self.model.encoder) if return_attention else None
            results.append(
                CaptionResult(
                    caption=tok.decode(list(map(int, best.tokens))),
                    score=_mean(best.token_logprobs),
                    tokens=list(map(int, best.tokens)),
                    token_logprobs=[float(x) for x in best.token_logprobs],
                    alternatives=[
                        {"caption": tok.decode(list(map(int, h.tokens))), "score": _mean(h.token_logprobs)}
                        for h in nbest[1:]
                    ],
                    words=words,
                    attention=attention[: len(words)] if attention is not None else None,
                )
            )
        return results


class ClassifyPipeline(_Pipeline):
    """Classify images with a trained classifier (see `vitcap.load`)."""

    use = "classification"

    @property
    def class_names(self) -> list[str]:
        return list(self.meta.class_names) or [str(i) for i in range(self.model.num_classes)]

    @torch.inference_mode()
    def classify(self, images: ImageInput | Sequence[ImageInput], top_k: int = 5) -> list[list[tuple[str, float]]]:
        """Top-k (class name, probability) pairs per image, most likely first."""
        probs = self.model(self._batch(images)).float().softmax(dim=-1)
        top = probs.topk(min(top_k, probs.shape[-1]), dim=-1)
        names = self.class_names
        return [
            [(names[i], float(p)) for p, i in zip(ps, idx)]
            for ps, idx in zip(top.values.tolist(), top.indices.tolist())
        ]

    @torch.inference_mode()
    def rollout(self, images: ImageInput | Sequence[ImageInput]) -> Tensor:
        """Attention rollout (B, h, w) of a ViT classifier."""
        from vitcap.viz import attention_rollout

        vit = getattr(self.model.encoder, "vit", None) or getattr(self.model.encoder, "model", None)
        if vit is None or not hasattr(vit, "blocks"):
            raise ConfigError("attention rollout needs a ViT encoder; this classifier has a CNN encoder")
        return attention_rollout(vit, self._batch(images))


def _mean(values: Any) -> float:
    values = torch.as_tensor(values, dtype=torch.float32)
    return float(values.mean()) if values.numel() else 0.0
