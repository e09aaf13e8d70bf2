"""ClassificationTask: image classification with top-1/top-5 accuracy, mixup/cutmix and label smoothing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from timm.data import Mixup
from torch import Tensor
from torchmetrics.classification import MulticlassAccuracy

from vitcap.checkpoint import CheckpointMeta, plain
from vitcap.errors import CheckpointError, ConfigError
from vitcap.models.registry import EncoderOverrides, ModelSpec, resolve_configs
from vitcap.tasks.base import VitcapTask, with_data_image_size
from vitcap.tasks.optim import OptimConfig


@dataclass
class MixupConfig:
    """Mixup / CutMix of training batches (timm's `Mixup`); both alphas 0 (the default) turn it off.

    Attributes:
        mixup_alpha: Mixup alpha; 0 disables mixup.
        cutmix_alpha: CutMix alpha; 0 disables cutmix.
        prob: Probability of applying mixup or cutmix to a batch.
    """

    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    prob: float = 1.0

    def __post_init__(self) -> None:
        if self.mixup_alpha < 0 or self.cutmix_alpha < 0:
            raise ConfigError("alphas must be >= 0", key="model.mixup")
        if not 0 <= self.prob <= 1:
            raise ConfigError(f"expected a probability, got {self.prob}", key="model.mixup.prob")


class Accuracies(torch.nn.Module):
    """Top-1 and top-k (k = 5, or fewer classes) accuracy of the validation and test splits, updated and logged
    per step (Lightning computes them per epoch): what `ClassificationTask` and `JointTask` report as
    `{stage}/acc` and `{stage}/acc5`."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        top_k = min(5, num_classes)
        self.acc = torch.nn.ModuleDict(
            {s: MulticlassAccuracy(num_classes, top_k=1, average="micro") for s in ("val", "test")}
        )
        self.acc5 = torch.nn.ModuleDict(
            {s: MulticlassAccuracy(num_classes, top_k=top_k, average="micro") for s in ("val", "test")}
        )

    def log(self, task: VitcapTask, stage: str, logits: Tensor, labels: Tensor) -> None:
        acc, acc5 = self.acc[stage], self.acc5[stage]
        acc.update(logits, labels)
        acc5.update(logits, labels)
        task.log(f"{stage}/acc", acc, prog_bar=True, batch_size=labels.shape[0])
        task.log(f"{stage}/acc5", acc5, batch_size=labels.shape[0])


class ClassificationTask(VitcapTask):
    """Image classification: encoder -> pooled token -> linear head.

    The class names and the preprocessing (image size, channels) are linked from the data module by the CLI.

    Args:
        preset: Named model preset from `vitcap.models.registry.PRESETS`.
        encoder: Encoder settings that replace the preset's (e.g. `{depth: 6, drop_path_rate: 0.1}`).
        class_names: Class names in label order (linked from the data module; travel inside the checkpoint); their
            number is the number of classes.
        preprocessing: Evaluation preprocessing (linked from the data module; travels inside the checkpoint); its
            `img_size` and `in_chans` are the encoder's.
        pool: "token" (class token) or "mean" (mean of the spatial tokens).
        drop_rate: Dropout before the head.
        label_smoothing: Label smoothing of the cross-entropy (also applied to mixed targets).
        mixup: Mixup / CutMix settings (off by default).
        optim, optimizer, scheduler, compile, monitor, init_from, freeze_encoder: See `VitcapTask`.
    """

    task_name = "classification"

    def __init__(
        self,
        preset: str = "tiny",
        encoder: EncoderOverrides | None = None,
        class_names: list[str] | None = None,
        preprocessing: dict[str, Any] | None = None,
        pool: Literal["token", "mean"] = "token",
        drop_rate: float = 0.0,
        label_smoothing: float = 0.0,
        mixup: MixupConfig | None = None,
        optim: OptimConfig | None = None,
        optimizer: OptimizerCallable | None = None,
        scheduler: LRSchedulerCallable | None = None,
        compile: bool = False,
        monitor: str = "val/acc",
        init_from: str | None = None,
        freeze_encoder: bool | int = False,
    ) -> None:
        super().__init__(optim, optimizer, scheduler, compile, monitor, init_from, freeze_encoder)
        if not class_names or len(class_names) < 2:
            raise ConfigError(
                "a classifier needs at least 2 class names: link them from a classification data module",
                key="model.class_names",
            )
        self.save_hyperparameters(ignore=["optimizer", "scheduler"])
        enc_cfg, _ = resolve_configs(preset, encoder)
        enc_cfg = with_data_image_size(enc_cfg, encoder, preprocessing)
        num_classes = len(class_names)
        self.spec = ModelSpec("classifier", enc_cfg, num_classes=num_classes, pool=pool, drop_rate=drop_rate)
        self.model = self.spec.build()
        self.num_classes = num_classes
        self.class_names = list(class_names)
        self.label_smoothing = label_smoothing
        self.mixup = None
        mixup = mixup or MixupConfig()
        if mixup.mixup_alpha > 0 or mixup.cutmix_alpha > 0:
            self.mixup = Mixup(
                mixup_alpha=mixup.mixup_alpha,
                cutmix_alpha=mixup.cutmix_alpha,
                prob=mixup.prob,
                label_smoothing=label_smoothing,
                num_classes=num_classes,
            )
        self.accuracies = Accuracies(num_classes)
        size = enc_cfg.img_size or 224
        self.example_input_array = torch.zeros(1, enc_cfg.in_chans, size, size)  # FLOPs in the model summary
        self.load_init_from()

    def forward(self, images: Tensor) -> Tensor:
        return self.model(images)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        images, labels = batch["images"], batch["labels"]
        if self.mixup is not None and images.shape[0] % 2 == 0:  # timm's Mixup pairs the batch with its flip
            images, soft = self.mixup(images, labels)
            logits = self.model(images)
            loss = torch.sum(-soft * F.log_softmax(logits, dim=-1), dim=-1).mean()
        else:
            logits = self.model(images)
            loss = F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)
        self.log("train/loss", loss, prog_bar=True, batch_size=images.shape[0])
        return loss

    def _eval_step(self, batch: dict[str, Any], stage: str) -> None:
        images, labels = batch["images"], batch["labels"]
        logits = self.model(images)
        loss = F.cross_entropy(logits, labels)
        self.log(f"{stage}/loss", loss, prog_bar=True, batch_size=images.shape[0], sync_dist=True)
        self.accuracies.log(self, stage, logits, labels)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> list[dict[str, Any]]:
        probs = self.model(batch["images"]).softmax(dim=-1)
        top = probs.topk(min(5, self.num_classes), dim=-1)
        out = []
        for image_id, p, idx in zip(batch["ids"], top.values.tolist(), top.indices.tolist()):
            out.append(
                {
                    "image": str(image_id),
                    "label": self.class_names[idx[0]],
                    "top": [{"label": self.class_names[i], "prob": q} for i, q in zip(idx, p)],
                }
            )
        return out

    def shared_parts(self, meta: CheckpointMeta) -> tuple[str, ...]:
        if meta.task == "joint" and list(meta.class_names) == self.class_names:  # its head, for the same classes
            return ("encoder.", "head.")
        return ("encoder.",)

    def check_compatible(self, meta: CheckpointMeta) -> None:
        saved = meta.class_names
        if saved and list(saved) != self.class_names:
            raise CheckpointError(
                f"checkpoint classes ({len(saved)}: {', '.join(saved[:4])}...) differ from the data module's "
                f"({len(self.class_names)}: {', '.join(self.class_names[:4])}...)"
            )

    def checkpoint_meta(self) -> CheckpointMeta:
        meta = super().checkpoint_meta()
        meta.class_names = self.class_names
        meta.preprocessing = plain(self.hparams.preprocessing) or {}
        return meta
