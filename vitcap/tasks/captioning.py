"""CaptioningTask: teacher-forced training of a Captioner, caption metrics on validation and test."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor
from torchmetrics import MeanMetric

from vitcap.generate import GenerationConfig, generate_from_memory
from vitcap.metrics import CaptionMetrics
from vitcap.models.registry import create_captioner
from vitcap.tasks.base import VitcapTask
from vitcap.tokenizer import CaptionTokenizer

# Metrics on pycocoevalcap's 0-1 scale (CIDEr-D: its x10 scale) are logged x100, the scale papers report.
PERCENT_METRICS = ("bleu1", "bleu2", "bleu3", "bleu4", "rouge_l", "cider_d")


def caption_loss(logits: Tensor, targets: Tensor, pad_id: int, label_smoothing: float = 0.0) -> tuple[Tensor, Tensor]:
    """Mean token cross-entropy over non-pad targets.

    Args:
        logits: (M, T, V) next-token logits.
        targets: (M, T) token ids shifted by one against the decoder input; pads are ignored.
        pad_id: Padding id.
        label_smoothing: Label smoothing of the cross-entropy.

    Returns:
        The mean loss and the number of target tokens it averages over.
    """
    M, T, V = logits.shape
    loss = F.cross_entropy(
        logits.reshape(M * T, V),  # (M*T, V)
        targets.reshape(M * T),  # (M*T,)
        ignore_index=pad_id,
        label_smoothing=label_smoothing,
    )
    return loss, (targets != pad_id).sum()


class CaptioningTask(VitcapTask):
    """Image captioning: encoder -> cross-attention decoder, trained with teacher forcing.

    Args:
        preset: Named model preset from `vitcap.models.registry` (e.g. "demo", "toy", "vit-s16").
        encoder: Overrides of the preset's encoder settings (e.g. `{kind: cnn, model_name: resnet18}`).
        decoder: Overrides of the preset's decoder settings (e.g. `{depth: 4, cross_attn: additive}`).
        vocab_size: Vocabulary size (linked from the data module).
        pad_id: Padding id (linked from the data module).
        bos_id: Begin-of-sequence id (linked from the data module).
        eos_id: End-of-sequence id (linked from the data module).
        tokenizer: Serialised tokenizer (linked from the data module; travels inside the checkpoint).
        img_size: Input image size (linked from the data module).
        preprocessing: Evaluation preprocessing (linked from the data module; travels inside the checkpoint).
        label_smoothing: Label smoothing of the token cross-entropy.
        generation: Decoding used for validation/test metrics and predict (greedy by default).
        eval_generate: Generate captions and compute caption metrics during validation.
        num_logged_captions: Captions of fixed validation images printed and saved after each validation.
    """

    task_name = "captioning"

    def __init__(
        self,
        preset: str = "tiny",
        encoder: dict[str, Any] | None = None,
        decoder: dict[str, Any] | None = None,
        vocab_size: int = 0,
        pad_id: int = 0,
        bos_id: int = 1,
        eos_id: int = 2,
        tokenizer: str | None = None,
        img_size: int | None = None,
        preprocessing: dict[str, Any] | None = None,
        label_smoothing: float = 0.0,
        generation: dict[str, Any] | None = None,
        eval_generate: bool = True,
        num_logged_captions: int = 4,
        lr: float = 1e-3,
        weight_decay: float = 0.05,
        warmup: float = 0.05,
        min_lr_ratio: float = 0.01,
        optimizer: OptimizerCallable | None = None,
        scheduler: LRSchedulerCallable | None = None,
        compile: bool = False,
        monitor: str = "val/bleu4",
        monitor_mode: str = "max",
    ) -> None:
        super().__init__(lr, weight_decay, warmup, min_lr_ratio, optimizer, scheduler, compile, monitor, monitor_mode)
        if vocab_size <= 0:
            raise ValueError("model.vocab_size must be positive: link it from a caption data module or set it")
        self.save_hyperparameters(ignore=["optimizer", "scheduler"])
        encoder = dict(encoder or {})
        if img_size is not None:
            encoder.setdefault("img_size", img_size)
        self.model = create_captioner(preset, vocab_size=vocab_size, encoder=encoder, decoder=decoder, pad_id=pad_id)
        self.pad_id, self.bos_id, self.eos_id = pad_id, bos_id, eos_id
        self.tokenizer = CaptionTokenizer.from_json(tokenizer) if tokenizer else None
        self.generation = GenerationConfig(**(generation or {}))
        self.label_smoothing = label_smoothing
        self.eval_generate = eval_generate
        self.num_logged_captions = num_logged_captions
        self.val_loss = MeanMetric()
        self.test_loss = MeanMetric()
        self.val_metrics = CaptionMetrics()
        self.test_metrics = CaptionMetrics()
        self._samples: list[tuple[str, str, list[str]]] = []

    # ------------------------------------------------------------------------------------------------------ steps
    def compile_targets(self) -> list[torch.nn.Module]:
        # The steps call `model.encode` and `model.forward_memory`, never `model(...)`: compiling the Captioner
        # itself would compile nothing that training runs. Encoder and decoder are called as modules.
        return [self.model.encoder, self.model.decoder]

    def forward(self, images: Tensor, tokens: Tensor) -> Tensor:
        return self.model(images, tokens)

    def _loss(self, batch: dict[str, Any], memory: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        tokens = batch["tokens"]
        if memory is None:
            memory = self.model.encode(batch["images"])
        # The label shift lives here, not in the model: input t predicts token t+1; pads are ignored.
        logits = self.model.forward_memory(memory, tokens[:, :-1], batch.get("caption_index"))
        loss, ntokens = caption_loss(logits, tokens[:, 1:], self.pad_id, self.label_smoothing)
        return loss, ntokens, memory

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        loss, _, _ = self._loss(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["tokens"].shape[0])
        return loss

    def _eval_step(self, batch: dict[str, Any], stage: str) -> None:
        loss, ntokens, memory = self._loss(batch)
        # Token-weighted mean, so perplexity is that of the whole split, not a mean of batch perplexities.
        getattr(self, f"{stage}_loss").update(loss, ntokens)
        if stage == "val" and not self.eval_generate:
            return
        captions = self._captions_from_memory(memory)
        getattr(self, f"{stage}_metrics").update(captions, batch["references"])
        if stage == "val" and len(self._samples) < self.num_logged_captions:
            for image_id, caption, refs in zip(batch["ids"], captions, batch["references"]):
                if len(self._samples) < self.num_logged_captions:
                    self._samples.append((str(image_id), caption, refs))

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def _epoch_end(self, stage: str) -> None:
        loss_metric = getattr(self, f"{stage}_loss")
        loss = loss_metric.compute()
        loss_metric.reset()
        # compute() already gathered every process's state, so these values are global; sync_dist=True only
        # averages equal values (and keeps Lightning from warning about unsynced epoch-level logging under DDP).
        self.log(f"{stage}/loss", loss, prog_bar=True, sync_dist=True)
        self.log(f"{stage}/ppl", torch.exp(loss), sync_dist=True)
        if stage == "val" and not self.eval_generate:
            return
        metrics = getattr(self, f"{stage}_metrics")
        values = metrics.compute()
        metrics.reset()
        for name, value in values.items():
            value = torch.as_tensor(value, dtype=torch.float32)
            value = value * 100 if name in PERCENT_METRICS else value
            self.log(f"{stage}/{name}", value, prog_bar=name == "bleu4", sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        self._epoch_end("val")
        if self._samples and not self.trainer.sanity_checking:
            self._report_samples()
        self._samples = []

    def on_test_epoch_end(self) -> None:
        self._epoch_end("test")

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> list[dict[str, Any]]:
        memory = self.model.encode(batch["images"])
        hyps = generate_from_memory(
            self.model, memory, self.generation, bos_id=self.bos_id, eos_id=self.eos_id, pad_id=self.pad_id
        )
        out = []
        for image_id, nbest in zip(batch["ids"], hyps):
            best = nbest[0]
            out.append(
                {
                    "image": str(image_id),
                    "caption": self.decode(best.tokens),
                    "score": float(best.token_logprobs.mean()) if len(best.token_logprobs) else 0.0,
                }
            )
        return out

    # ---------------------------------------------------------------------------------------------------- helpers
    def decode(self, ids: Tensor | list[int]) -> str:
        if self.tokenizer is None:
            raise ValueError("this captioning model has no tokenizer (model.tokenizer is empty)")
        ids = ids.tolist() if isinstance(ids, Tensor) else list(ids)
        return self.tokenizer.decode(ids)

    @torch.no_grad()
    def _captions_from_memory(self, memory: Tensor) -> list[str]:
        hyps = generate_from_memory(
            self.model, memory, self.generation, bos_id=self.bos_id, eos_id=self.eos_id, pad_id=self.pad_id
        )
        return [self.decode(nbest[0].tokens) for nbest in hyps]

    def _report_samples(self) -> None:
        lines = [f"epoch {self.current_epoch}: captions of fixed validation images"]
        for image_id, caption, refs in self._samples:
            lines.append(f"  {Path(image_id).name}\t{caption}\t(ref: {refs[0] if refs else ''})")
        text = "\n".join(lines)
        rank_zero_info(text)
        log_dir = getattr(self.logger, "log_dir", None) if self.logger is not None else None
        if log_dir and self.trainer.is_global_zero:
            Path(log_dir).mkdir(parents=True, exist_ok=True)
            with open(Path(log_dir) / "val_captions.txt", "a", encoding="utf-8") as f:
                f.write(text + "\n")

    def check_compatible(self, meta: dict[str, Any]) -> None:
        saved = meta.get("tokenizer")
        if saved and self.hparams.tokenizer and saved != self.hparams.tokenizer:
            old, new = CaptionTokenizer.from_json(saved), CaptionTokenizer.from_json(self.hparams.tokenizer)
            raise ValueError(
                f"checkpoint vocabulary ({old.vocab_size} tokens) differs from the data module's "
                f"({new.vocab_size} tokens): pass the checkpoint's tokenizer with --data.tokenizer, or train anew"
            )

    def checkpoint_meta(self) -> dict[str, Any]:
        return {
            **super().checkpoint_meta(),
            "tokenizer": self.hparams.tokenizer,
            "preprocessing": self.hparams.preprocessing,
            "special_ids": {"pad": self.pad_id, "bos": self.bos_id, "eos": self.eos_id},
        }
