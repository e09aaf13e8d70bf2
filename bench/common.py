"""Helpers shared by the training benchmarks: machine facts, interleaved timing, the Hugging Face reference model.

Not part of the package: the benchmarks import it as a sibling module (``python bench/train_step.py`` puts
``bench/`` on ``sys.path``). Nothing here imports ``transformers`` at module level, so ``--skip-hf`` runs without it.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from collections.abc import Callable

import torch


def cpu_name() -> str:
    """The CPU model string (``/proc/cpuinfo``), or what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict:
    """What makes training figures from different machines comparable: CPU model, the instruction-set flags that
    decide GEMM speed (avx2, avx512*, amx*), threads, torch, and the CPU linear backend training picks here
    (`VITCAP_LINEAR`, or the choices cached for this CPU, thread count and torch version)."""
    from vitcap.training.linear_backend import cached_backends, cpu_facts

    facts = cpu_facts()
    return {
        "cpu": facts["cpu"],
        "cpu_flags": facts["flags"],
        "threads": facts["threads"],
        "torch": facts["torch"],
        "linear_backend": {"setting": os.environ.get("VITCAP_LINEAR", "auto"), "cached_choices": cached_backends()},
    }


def load_avg() -> float:
    """1-minute load average: other processes on a shared machine skew wall-clock timings."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return -1.0


def synchronize(device: torch.device) -> None:
    """Wait for queued kernels, so wall time covers the work and not only its launch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved(
    fns: dict[str, Callable[[], object]], repeats: int, warmup: int, device: torch.device
) -> dict[str, list[float]]:
    """Wall seconds of every ``fn()`` over ``repeats`` rounds, after ``warmup`` untimed rounds.

    The functions take turns (one call of each per round, the order rotating every round), so a load spike from
    other processes on a shared machine hits every variant alike instead of skewing one ratio.
    """
    names = list(fns)
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(warmup + repeats):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            synchronize(device)
            start = time.perf_counter()
            fns[name]()
            synchronize(device)
            if round_ >= warmup:
                times[name].append(time.perf_counter() - start)
    return times


def median(values: list[float]) -> float:
    return statistics.median(values)


def paired_ratio(numerator: list[float], denominator: list[float]) -> float:
    """Median of the per-round ratios: robust to load that drifts between rounds."""
    return statistics.median(a / b for a, b in zip(numerator, denominator, strict=True))


def build_hf_captioner(
    *,
    image_size: int,
    patch_size: int,
    encoder_width: int,
    encoder_depth: int,
    encoder_heads: int,
    encoder_mlp: int,
    vocab_size: int,
    decoder_width: int,
    decoder_depth: int,
    decoder_heads: int,
    decoder_mlp: int,
    max_positions: int,
    pad_id: int = 0,
    bos_id: int = 1,
    eos_id: int = 2,
) -> torch.nn.Module:
    """A random-init ``VisionEncoderDecoderModel`` (``ViTModel`` + ``BertLMHeadModel`` with cross-attention).

    Dropout is off, as in vitcap's defaults, so both models do the same arithmetic per step.
    """
    try:
        from transformers import BertConfig, VisionEncoderDecoderConfig, VisionEncoderDecoderModel, ViTConfig
    except ImportError:
        sys.exit("the Hugging Face comparison needs transformers: pip install -e '.[bench]', or pass --skip-hf")
    enc_cfg = ViTConfig(
        hidden_size=encoder_width,
        num_hidden_layers=encoder_depth,
        num_attention_heads=encoder_heads,
        intermediate_size=encoder_mlp,
        image_size=image_size,
        patch_size=patch_size,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    dec_cfg = BertConfig(
        vocab_size=vocab_size,
        hidden_size=decoder_width,
        num_hidden_layers=decoder_depth,
        num_attention_heads=decoder_heads,
        intermediate_size=decoder_mlp,
        max_position_embeddings=max_positions,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        is_decoder=True,
        add_cross_attention=True,
        pad_token_id=pad_id,
        bos_token_id=bos_id,
        eos_token_id=eos_id,
    )
    config = VisionEncoderDecoderConfig.from_encoder_decoder_configs(enc_cfg, dec_cfg)
    config.decoder_start_token_id = bos_id
    config.pad_token_id = pad_id
    config.eos_token_id = eos_id
    return VisionEncoderDecoderModel(config=config)
