"""ClassificationTask: image classification with top-1/top-5 accuracy, mixup/cutmix and label smoothing."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from timm.data import Mixup
from torch import Tensor
from torchmetrics.classification import MulticlassAccuracy

from vitcap.models.registry import create_classifier
from vitcap.tasks.base import VitcapTask


class ClassificationTask(VitcapTask):
    """Image classification: encoder -> pooled token -> linear head.

    Args:
        preset: Named model preset from `vitcap.models.registry`.
        encoder: Overrides of the preset's encoder settings (e.g. `{depth: 6, drop_path_rate: 0.1}`).
        num_classes: Number of classes (linked from the data module).
        class_names: Class names (linked from the data module; travel inside the checkpoint).
        img_size: Input image size (linked from the data module).
        in_chans: Input channels (linked from the data module).
        preprocessing: Evaluation preprocessing (linked from the data module; travels inside the checkpoint).
        pool: "token" (class token) or "mean" (mean of the spatial tokens).
        drop_rate: Dropout before the head.
        label_smoothing: Label smoothing of the cross-entropy (also applied to mixed targets).
        mixup_alpha: Mixup alpha; 0 disables mixup.
        cutmix_alpha: CutMix alpha; 0 disables cutmix.
        mixup_prob: Probability of applying mixup or cutmix to a batch.
    """

    task_name = "classification"

    def __init__(
        self,
        preset: str = "tiny",
        encoder: dict[str, Any] | None = None,
        num_classes: int = 0,
        class_names: list[str] | None = None,
        img_size: int | None = None,
        in_chans: int = 3,
        preprocessing: dict[str, Any] | None = None,
        pool: str = "token",
        drop_rate: float = 0.0,
        label_smoothing: float = 0.0,
        mixup_alpha: float = 0.0,
        cutmix_alpha: float = 0.0,
        mixup_prob: float = 1.0,
        lr: float = 1e-3,
        weight_decay: float = 0.05,
        warmup: float = 0.05,
        min_lr_ratio: float = 0.01,
        optimizer: OptimizerCallable | None = None,
        scheduler: LRSchedulerCallable | None = None,
        compile: bool = False,
        monitor: str = "val/acc",
        monitor_mode: str = "max",
    ) -> None:
        super().__init__(lr, weight_decay, warmup, min_lr_ratio, optimizer, scheduler, compile, monitor, monitor_mode)
        if num_classes <= 1:
            raise ValueError("model.num_classes must be at least 2: link it from a classification data module")
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"model.class_names has {len(class_names)} names for {num_classes} classes")
        self.save_hyperparameters(ignore=["optimizer", "scheduler"])
        encoder = dict(encoder or {})
        if img_size is not None:
            encoder.setdefault("img_size", img_size)
        encoder.setdefault("in_chans", in_chans)
        self.model = create_classifier(preset, num_classes=num_classes, encoder=encoder, pool=pool, drop_rate=drop_rate)
        self.num_classes = num_classes
        self.class_names = list(class_names) if class_names else [str(i) for i in range(num_classes)]
        self.label_smoothing = label_smoothing
        self.mixup = None
        if mixup_alpha > 0 or cutmix_alpha > 0:
            self.mixup = Mixup(
                mixup_alpha=mixup_alpha,
                cutmix_alpha=cutmix_alpha,
                prob=mixup_prob,
                label_smoothing=label_smoothing,
                num_classes=num_classes,
            )
        top_k = min(5, num_classes)
        self.val_acc = MulticlassAccuracy(num_classes, top_k=1, average="micro")
        self.val_acc5 = MulticlassAccuracy(num_classes, top_k=top_k, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, top_k=1, average="micro")
        self.test_acc5 = MulticlassAccuracy(num_classes, top_k=top_k, average="micro")

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
        acc, acc5 = getattr(self, f"{stage}_acc"), getattr(self, f"{stage}_acc5")
        acc.update(logits, labels)
        acc5.update(logits, labels)
        B = images.shape[0]
        self.log(f"{stage}/loss", loss, prog_bar=True, batch_size=B, sync_dist=True)
        self.log(f"{stage}/acc", acc, prog_bar=True, batch_size=B)
        self.log(f"{stage}/acc5", acc5, batch_size=B)

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

    def check_compatible(self, meta: dict[str, Any]) -> None:
        saved = meta.get("class_names")
        if saved and list(saved) != self.class_names:
            raise ValueError(
                f"checkpoint classes ({len(saved)}: {', '.join(saved[:4])}...) differ from the data module's "
                f"({len(self.class_names)}: {', '.join(self.class_names[:4])}...)"
            )

    def checkpoint_meta(self) -> dict[str, Any]:
        return {
            **super().checkpoint_meta(),
            "class_names": self.class_names,
            "preprocessing": self.hparams.preprocessing,
        }
