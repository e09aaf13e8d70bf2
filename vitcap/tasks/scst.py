"""Self-critical sequence training (SCST): optimise CIDEr-D of sampled captions directly.

Rennie et al. 2017 ("Self-critical sequence training for image captioning"), with the baseline of Luo 2020
("A better variant of self-critical sequence training"). One step, for a batch of B images:

1. the images are encoded once (`memory`, with gradient);
2. k captions per image are sampled through the KV-cache decoder (`vitcap.generate.sample`), without gradient
   (or, with `sample_method: beam`, the k best beams of a beam search, as the M2 Transformer's SCST);
3. each sample is rewarded with its sentence CIDEr-D against the image's training references (`ScstReward`: token
   ids -> COCO words -> n-grams, document frequencies from the training references, computed once);
4. baseline: the mean reward of the image's other k - 1 samples ("mean", default), or the reward of its greedy
   caption ("greedy", one more decoding pass);
5. one teacher-forced pass over all B x k samples gives their log-probabilities: the decoder reads the B images'
   memory through grouped cross-attention (rows `b*k .. b*k + k - 1` share image b's keys and values, projected
   once), so neither the encoder nor the key/value projections run k times;
6. loss = -sum(advantage x log p(token)) / number of sampled tokens (eos included), the normalisation of the
   self-critical code bases.

Rewards are per sample, so data-parallel ranks need no communication beyond the usual gradient all-reduce.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from vitcap.errors import ConfigError, DataError
from vitcap.generate import GenerationConfig, generate_from_memory
from vitcap.metrics.cider_reward import CiderDReward
from vitcap.metrics.words import EOS_WORD, CocoWords
from vitcap.models import Captioner
from vitcap.tokenizer import CaptionTokenizer

__all__ = ["ScstConfig", "ScstOutput", "ScstReward", "advantages", "scst_step"]

Baseline = Literal["mean", "greedy"]
SampleMethod = Literal["sample", "beam"]


@dataclass
class ScstConfig:
    """Settings of the self-critical objective (`model.objective: scst`).

    Attributes:
        num_samples: Captions sampled per image (k).
        sample_method: "sample" (default): k independent multinomial samples (Rennie et al.); "beam": the k best
            hypotheses of a beam search of width k (as the M2 Transformer's SCST), which refines the captions
            beam search returns when samples are far worse than them (a weakly trained model).
        baseline: "mean": each sample's baseline is the mean reward of the image's other k - 1 samples (Luo 2020;
            needs k >= 2); "greedy": the reward of the image's greedy caption (Rennie et al. 2017).
        temperature: Sampling temperature; 1 samples the model's own distribution (what the gradient assumes).
        max_length: Most new tokens per sample, eos included; None follows `model.generation.max_length`.
        include_eos: Count the end-of-caption token as a word of every sample and reference, as the self-critical
            code bases do: without it, captions cut before their last words ("a dog runs on the") lose nothing.
        xe_weight: Weight of the cross-entropy of the batch's reference captions added to the SCST loss (the
            mixed objective of Paulus et al. 2018); 0 (default) is pure SCST. It keeps a weakly grounded model
            from collapsing onto one generic caption; the images are still encoded once.
    """

    num_samples: int = 5
    sample_method: SampleMethod = "sample"
    baseline: Baseline = "mean"
    temperature: float = 1.0
    max_length: int | None = None
    include_eos: bool = True
    xe_weight: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.num_samples, int) or self.num_samples < 1:
            raise ConfigError(
                f"expected a number of samples >= 1, got {self.num_samples!r}", key="model.scst.num_samples"
            )
        if self.sample_method not in ("sample", "beam"):
            raise ConfigError(
                f"expected 'sample' or 'beam', got {self.sample_method!r}", key="model.scst.sample_method"
            )
        if self.baseline not in ("mean", "greedy"):
            raise ConfigError(f"expected 'mean' or 'greedy', got {self.baseline!r}", key="model.scst.baseline")
        if self.baseline == "mean" and self.num_samples < 2:
            raise ConfigError(
                f"the 'mean' baseline averages the other samples: needs >= 2, got {self.num_samples} "
                "(or set model.scst.baseline: greedy)",
                key="model.scst.num_samples",
            )
        if not self.temperature > 0:
            raise ConfigError(f"expected > 0, got {self.temperature!r}", key="model.scst.temperature")
        if self.max_length is not None and (not isinstance(self.max_length, int) or self.max_length < 1):
            raise ConfigError(f"expected >= 1 tokens or null, got {self.max_length!r}", key="model.scst.max_length")
        if not self.xe_weight >= 0:
            raise ConfigError(f"expected >= 0, got {self.xe_weight!r}", key="model.scst.xe_weight")

    def sampling(self, generation: GenerationConfig) -> GenerationConfig:
        """The sampling `GenerationConfig`: k samples (or beams) per image, no logit processors (the loss scores the
        samples under the model's own distribution), the length limit of `generation` unless `max_length` is set."""
        if self.sample_method == "beam":
            return GenerationConfig(
                max_length=self.max_length or generation.max_length,
                num_beams=self.num_samples,
                num_return_sequences=self.num_samples,
                length_penalty=generation.length_penalty,
            )
        return GenerationConfig(
            max_length=self.max_length or generation.max_length,
            do_sample=True,
            num_return_sequences=self.num_samples,
            temperature=self.temperature,
        )

    def greedy(self, generation: GenerationConfig) -> GenerationConfig:
        """The greedy decoding of the "greedy" baseline (same length limit as the samples)."""
        return GenerationConfig(max_length=self.max_length or generation.max_length)


class ScstReward:
    """CIDEr-D rewards of captions given as token ids, against each training image's references.

    The references are COCO-tokenised once, as the evaluation does (`vitcap.metrics.words.CocoWords.of_text`);
    samples are mapped from ids to the same words without decoding them (`CocoWords.of_ids`), so a reward equals
    the evaluation's sentence CIDEr-D of the decoded caption with the training set's document frequencies (plus
    the eos word when `include_eos`).

    Args:
        tokenizer: The caption tokenizer of the model.
        image_ids: Ids of the training images (the `ids` of training batches).
        references: Raw reference captions of each training image; their document frequencies are the reward's.
        include_eos: Count eos as a word of samples and references (`ScstConfig.include_eos`).
    """

    def __init__(
        self,
        tokenizer: CaptionTokenizer,
        image_ids: Sequence[str],
        references: Sequence[Sequence[str]],
        include_eos: bool = True,
    ) -> None:
        if len(image_ids) != len(references):
            raise ValueError(f"got {len(image_ids)} image ids but {len(references)} reference lists")
        self.eos_id = tokenizer.eos_id
        self.include_eos = include_eos
        self.words = CocoWords(
            tokenizer.decode, tokenizer.vocab_size, tokenizer.eos_id, (tokenizer.pad_id, tokenizer.bos_id)
        )
        end = [EOS_WORD] if include_eos else []
        corpus = [[self.words.of_text(c) + end for c in refs] for refs in references]
        self.cider = CiderDReward(corpus)
        self._index = {str(image_id): i for i, image_id in enumerate(image_ids)}

    def words_of(self, ids: Sequence[int]) -> list[int]:
        """The scored words of a caption given as token ids (eos word last when it ended and `include_eos`)."""
        words = self.words.of_ids(ids)
        if self.include_eos and self.eos_id in ids:
            words.append(EOS_WORD)
        return words

    def __call__(self, image_ids: Sequence[str], captions: Sequence[Sequence[int]], group: int) -> list[float]:
        """Rewards of `group` consecutive captions per image (`len(captions) == group * len(image_ids)`)."""
        if len(captions) != group * len(image_ids):
            raise ValueError(f"expected {group} captions for each of {len(image_ids)} images, got {len(captions)}")
        out: list[float] = []
        for b, image_id in enumerate(image_ids):
            index = self._index.get(str(image_id))
            if index is None:
                raise DataError(f"training image {image_id!r} has no references in the reward's corpus")
            out += self.cider.scores(index, [self.words_of(c) for c in captions[b * group : (b + 1) * group]])
        return out


def advantages(rewards: Tensor, baseline: Baseline, greedy: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Advantages and baselines `(B, k)` of rewards `(B, k)`.

    Args:
        rewards: Rewards of k samples of B images.
        baseline: "mean": the mean of the image's other k - 1 rewards; "greedy": `greedy (B,)`, the reward of each
            image's greedy caption.
        greedy: Greedy-caption rewards `(B,)`, for the "greedy" baseline.
    """
    B, k = rewards.shape
    if baseline == "mean":
        if k < 2:
            raise ValueError("the 'mean' baseline needs at least 2 samples per image")
        base = (rewards.sum(dim=1, keepdim=True) - rewards) / (k - 1)  # (B, k) leave-one-out mean
    else:
        if greedy is None:
            raise ValueError("the 'greedy' baseline needs the greedy captions' rewards")
        base = greedy[:, None].expand(B, k)
    return rewards - base, base


@dataclass
class ScstOutput:
    """One SCST step: the loss to back-propagate and what is logged.

    Attributes:
        loss: Scalar policy-gradient loss.
        rewards: `(B, k)` sample rewards; `baselines`, `advantages` the same shape.
        sample_length: `(B*k,)` generated tokens per sample, eos included.
        distinct: Mean over images of (distinct samples / k).
        reward_seconds: Wall time spent computing rewards (samples and, for "greedy", greedy captions).
    """

    loss: Tensor
    rewards: Tensor
    baselines: Tensor
    advantages: Tensor
    sample_length: Tensor
    distinct: float
    reward_seconds: float


def _rows(hypotheses: Sequence[Sequence], eos_id: int, k: int) -> list[list[int]]:
    """Token ids of k hypotheses per image, eos appended where the caption ended, image-major.

    Beam search can return fewer than k distinct captions; the last one is repeated (an equal caption gets an
    equal reward, so it adds nothing but weight).
    """
    rows = []
    for hyps in hypotheses:
        image = [list(h.tokens) + ([eos_id] if h.ended else []) for h in hyps[:k]]
        rows += image + [image[-1]] * (k - len(image))
    return rows


def scst_step(
    model: Captioner,
    memory: Tensor,
    image_ids: Sequence[str],
    reward: ScstReward,
    config: ScstConfig,
    generation: GenerationConfig,
    *,
    bos_id: int,
    eos_id: int,
    pad_id: int,
) -> ScstOutput:
    """Sample, reward and score k captions per image; return the self-critical loss.

    Args:
        model: The captioner (in training mode: samples are drawn from the policy being trained).
        memory: `model.encode(images)`, `(B, N, Dm)`, with gradient.
        image_ids: The B images' ids (keys of `reward`'s references).
        reward: The CIDEr-D reward.
        config: SCST settings.
        generation: The task's decoding settings (their length limit is the samples' unless `config` sets one).
        bos_id: Start token.
        eos_id: End token.
        pad_id: Padding token.
    """
    B, k = memory.shape[0], config.num_samples
    detached = memory.detach()
    sampled = generate_from_memory(
        model, detached, config.sampling(generation), bos_id=bos_id, eos_id=eos_id, pad_id=pad_id
    )
    rows = _rows(sampled.hypotheses, eos_id, k)
    if len(rows) != B * k:
        raise RuntimeError(f"sampling returned {len(rows)} captions for {B} images x {k} samples")
    start = time.perf_counter()
    rewards = torch.tensor(reward(image_ids, rows, k), dtype=torch.float32, device=memory.device).view(B, k)
    reward_seconds = time.perf_counter() - start
    greedy = None
    if config.baseline == "greedy":
        modes = {m: m.training for m in model.decoder.modules()}
        model.decoder.eval()  # the test-time caption is the baseline ("self-critical"); the memory is computed
        try:
            best = generate_from_memory(
                model, detached, config.greedy(generation), bos_id=bos_id, eos_id=eos_id, pad_id=pad_id
            )
        finally:
            for module, training in modes.items():  # each module's own mode (a frozen part may stay in eval)
                module.training = training
        start = time.perf_counter()
        greedy_rows = _rows(best.hypotheses, eos_id, 1)
        greedy = torch.tensor(reward(image_ids, greedy_rows, 1), dtype=torch.float32, device=memory.device)
        reward_seconds += time.perf_counter() - start
    advantage, baseline = advantages(rewards, config.baseline, greedy)

    # Teacher-forced log-probabilities of the samples: [bos] + sample in, sample (eos included) as targets.
    length = torch.tensor([len(r) for r in rows], device=memory.device)
    T = int(length.max())
    tokens = torch.full((B * k, T + 1), pad_id, dtype=torch.long)
    tokens[:, 0] = bos_id
    for i, r in enumerate(rows):
        tokens[i, 1 : len(r) + 1] = torch.tensor(r, dtype=torch.long)
    tokens = tokens.to(memory.device)
    # B*k rows against B images: grouped cross-attention, the k samples of image b are rows b*k .. b*k + k - 1.
    logits = model.decoder(tokens[:, :-1], memory)  # (B*k, T, V)
    targets = tokens[:, 1:]  # (B*k, T)
    M, T, V = logits.shape
    # -cross_entropy is the target log-probability; one fused op (no (M, T, V) log-softmax kept for backward).
    nll = F.cross_entropy(logits.float().reshape(M * T, V), targets.reshape(M * T), reduction="none")  # (M*T,)
    logprobs = -nll.view(M, T)  # (B*k, T)
    mask = (targets != pad_id).float()
    loss = -(advantage.reshape(B * k, 1) * logprobs * mask).sum() / mask.sum().clamp(min=1.0)
    distinct = sum(len({tuple(r) for r in rows[b * k : (b + 1) * k]}) for b in range(B)) / (B * k)
    return ScstOutput(loss, rewards, baseline, advantage, length.float(), distinct, reward_seconds)
