"""CaptioningTask: training of a Captioner (teacher-forced cross-entropy or self-critical), caption metrics on
validation and test."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor
from torchmetrics import MeanMetric

from vitcap.checkpoint import CheckpointMeta, plain
from vitcap.errors import CheckpointError, ConfigError
from vitcap.generate import GenerationConfig, GenerationOverrides, generate_from_memory
from vitcap.metrics import CaptionMetrics
from vitcap.models.registry import (
    DecoderConfig,
    DecoderOverrides,
    EncoderConfig,
    EncoderOverrides,
    ModelSpec,
    resolve_configs,
)
from vitcap.overrides import apply_overrides
from vitcap.tasks.base import VitcapTask, with_data_image_size
from vitcap.tasks.optim import OptimConfig
from vitcap.tasks.scst import ScstConfig, ScstReward, scst_step
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

    What the data decides is linked from the data module by the CLI and never repeated in a config: the
    tokenizer (vocabulary and special ids), the caption length and the preprocessing (image size). A config that
    also sets `encoder.img_size` or `decoder.max_len` to a value that contradicts the data gets a one-line error.

    Args:
        preset: Named model preset from `vitcap.models.registry.PRESETS` (e.g. "tiny", "cnn-tiny", "vit-s16").
        encoder: Encoder settings that replace the preset's (e.g. `{kind: cnn, model_name: resnet18}`).
        decoder: Decoder settings that replace the preset's (e.g. `{depth: 4, cross_attn: additive}`).
        tokenizer: Serialised tokenizer (linked from the data module; travels inside the checkpoint). It defines
            the vocabulary size and the special ids.
        max_length: Caption rows the data produces, counting BOS and EOS (linked from the data module). It sizes
            the decoder's learned position table and is the default decoding length (`max_length - 1` new tokens,
            EOS included).
        preprocessing: Evaluation preprocessing (linked from the data module; travels inside the checkpoint); its
            `img_size` and `in_chans` are the encoder's.
        generation: Decoding used for validation/test metrics and predict (greedy by default); fields not set keep
            `GenerationConfig`'s defaults, and `max_length` defaults to `max_length - 1` of the data.
        label_smoothing: Label smoothing of the token cross-entropy.
        eval_generate: Generate captions and compute caption metrics during validation.
        num_logged_captions: Captions of fixed validation images printed and saved after each validation.
        objective: "xe": token cross-entropy with teacher forcing; "scst": self-critical sequence training, which
            samples captions and raises the probability of those whose CIDEr-D beats a baseline
            (`vitcap.tasks.scst`). Start SCST from a cross-entropy model (`init_from`); it needs a caption data
            module (the training references and their document frequencies are read once in `setup`).
        scst: Settings of the SCST objective (`ScstConfig`: samples per image, baseline, temperature, ...).
        optim, optimizer, scheduler, compile, monitor, init_from, freeze_encoder: See `VitcapTask`.
    """

    task_name = "captioning"

    def __init__(
        self,
        preset: str = "tiny",
        encoder: EncoderOverrides | None = None,
        decoder: DecoderOverrides | None = None,
        tokenizer: str | None = None,
        max_length: int | None = None,
        preprocessing: dict[str, Any] | None = None,
        generation: GenerationOverrides | None = None,
        label_smoothing: float = 0.0,
        eval_generate: bool = True,
        num_logged_captions: int = 4,
        objective: Literal["xe", "scst"] = "xe",
        scst: ScstConfig | None = None,
        optim: OptimConfig | None = None,
        optimizer: OptimizerCallable | None = None,
        scheduler: LRSchedulerCallable | None = None,
        compile: bool = False,
        monitor: str = "val/bleu4",
        init_from: str | None = None,
        freeze_encoder: bool | int = False,
    ) -> None:
        super().__init__(optim, optimizer, scheduler, compile, monitor, init_from, freeze_encoder)
        if objective not in ("xe", "scst"):
            raise ConfigError(f"expected 'xe' or 'scst', got {objective!r}", key="model.objective")
        if scst is not None and objective != "scst":
            raise ConfigError(
                "SCST settings are given but model.objective is 'xe': set model.objective: scst, or drop model.scst",
                key="model.scst",
            )
        if not tokenizer:
            raise ConfigError(
                "a captioner needs a tokenizer: link it from a caption data module", key="model.tokenizer"
            )
        self.save_hyperparameters(ignore=["optimizer", "scheduler"])
        self.tokenizer = CaptionTokenizer.from_json(tokenizer)
        self.pad_id, self.bos_id, self.eos_id = self.tokenizer.pad_id, self.tokenizer.bos_id, self.tokenizer.eos_id
        enc_cfg, dec_cfg = resolve_configs(preset, encoder, decoder)
        enc_cfg = with_data_image_size(enc_cfg, encoder, preprocessing)
        # Decoding defaults to the data's caption length: rows of max_length hold BOS + max_length - 1 new tokens.
        base = GenerationConfig(max_length=max_length - 1) if max_length else GenerationConfig()
        generation = apply_overrides(base, generation, "model.generation")
        rows = max(max_length or 0, generation.max_length + 1)  # training rows and decoded rows (BOS + new tokens)
        if dec_cfg.pos_embed == "learned" and rows > dec_cfg.max_len:
            if decoder is not None and getattr(decoder, "max_len", None) is not None:
                raise ConfigError(
                    f"{dec_cfg.max_len} learned positions cannot hold captions of {rows} tokens (data.max_length / "
                    "model.generation.max_length); leave it unset to follow the data",
                    key="model.decoder.max_len",
                )
            dec_cfg = dataclasses.replace(dec_cfg, max_len=rows)
        self.spec = self.build_spec(enc_cfg, dec_cfg)
        self.model = self.spec.build()
        self.generation = generation
        self.label_smoothing = label_smoothing
        self.eval_generate = eval_generate
        self.num_logged_captions = num_logged_captions
        self.val_loss = MeanMetric()
        self.test_loss = MeanMetric()
        self.val_metrics = CaptionMetrics()
        self.test_metrics = CaptionMetrics()
        self._samples: list[tuple[str, str, list[str]]] = []
        self.objective = objective
        self.scst = scst if scst is not None else ScstConfig()
        if objective == "scst":
            self.scst.sampling(self.generation)  # a bad length fails now, not at the first step
        self.reward: ScstReward | None = None  # built in setup("fit") from the training references
        self._step_start = 0.0
        self._reward_seconds = 0.0
        size = enc_cfg.img_size or 224
        # Lightning's model summary counts FLOPs (torch's FlopCounter) on this example.
        self.example_input_array = (
            torch.zeros(1, enc_cfg.in_chans, size, size),
            torch.full((1, min(rows, 16)), self.bos_id, dtype=torch.long),
        )
        self.load_init_from()

    def build_spec(self, encoder: EncoderConfig, decoder: DecoderConfig) -> ModelSpec:
        """The resolved model `__init__` builds (the joint task adds a classification head)."""
        return ModelSpec(
            "captioner", encoder, decoder, vocab_size=self.tokenizer.vocab_size, pad_id=self.tokenizer.pad_id
        )

    # ------------------------------------------------------------------------------------------------------ steps
    def compile_targets(self) -> list[torch.nn.Module]:
        # The steps call `model.encode` and `model.forward_memory`, never `model(...)`: compiling the Captioner
        # itself would compile nothing that training runs. Encoder and decoder are called as modules.
        return [self.model.encoder, self.model.decoder]

    def training_example(self, batch_size: int) -> tuple[Tensor, ...]:
        images, _ = self.example_input_array
        length = max(1, (self.hparams.max_length or 17) - 1)  # decoder input rows: the caption without its EOS
        tokens = torch.full((batch_size, length), self.bos_id, dtype=torch.long)
        return images.expand(batch_size, *images.shape[1:]).contiguous(), tokens

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

    def setup(self, stage: str) -> None:
        if stage == "fit" and self.objective == "scst" and self.reward is None:
            self.reward = self._build_reward()

    def _build_reward(self) -> ScstReward:
        """The CIDEr-D reward over the data module's training references (document frequencies computed once)."""
        trainer = getattr(self, "_trainer", None)  # None outside `trainer.fit` (the `trainer` property raises)
        datamodule = getattr(trainer, "datamodule", None)
        sources = getattr(datamodule, "sources", None)
        train = sources.get("train") if isinstance(sources, dict) else None
        if train is None:
            raise ConfigError(
                "SCST rewards captions against the training references: use a caption data module "
                "(vitcap.data.CaptionDataModule) that has a training split",
                key="model.objective",
            )
        start = time.perf_counter()
        reward = ScstReward(self.tokenizer, train.ids, train.captions, self.scst.include_eos)
        rank_zero_info(
            f"SCST reward: CIDEr-D document frequencies of {reward.cider.num_images} training images "
            f"({reward.cider.num_ngrams} n-grams) in {time.perf_counter() - start:.1f}s"
        )
        return reward

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        if self.objective == "scst":
            return self._scst_step(batch)
        loss, _, _ = self._loss(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["tokens"].shape[0])
        return loss

    def _scst_step(self, batch: dict[str, Any]) -> Tensor:
        if self.reward is None:  # trained outside `trainer.fit`'s setup (a custom loop)
            self.reward = self._build_reward()
        images = batch["images"]
        memory = self.model.encode(images)
        out = scst_step(
            self.model,
            memory,
            batch["ids"],
            self.reward,
            self.scst,
            self.generation,
            bos_id=self.bos_id,
            eos_id=self.eos_id,
            pad_id=self.pad_id,
        )
        B = images.shape[0]
        self._reward_seconds = out.reward_seconds
        loss = out.loss
        if self.scst.xe_weight > 0:  # mixed objective: the references' cross-entropy, on the same image memory
            xe, _, _ = self._loss(batch, memory)
            loss = loss + self.scst.xe_weight * xe
            self.log("train/xe_loss", xe.detach(), batch_size=B)
        stats = {  # rewards x100: the scale of val/cider_d
            "loss": loss.detach(),
            "scst_reward": out.rewards.mean() * 100,
            "scst_reward_std": out.rewards.std() * 100,
            "scst_baseline": out.baselines.mean() * 100,
            "scst_advantage": out.advantages.mean() * 100,
            "scst_sample_length": out.sample_length.mean(),
            "scst_distinct": torch.tensor(out.distinct),
        }
        for name, value in stats.items():
            self.log(f"train/{name}", value, prog_bar=name in ("loss", "scst_reward"), batch_size=B)
        return loss

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self._step_start = time.perf_counter()

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        # The whole step (forward, backward, optimizer), so the share says what the reward costs in training time.
        if self.objective == "scst" and self._step_start:
            step = time.perf_counter() - self._step_start
            self.log("train/scst_reward_time_share", self._reward_seconds / max(step, 1e-9), batch_size=1)

    def _eval_step(self, batch: dict[str, Any], stage: str, memory: Tensor | None = None) -> None:
        loss, ntokens, memory = self._loss(batch, memory)
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

    def shared_parts(self, meta: CheckpointMeta) -> tuple[str, ...]:
        if meta.task == "joint" or meta.task == "captioning":  # a caption decoder: same vocabulary, or encoder only
            if not meta.tokenizer or meta.tokenizer == self.hparams.tokenizer:
                return ("encoder.", "proj.", "decoder.")
        return ("encoder.",)

    def check_compatible(self, meta: CheckpointMeta) -> None:
        saved = meta.tokenizer
        if saved and saved != self.hparams.tokenizer:
            old = CaptionTokenizer.from_json(saved)
            raise CheckpointError(
                f"checkpoint vocabulary ({old.vocab_size} tokens) differs from the data module's "
                f"({self.tokenizer.vocab_size} tokens): pass the checkpoint's tokenizer with --data.tokenizer, "
                "or train anew"
            )

    def checkpoint_meta(self) -> CheckpointMeta:
        meta = super().checkpoint_meta()
        meta.tokenizer = self.hparams.tokenizer
        meta.preprocessing = plain(self.hparams.preprocessing) or {}
        meta.generation = plain(self.generation)
        return meta
