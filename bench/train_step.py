"""Training speed of the captioner: vitcap vs Hugging Face, Lightning vs a plain loop, data loading vs the model.

Prints one JSON line. Three sections, each measured side by side in one process (interleaved rounds, medians,
per-round ratios), so a machine shared with other work skews every variant alike:

- ``model``: images/s of one training step (forward + backward + AdamW step) of the vitcap captioner, of the
  same code path as it was before the speed fixes (``vitcap_before``: MKL sgemm for every linear layer, always
  gathering memory rows, torch's default for-loop AdamW, NCHW convolutions), and of a Hugging Face ``VisionEncoderDecoderModel`` (``ViTModel`` + ``BertLMHeadModel``
  with cross-attention) of equal width, depth, heads, MLP size, image/patch size, vocabulary and caption length,
  random init, dropout off, the same loss, the same AdamW (vitcap's, fused where torch has one) and the same batch.
  ``--device cuda`` adds model FLOPs utilisation: FLOPs of one step from ``torch.utils.flop_counter`` over the
  peak of ``--peak-tflops``.
- ``lightning``: the vitcap model trained by ``Trainer.fit`` with ``CaptioningTask`` (no logger, checkpoints,
  progress bar, validation or caption generation) vs a plain PyTorch loop with the same model, loss,
  optimizer, schedule and data loader (built-in shapes); steady-state seconds per step, data loading included.
- ``data``: JPEG decode + augmentation throughput of ``CaptionDataModule``'s training loader on flickr8k-mini
  (``--data-dir``) with 0, 1 and 2 workers, against the model's consumption rate from ``model``.

    python bench/train_step.py --threads 2 --batch 64 --steps 2 --repeats 8

The Hugging Face model needs the ``bench`` extra (``pip install -e '.[bench]'``); ``--skip-hf`` leaves it out.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import build_hf_captioner, cpu_name, interleaved, load_avg, median, paired_ratio, synchronize  # noqa: E402

from vitcap.layers.gemm import onednn_linear_available  # noqa: E402
from vitcap.models import PRESETS, Captioner, CNNEncoder, ViTEncoder, create_captioner  # noqa: E402
from vitcap.tasks.captioning import caption_loss  # noqa: E402
from vitcap.tasks.optim import adamw, param_groups, warmup_cosine  # noqa: E402
from vitcap.training.linear_backend import (  # noqa: E402
    apply_linear_backend,
    choose_linear_backend,
    cpu_facts,
    measure,
    pick,
)

PAD, BOS, EOS = 0, 1, 2
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "flickr8k-mini"
SECTIONS = ("model", "lightning", "data")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    p.add_argument("--batch", type=int, default=64, help="images (one caption each) per training step")
    p.add_argument("--steps", type=int, default=2, help="training steps per timed round (model section)")
    p.add_argument("--lightning-steps", type=int, default=10, help="timed steps per Lightning / plain-loop run")
    p.add_argument("--repeats", type=int, default=8, help="timed rounds (medians are reported)")
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds first (oneDNN / compile warm-up)")
    p.add_argument("--model", default="tiny", help="vitcap model preset (ViT presets for the HF comparison)")
    p.add_argument("--stem", choices=("patch", "conv"), default="patch", help="ViT stem (conv: the demo config's)")
    p.add_argument("--vocab", type=int, default=1000, help="vocabulary size of the model section")
    p.add_argument("--caption-length", type=int, default=24, help="token rows T, [BOS] and [EOS] included")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--compile", action="store_true", help="torch.compile both models (and the Lightning task)")
    p.add_argument("--precision", choices=("32", "bf16-mixed"), default="32", help="Lightning-style precision")
    p.add_argument("--peak-tflops", type=float, default=989.0, help="MFU denominator (H100 SXM bf16 dense: 989)")
    p.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {SECTIONS}")
    p.add_argument("--skip-hf", action="store_true", help="leave out the Hugging Face model")
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA, help="flickr8k-mini (images/ + captions.txt)")
    p.add_argument("--loader-batches", type=int, default=8, help="batches timed per loader round")
    p.add_argument("--workers", default="0,1,2", help="loader worker counts to time")
    p.add_argument("--e2e-repeats", type=int, default=2, help="end-to-end training runs per worker count (0: none)")
    p.add_argument("--ablations", action="store_true", help="(kept for old command lines; the backends always run)")
    p.add_argument("--profile", action="store_true", help="print a torch.profiler table of the vitcap step to stderr")
    args = p.parse_args(argv)
    args.sections = [s for s in args.sections.split(",") if s]
    unknown = sorted(set(args.sections) - set(SECTIONS))
    if unknown:
        p.error(f"unknown sections {unknown}; choose from {SECTIONS}")
    if args.model not in PRESETS:
        p.error(f"unknown preset {args.model!r}; known: {', '.join(PRESETS)}")
    if args.stem == "conv" and not args.skip_hf:
        p.error("--stem conv has no Hugging Face counterpart (ViTModel embeds patches linearly); add --skip-hf")
    if args.caption_length < 3:
        p.error("--caption-length must be >= 3")
    return args


def encoder_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Encoder settings on top of the preset: ``--stem conv`` is what configs/demo/shapes_caption_vit.yaml trains."""
    return {"stem": args.stem} if args.stem != "patch" else {}


def autocast(args: argparse.Namespace) -> contextlib.AbstractContextManager:
    """The autocast context of ``--precision`` (what Lightning's ``bf16-mixed`` plugin wraps steps in)."""
    if args.precision == "bf16-mixed":
        return torch.autocast(args.device, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def random_captions(batch: int, length: int, vocab: int, generator: torch.Generator) -> Tensor:
    """Right-padded ``[BOS] words [EOS] [PAD]...`` rows ``(batch, length)``, lengths drawn like real captions."""
    lengths = torch.randint(max(3, length // 2), length + 1, (batch,), generator=generator)
    lengths[0] = length  # the longest row sets T, as in a collated batch
    tokens = torch.randint(EOS + 2, vocab, (batch, length), generator=generator)
    positions = torch.arange(length)
    tokens[:, 0] = BOS
    tokens[positions[None, :] == (lengths[:, None] - 1)] = EOS
    tokens[positions[None, :] >= lengths[:, None]] = PAD
    return tokens  # (B, T)


def model_img_size(model: Captioner, preset: str) -> int:
    if isinstance(model.encoder, ViTEncoder):
        return int(model.encoder.model.patch_embed.img_size[0])
    return PRESETS[preset].encoder.img_size or 224


# ------------------------------------------------------------------------------------------------------- model
def hf_like(model: Captioner, vocab: int, max_positions: int) -> torch.nn.Module:
    """The Hugging Face model with ``model``'s sizes."""
    if not isinstance(model.encoder, ViTEncoder):
        sys.exit("bench/train_step.py: the Hugging Face comparison builds a ViT encoder; use a ViT preset or --skip-hf")
    vit, dec = model.encoder.model, model.decoder
    return build_hf_captioner(
        image_size=vit.patch_embed.img_size[0],
        patch_size=vit.patch_embed.patch_size[0],
        encoder_width=vit.embed_dim,
        encoder_depth=len(vit.blocks),
        encoder_heads=vit.blocks[0].attn.num_heads,
        encoder_mlp=vit.blocks[0].mlp.fc1.out_features,
        vocab_size=vocab,
        decoder_width=dec.embed_dim,
        decoder_depth=len(dec.blocks),
        decoder_heads=dec.blocks[0].attn.num_heads,
        decoder_mlp=dec.blocks[0].mlp.fc1.out_features,
        max_positions=max_positions,
        pad_id=PAD,
        bos_id=BOS,
        eos_id=EOS,
    )


def make_step(
    forward: Callable[[Tensor, Tensor, Tensor], Tensor],
    optimizer: torch.optim.Optimizer,
    images: Tensor,
    tokens: Tensor,
    args: argparse.Namespace,
) -> Callable[[], None]:
    """One training step: teacher-forced logits, token cross-entropy ignoring pads, backward, optimizer step."""
    caption_index = torch.arange(tokens.shape[0], device=tokens.device)  # what the training collate gives

    def step() -> None:
        with autocast(args):
            logits = forward(images, tokens[:, :-1], caption_index)  # (B, T-1, V)
            loss, _ = caption_loss(logits, tokens[:, 1:], PAD)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def count_step_flops(step: Callable[[], None]) -> int:
    """FLOPs of one training step (matmuls, convolutions, attention; forward and backward)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        step()
    return int(counter.get_total_flops())


def section_model(args: argparse.Namespace, device: torch.device, result: dict[str, Any]) -> float:
    """Fill ``result`` with the model section; return vitcap's images/s (the loader must keep up with it)."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    B, T, V = args.batch, args.caption_length, args.vocab
    vitcap_model = (
        create_captioner(args.model, vocab_size=V, encoder=encoder_overrides(args), decoder={"max_len": max(64, T)})
        .to(device)
        .train()
    )
    img_size = model_img_size(vitcap_model, args.model)
    images = torch.randn(B, 3, img_size, img_size, generator=gen).to(device)
    tokens = random_captions(B, T, V, gen).to(device)

    # "before": the same weights through the code path the task had before the speed fixes.
    before_model = (
        create_captioner(args.model, vocab_size=V, encoder=encoder_overrides(args), decoder={"max_len": max(64, T)})
        .to(device)
        .train()
    )
    before_model.load_state_dict(vitcap_model.state_dict())
    if isinstance(before_model.encoder, CNNEncoder):
        before_model.encoder.model.to(memory_format=torch.contiguous_format)  # NCHW convolutions, as before
    lr, wd = 1e-3, 0.05
    variants: dict[str, tuple[torch.nn.Module, Callable, torch.optim.Optimizer]] = {}

    def vitcap_forward(model: Captioner) -> Callable[[Tensor, Tensor, Tensor], Tensor]:
        return lambda imgs, toks, index: model.forward_memory(model.encode(imgs), toks, index)

    def before_forward(imgs: Tensor, toks: Tensor, index: Tensor) -> Tensor:
        memory = before_model.encode(imgs).index_select(0, index)  # the unconditional gather
        return before_model.decoder(toks, memory)

    # The linear backends side by side: each fixed one, and "vitcap" = what training picks on this machine
    # (VitcapTask.configure_model: measured on the model's training shape, oneDNN only when >= 3% faster).
    auto_seconds = measure(vitcap_model, (images, tokens[:, :-1]), repeats=3) if onednn_linear_available() else {}
    auto_backend = pick(auto_seconds) if auto_seconds else "torch"
    onednn_layers = apply_linear_backend(vitcap_model, auto_backend)
    variants["vitcap"] = (vitcap_model, vitcap_forward(vitcap_model), adamw(param_groups(vitcap_model), lr, wd))
    fixed = {"vitcap_torch": "torch", "vitcap_onednn": "onednn"} if onednn_linear_available() else {}
    for name, backend in fixed.items():
        twin = (
            create_captioner(args.model, vocab_size=V, encoder=encoder_overrides(args), decoder={"max_len": max(64, T)})
            .to(device)
            .train()
        )
        twin.load_state_dict(vitcap_model.state_dict())
        apply_linear_backend(twin, backend)
        variants[name] = (twin, vitcap_forward(twin), adamw(param_groups(twin), lr, wd))
    result["linear_backend"] = {"auto": auto_backend, "measured_s": {k: round(v, 4) for k, v in auto_seconds.items()}}
    before_opt = torch.optim.AdamW(param_groups(before_model), lr=lr, weight_decay=wd)  # torch's default loop
    variants["vitcap_before"] = (before_model, before_forward, before_opt)
    if not args.skip_hf:
        import transformers

        hf = hf_like(vitcap_model, V, max(64, T)).to(device).train()
        result["transformers"] = transformers.__version__
        result["attn_impl_hf"] = [hf.config.encoder._attn_implementation, hf.config.decoder._attn_implementation]

        def hf_forward(imgs: Tensor, toks: Tensor, index: Tensor) -> Tensor:
            return hf(pixel_values=imgs, decoder_input_ids=toks).logits

        variants["hf"] = (hf, hf_forward, adamw(param_groups(hf), lr, wd))
    if args.compile:
        # vitcap's steps call encoder and decoder as modules (what CaptioningTask.compile_targets compiles);
        # the Hugging Face model is called as a whole.
        for name in ("vitcap", "vitcap_before", "vitcap_torch", "vitcap_onednn"):
            if name in variants:
                variants[name][0].encoder.compile()
                variants[name][0].decoder.compile()
        if "hf" in variants:
            variants["hf"][0].compile()

    steps = {name: make_step(fwd, opt, images, tokens, args) for name, (_, fwd, opt) in variants.items()}
    # FlopCounterMode counts aten matmuls, not the oneDNN ops vitcap's CPU linears call, so vitcap is charged the
    # FLOPs of the identical model on the plain path (the same arithmetic); on CUDA both take that path anyway.
    plain = ("vitcap_before", "hf")
    flops = {name: count_step_flops(step) for name, step in steps.items() if name in plain}
    flops.update({name: flops["vitcap_before"] for name in steps if name not in plain})
    if args.profile:
        for name in ("vitcap_before", "vitcap"):
            print(f"--- torch.profiler, 3 training steps of {name} ---", file=sys.stderr)
            profile_step(steps[name])

    def run(step: Callable[[], None]) -> Callable[[], None]:
        return lambda: [step() for _ in range(args.steps)]

    times = interleaved({name: run(step) for name, step in steps.items()}, args.repeats, args.warmup, device)
    vit = vitcap_model.encoder.model if isinstance(vitcap_model.encoder, ViTEncoder) else None
    result["model"] = {
        "preset": args.model,
        "stem": args.stem,
        "img_size": img_size,
        "image_tokens": int(vitcap_model.encode(images[:1]).shape[1]),
        "caption_length": T,
        "vocab": V,
        "params_m": {
            name: round(sum(p.numel() for p in m.parameters()) / 1e6, 3) for name, (m, _, _) in variants.items()
        },
        "onednn_linear_layers": onednn_layers if auto_backend == "onednn" else 0,
        "timm_fused_attn": bool(vit is not None and all(blk.attn.fused_attn for blk in vit.blocks)),
        "optimizer": {
            name: type(opt).__name__ + ("(fused)" if opt.defaults.get("fused") else "(for-loop)")
            for name, (_, _, opt) in variants.items()
        },
        "gflop_per_step": {name: round(f / 1e9, 2) for name, f in flops.items()},
    }
    per_step = {name: [t / args.steps for t in ts] for name, ts in times.items()}
    for name, ts in per_step.items():
        result["model"][f"{name}_step_s"] = round(median(ts), 4)
        result["model"][f"{name}_images_per_s"] = round(B / median(ts), 1)
        achieved = flops[name] / median(ts)
        result["model"][f"{name}_tflops"] = round(achieved / 1e12, 4)
        if device.type == "cuda":
            result["model"][f"{name}_mfu"] = round(achieved / (args.peak_tflops * 1e12), 4)
    if "hf" in per_step:
        result["model"]["vitcap_vs_hf"] = round(paired_ratio(per_step["hf"], per_step["vitcap"]), 3)
        if "vitcap_torch" in per_step:
            result["model"]["vitcap_torch_vs_hf"] = round(paired_ratio(per_step["hf"], per_step["vitcap_torch"]), 3)
    result["model"]["vitcap_vs_before"] = round(paired_ratio(per_step["vitcap_before"], per_step["vitcap"]), 3)
    if fixed:
        # auto vs each fixed backend, per-round ratios (> 1: auto is faster); the target is auto >= 0.97 of the best.
        for name in fixed:
            result["model"][f"auto_vs_{name.removeprefix('vitcap_')}"] = round(
                paired_ratio(per_step[name], per_step["vitcap"]), 3
            )
        best = min(fixed, key=lambda n: median(per_step[n]))
        result["model"]["best_fixed_backend"] = fixed[best]
        result["model"]["auto_vs_best_fixed"] = round(paired_ratio(per_step[best], per_step["vitcap"]), 3)
    return B / median(per_step["vitcap"])


def profile_step(step: Callable[[], None], rows: int = 15) -> None:
    from torch.profiler import ProfilerActivity, profile

    for _ in range(2):
        step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(3):
            step()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows), file=sys.stderr)


# --------------------------------------------------------------------------------------------------- lightning
def shapes_datamodule(args: argparse.Namespace, img_size: int, num_train: int):
    from vitcap.data import CaptionDataModule

    dm = CaptionDataModule(
        data="shapes", img_size=img_size, batch_size=args.batch, num_train=num_train, num_val=8, num_test=8,
        max_length=args.caption_length, num_workers=0,
    )  # fmt: skip
    dm.setup("fit")
    return dm


def make_task(args: argparse.Namespace, dm) -> Any:
    from vitcap.tasks import CaptioningTask

    torch.manual_seed(0)
    return CaptioningTask(
        preset=args.model, encoder=encoder_overrides(args), tokenizer=dm.tokenizer_json, max_length=dm.max_length,
        preprocessing=dm.preprocessing, eval_generate=False,
        compile=args.compile,
    )  # fmt: skip


class StepClock:
    """Wall-clock time at the end of every training step (Lightning callback or called by the plain loop)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.ends: list[float] = []

    def tick(self) -> None:
        synchronize(self.device)
        self.ends.append(time.perf_counter())

    def steady_step_s(self, skip: int) -> float:
        """Median seconds from one step's end to the next (data loading included) after ``skip`` warm-up steps.

        The median, not the mean: on a shared machine single steps stall for whole scheduler slices.
        """
        ends = self.ends[skip - 1 :]
        return median([b - a for a, b in zip(ends, ends[1:])])


def section_lightning(args: argparse.Namespace, device: torch.device, result: dict[str, Any]) -> None:
    import lightning.pytorch as pl

    skip = 2  # untimed steps at the start of every run
    total = skip + args.lightning_steps
    img_size = PRESETS[args.model].encoder.img_size or 224
    dm = shapes_datamodule(args, img_size, num_train=args.batch * (total + 1))  # one epoch covers every step

    class Clock(pl.Callback, StepClock):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            self.tick()

    def lightning_run() -> float:
        clock = Clock(device)
        trainer = pl.Trainer(
            accelerator=device.type, devices=1, max_steps=total, precision=args.precision, logger=False,
            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
            num_sanity_val_steps=0, callbacks=[clock],
        )  # fmt: skip
        trainer.fit(make_task(args, dm), datamodule=dm)
        return clock.steady_step_s(skip)

    def plain_run() -> float:
        task = make_task(args, dm)
        model = task.model.to(device).train()
        task.configure_model()  # what Trainer.fit calls first: oneDNN linears, and compile when asked
        if device.type == "cpu" and not args.compile:  # the linear backend Trainer.fit picks (cached by then)
            apply_linear_backend(model, choose_linear_backend(model, task.training_example(args.batch)).backend)
        optimizer = adamw(param_groups(model), task.optim.lr, task.optim.weight_decay)
        schedule = warmup_cosine(optimizer, total, warmup=task.optim.warmup, min_lr_ratio=task.optim.min_lr_ratio)
        clock = StepClock(device)
        for batch in _take(dm.train_dataloader(), total):
            images = batch["images"].to(device, non_blocking=True)
            tokens = batch["tokens"].to(device, non_blocking=True)
            caption_index = batch["caption_index"].to(device, non_blocking=True)
            with autocast(args):
                logits = model.forward_memory(model.encode(images), tokens[:, :-1], caption_index)
                loss, _ = caption_loss(logits, tokens[:, 1:], task.pad_id, task.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            clock.tick()
        return clock.steady_step_s(skip)

    runs: dict[str, list[float]] = {"lightning": [], "plain": []}
    for round_ in range(args.repeats):
        order = ("lightning", "plain") if round_ % 2 == 0 else ("plain", "lightning")
        for name in order:
            runs[name].append(lightning_run() if name == "lightning" else plain_run())
    overhead = paired_ratio(runs["lightning"], runs["plain"]) - 1.0
    result["lightning"] = {
        "data": f"shapes {img_size}px, batch {args.batch}, num_workers 0",
        "vocab": dm.vocab_size,
        "timed_steps_per_run": args.lightning_steps,
        "lightning_step_s": round(median(runs["lightning"]), 4),
        "plain_step_s": round(median(runs["plain"]), 4),
        "lightning_overhead_pct": round(100 * overhead, 2),
    }


def _take(loader, n: int) -> Iterator[Any]:
    for i, batch in enumerate(loader):
        if i >= n:
            return
        yield batch


# -------------------------------------------------------------------------------------------------------- data
def section_data(args: argparse.Namespace, result: dict[str, Any], model_images_per_s: float | None) -> None:
    from vitcap.data import CaptionDataModule

    if not (args.data_dir / "captions.txt").is_file():
        result["data"] = {"skipped": f"no flickr8k-mini at {args.data_dir}"}
        print(f"bench/train_step.py: data section skipped: no flickr8k-mini at {args.data_dir}", file=sys.stderr)
        return
    img_size = PRESETS[args.model].encoder.img_size or 224
    workers = [int(w) for w in args.workers.split(",")]
    loaders = {}
    for w in workers:
        # Defaults of the data module except the model's image size, the batch and the worker count.
        dm = CaptionDataModule(data=str(args.data_dir), img_size=img_size, batch_size=args.batch, num_workers=w)
        dm.setup("fit")
        loaders[w] = iter(_forever(dm))
        next(loaders[w])  # start persistent workers and fill their queues outside the timing

    n = args.loader_batches

    def timed_batches(w: int) -> Callable[[], None]:
        it = loaders[w]

        def run() -> None:
            # Workers refill their queues while the other loaders are timed; drain what is ready so the timed
            # batches measure production, not the buffer (at most one batch per worker is half-done already).
            for _ in range(w * 2):  # DataLoader's prefetch_factor: 2 batches per worker
                next(it)
            start = time.perf_counter()
            for _ in range(n):
                next(it)
            elapsed[w].append(time.perf_counter() - start)

        return run

    elapsed: dict[int, list[float]] = {w: [] for w in workers}
    interleaved({f"workers_{w}": timed_batches(w) for w in workers}, args.repeats, 0, torch.device("cpu"))
    times = {f"workers_{w}": elapsed[w] for w in workers}
    out: dict[str, Any] = {
        "dir": str(args.data_dir),
        "img_size": img_size,
        "batch": args.batch,
        "defaults": "CaptionDataModule defaults (augment=True, bicubic, num_workers=0 unless stated)",
    }
    for name, ts in times.items():
        out[f"{name}_images_per_s"] = round(n * args.batch / median(ts), 1)
    if model_images_per_s:
        out["model_images_per_s"] = round(model_images_per_s, 1)
        for w in workers:
            out[f"workers_{w}_vs_model"] = round(out[f"workers_{w}_images_per_s"] / model_images_per_s, 2)
    loaders.clear()  # stop the idle workers before the end-to-end runs
    if args.e2e_repeats:
        # Throughput alone hides that with num_workers=0 loading and training take turns, and that workers share
        # the cores with the training threads: time whole training steps on these images.
        e2e: dict[int, list[float]] = {w: [] for w in workers}
        for round_ in range(args.e2e_repeats):
            for w in workers[round_ % len(workers) :] + workers[: round_ % len(workers)]:
                e2e[w].append(_train_on_files(args, img_size, w))
        for w in workers:
            out[f"e2e_workers_{w}_images_per_s"] = round(args.batch / median(e2e[w]), 1)
    result["data"] = out


def _train_on_files(args: argparse.Namespace, img_size: int, num_workers: int) -> float:
    """Median seconds per plain-loop training step (loading included) on ``--data-dir`` with ``num_workers``."""
    from vitcap.data import CaptionDataModule

    dm = CaptionDataModule(data=str(args.data_dir), img_size=img_size, batch_size=args.batch, num_workers=num_workers)
    dm.setup("fit")
    task = make_task(args, dm)
    device = torch.device(args.device)
    model = task.model.to(device).train()
    task.configure_model()
    optimizer = adamw(param_groups(model), task.optim.lr, task.optim.weight_decay)
    clock = StepClock(device)
    skip = 2
    for batch in _take(dm.train_dataloader(), skip + args.loader_batches):
        images, tokens = batch["images"].to(device), batch["tokens"].to(device)
        with autocast(args):
            logits = model.forward_memory(model.encode(images), tokens[:, :-1], batch["caption_index"].to(device))
            loss, _ = caption_loss(logits, tokens[:, 1:], task.pad_id)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        clock.tick()
    return clock.steady_step_s(skip)


def _forever(dm) -> Iterator[dict]:
    loader = dm.train_dataloader()
    while True:
        yield from loader


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("bench/train_step.py: --device cuda but no CUDA device is visible")
    result: dict[str, Any] = {
        "bench": "train_step",
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "cpu": cpu_name(),
        "cpu_flags": cpu_facts()["flags"],
        "threads": args.threads,
        "torch": torch.__version__,
        "batch": args.batch,
        "steps_per_round": args.steps,
        "repeats": args.repeats,
        "precision": args.precision,
        "compile": args.compile,
        "load_avg_1m_before": load_avg(),
    }
    model_rate = None
    if "model" in args.sections:
        model_rate = section_model(args, device, result)
    if "lightning" in args.sections:
        section_lightning(args, device, result)
    if "data" in args.sections:
        section_data(args, result, model_rate)
    result["load_avg_1m_after"] = load_avg()
    targets: dict[str, bool] = {}
    if "vitcap_vs_hf" in result.get("model", {}):
        targets["vitcap_vs_hf>=1.3"] = result["model"]["vitcap_vs_hf"] >= 1.3
    if "auto_vs_best_fixed" in result.get("model", {}):
        targets["auto_within_3pct_of_best_fixed"] = result["model"]["auto_vs_best_fixed"] >= 0.97
    if "lightning" in result:
        targets["lightning_overhead<=5%"] = result["lightning"]["lightning_overhead_pct"] <= 5.0
    data = result.get("data", {})
    if "workers_0_vs_model" in data:
        targets["loader_default_keeps_up"] = data["workers_0_vs_model"] >= 1.0
    result["targets_met"] = targets
    print(json.dumps(result))


if __name__ == "__main__":
    main()
