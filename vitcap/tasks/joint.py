"""JointTask: one shared encoder trained for captioning and classification at once.

The model (`vitcap.models.JointModel`) is a captioner with a classification head on its encoder's tokens. Each
training step encodes the images once and adds the two losses with their weights; validation and test report
both metric sets (caption metrics and `acc` / `acc5`). The checkpoint (task "joint") carries the tokenizer and
the class names, so `vitcap caption` and `vitcap classify` both use it, and `init_from` can seed a captioner
(encoder and decoder) or a classifier (encoder and head) from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor

from vitcap.checkpoint import CheckpointMeta
from vitcap.errors import CheckpointError, ConfigError, DataError
from vitcap.generate import GenerationOverrides
from vitcap.models.registry import DecoderConfig, DecoderOverrides, EncoderConfig, EncoderOverrides, ModelSpec
from vitcap.tasks.captioning import CaptioningTask
from vitcap.tasks.classification import Accuracies
from vitcap.tasks.optim import OptimConfig

__all__ = ["JointTask", "LossWeights"]


@dataclass
class LossWeights:
    """Weights of the two losses in the joint objective (`caption * caption_loss + classify * class_loss`).

    Attributes:
        caption: Weight of the captions' token cross-entropy.
        classify: Weight of the classification cross-entropy.
    """

    caption: float = 1.0
    classify: float = 1.0

    def __post_init__(self) -> None:
        if self.caption < 0 or self.classify < 0 or self.caption + self.classify == 0:
            raise ConfigError(
                f"expected weights >= 0, not both 0, got caption={self.caption}, classify={self.classify}",
                key="model.loss_weights",
            )


class JointTask(CaptioningTask):
    """Captioning and classification with one encoder: a caption decoder and a class head trained together.

    Needs a data module whose batches carry captions and class ``labels`` (the built-in shapes do:
    `CaptionDataModule(data="shapes")`; the label is the object the caption names first). Tokenizer, caption
    length, class names and preprocessing are linked from it.

    Args:
        preset, encoder, decoder, tokenizer, max_length, preprocessing, generation, label_smoothing, eval_generate,
            num_logged_captions: See `CaptioningTask` (the caption side).
        class_names: Class names in label order (linked from the data module); their number is the number of
            classes.
        pool: "token" (class token) or "mean" (mean of the spatial tokens) for the class head.
        drop_rate: Dropout before the class head.
        loss_weights: Weights of the caption and the classification losses (`LossWeights`).
        optim, optimizer, scheduler, compile, monitor, init_from, freeze_encoder: See `VitcapTask`.
    """

    task_name = "joint"

    def __init__(
        self,
        preset: str = "tiny",
        encoder: EncoderOverrides | None = None,
        decoder: DecoderOverrides | None = None,
        tokenizer: str | None = None,
        max_length: int | None = None,
        preprocessing: dict[str, Any] | None = None,
        class_names: list[str] | None = None,
        pool: Literal["token", "mean"] = "token",
        drop_rate: float = 0.0,
        loss_weights: LossWeights | None = None,
        generation: GenerationOverrides | None = None,
        label_smoothing: float = 0.0,
        eval_generate: bool = True,
        num_logged_captions: int = 4,
        optim: OptimConfig | None = None,
        optimizer: OptimizerCallable | None = None,
        scheduler: LRSchedulerCallable | None = None,
        compile: bool = False,
        monitor: str = "val/bleu4",
        init_from: str | None = None,
        freeze_encoder: bool | int = False,
    ) -> None:
        if not class_names or len(class_names) < 2:
            raise ConfigError(
                "joint training needs at least 2 class names: use a data module with class labels "
                "(CaptionDataModule with data: shapes)",
                key="model.class_names",
            )
        if pool not in ("token", "mean"):
            raise ConfigError(f"expected 'token' or 'mean', got {pool!r}", key="model.pool")
        super().__init__(
            preset=preset,
            encoder=encoder,
            decoder=decoder,
            tokenizer=tokenizer,
            max_length=max_length,
            preprocessing=preprocessing,
            generation=generation,
            label_smoothing=label_smoothing,
            eval_generate=eval_generate,
            num_logged_captions=num_logged_captions,
            optim=optim,
            optimizer=optimizer,
            scheduler=scheduler,
            compile=compile,
            monitor=monitor,
            init_from=init_from,
            freeze_encoder=freeze_encoder,
        )
        self.class_names = list(class_names)
        self.num_classes = len(self.class_names)
        self.loss_weights = loss_weights if loss_weights is not None else LossWeights()
        self.accuracies = Accuracies(self.num_classes)

    def build_spec(self, encoder: EncoderConfig, decoder: DecoderConfig) -> ModelSpec:
        # Called inside the captioning constructor, after it saved the hyperparameters (this class's included).
        hp = self.hparams
        return ModelSpec(
            "joint",
            encoder,
            decoder,
            vocab_size=self.tokenizer.vocab_size,
            pad_id=self.tokenizer.pad_id,
            num_classes=len(hp.class_names),
            pool=hp.pool,
            drop_rate=hp.drop_rate,
        )

    # ------------------------------------------------------------------------------------------------------ steps
    def _labels(self, batch: dict[str, Any]) -> Tensor:
        labels = batch.get("labels")
        if labels is None:
            raise DataError(
                "joint training needs class labels in every batch, and this data module gives captions only: "
                "use data: shapes, or train CaptioningTask"
            )
        return labels

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        memory, logits = self.model.encode_both(batch["images"])  # one encoder pass for both heads
        caption_loss, _, _ = self._loss(batch, memory)
        class_loss = F.cross_entropy(logits, self._labels(batch))
        w = self.loss_weights
        loss = w.caption * caption_loss + w.classify * class_loss
        B = batch["images"].shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=B)
        self.log("train/caption_loss", caption_loss.detach(), batch_size=B)
        self.log("train/class_loss", class_loss.detach(), batch_size=B)
        return loss

    def _eval_step(self, batch: dict[str, Any], stage: str, memory: Tensor | None = None) -> None:
        memory, logits = self.model.encode_both(batch["images"])
        labels = self._labels(batch)
        self.log(f"{stage}/class_loss", F.cross_entropy(logits, labels), batch_size=labels.shape[0], sync_dist=True)
        self.accuracies.log(self, stage, logits, labels)
        super()._eval_step(batch, stage, memory)

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> list[dict[str, Any]]:
        rows = super().predict_step(batch, batch_idx)
        probs = self.model.classify(batch["images"]).softmax(dim=-1)
        top = probs.max(dim=-1)
        for row, p, i in zip(rows, top.values.tolist(), top.indices.tolist()):
            row.update(label=self.class_names[i], prob=p)
        return rows

    # ------------------------------------------------------------------------------------------------ checkpoints
    def shared_parts(self, meta: CheckpointMeta) -> tuple[str, ...]:
        if meta.task == "classification":  # its head too, for the same classes
            return ("encoder.", "head.") if list(meta.class_names) == self.class_names else ("encoder.",)
        return super().shared_parts(meta)

    def check_compatible(self, meta: CheckpointMeta) -> None:
        super().check_compatible(meta)
        if meta.class_names and list(meta.class_names) != self.class_names:
            raise CheckpointError(
                f"checkpoint classes ({len(meta.class_names)}) differ from the data module's ({self.num_classes})"
            )

    def checkpoint_meta(self) -> CheckpointMeta:
        meta = super().checkpoint_meta()
        meta.class_names = self.class_names
        return meta
