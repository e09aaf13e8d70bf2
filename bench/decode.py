"""Decoding speed: KV cache vs none, batched vs one-image beam search, vitcap vs Hugging Face beam search.

Random-init models, CPU, eos forbidden until ``max_length`` (``min_length = max_length``) so every caption costs
the same number of steps. Prints one JSON line; numbers are medians over ``--repeats`` runs after one warm-up.

    python bench/decode.py --threads 2 --batch 32 --max-length 32 --beams 5

The Hugging Face comparison (``VisionEncoderDecoderModel``: ``ViTModel`` + ``BertLMHeadModel`` with
cross-attention, same width/depth/heads/MLP/image/patch/vocabulary, same beams and lengths) needs the ``bench``
extra (``pip install -e '.[bench]'``); ``--skip-hf`` leaves it out.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import build_hf_captioner, cpu_name, interleaved, load_avg  # noqa: E402

from vitcap.generate import GenerationConfig, generate
from vitcap.models import PRESETS, Captioner, ViTEncoder, create_captioner

PAD, BOS, EOS = 0, 1, 2


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads (both libraries)")
    p.add_argument("--batch", type=int, default=32, help="images per generate call")
    p.add_argument("--max-length", type=int, default=32, help="new tokens per caption (also min length)")
    p.add_argument("--beams", type=int, default=5)
    p.add_argument("--preset", default="tiny", help="vitcap model preset (ViT on 64-px images by default)")
    p.add_argument("--width", type=int, default=None, help="override encoder and decoder width")
    p.add_argument("--depth", type=int, default=None, help="override encoder and decoder depth")
    p.add_argument("--heads", type=int, default=None, help="override encoder and decoder heads")
    p.add_argument("--vocab", type=int, default=1000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--skip-hf", action="store_true", help="leave out the Hugging Face comparison")
    return p.parse_args(argv)


def build_model(args: argparse.Namespace) -> Captioner:
    overrides = {"embed_dim": args.width, "depth": args.depth, "num_heads": args.heads}
    overrides = {k: v for k, v in overrides.items() if v is not None}
    decoder = {**overrides, "max_len": max(64, args.max_length)}
    model = create_captioner(args.preset, vocab_size=args.vocab, encoder=overrides, decoder=decoder)
    return model.eval()


def timed(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 2) -> dict[str, float]:
    """Median wall seconds of every ``fn()``, the functions taking turns (``bench/common.interleaved``).

    Warm-up covers oneDNN's per-shape kernel setup: decoding meets a new sequence length at every step.
    """
    times = interleaved(fns, repeats, warmup, torch.device("cpu"))
    return {name: statistics.median(t) for name, t in times.items()}


def build_hf_model(model: Captioner, args: argparse.Namespace) -> torch.nn.Module:
    """A random-init ``VisionEncoderDecoderModel`` with the vitcap model's sizes."""
    vit, dec = model.encoder.model, model.decoder
    return build_hf_captioner(
        image_size=vit.patch_embed.img_size[0],
        patch_size=vit.patch_embed.patch_size[0],
        encoder_width=vit.embed_dim,
        encoder_depth=len(vit.blocks),
        encoder_heads=vit.blocks[0].attn.num_heads,
        encoder_mlp=vit.blocks[0].mlp.fc1.out_features,
        vocab_size=dec.vocab_size,
        decoder_width=dec.embed_dim,
        decoder_depth=len(dec.blocks),
        decoder_heads=dec.blocks[0].attn.num_heads,
        decoder_mlp=dec.blocks[0].mlp.fc1.out_features,
        max_positions=max(64, args.max_length + 1),
        pad_id=PAD,
        bos_id=BOS,
        eos_id=EOS,
    ).eval()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.preset not in PRESETS:
        sys.exit(f"bench/decode.py: unknown preset {args.preset!r}; known: {', '.join(PRESETS)}")
    model = build_model(args)
    is_vit = isinstance(model.encoder, ViTEncoder)
    if not is_vit and not args.skip_hf:
        sys.exit("bench/decode.py: the Hugging Face comparison builds a ViT encoder; use a ViT preset or --skip-hf")
    img_size = PRESETS[args.preset].encoder.img_size or 224
    images = torch.randn(args.batch, 3, img_size, img_size)
    L, B, k = args.max_length, args.batch, args.beams

    def run(config: GenerationConfig, imgs: torch.Tensor = images) -> None:
        generate(model, imgs, config, bos_id=BOS, eos_id=EOS, pad_id=PAD)

    greedy_cached = GenerationConfig(max_length=L, min_length=L)
    greedy_uncached = GenerationConfig(max_length=L, min_length=L, use_cache=False)
    beam = GenerationConfig(max_length=L, min_length=L, num_beams=k)
    result: dict[str, object] = {
        "bench": "decode",
        "device": "cpu",
        "cpu": cpu_name(),
        "threads": args.threads,
        "torch": torch.__version__,
        "preset": args.preset,
        "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 3),
        "width": model.decoder.embed_dim,
        "decoder_depth": len(model.decoder.blocks),
        "encoder": type(model.encoder).__name__,
        "image_tokens": model.encode(images[:1]).shape[1],
        "vocab": args.vocab,
        "batch": B,
        "max_length": L,
        "beams": k,
        "repeats": args.repeats,
        "load_avg_1m_before": load_avg(),
    }
    fns: dict[str, Callable[[], object]] = {
        "greedy_cached": lambda: run(greedy_cached),
        "greedy_uncached": lambda: run(greedy_uncached),
        "beam_batched": lambda: run(beam),
        "beam_one_at_a_time": lambda: [run(beam, images[i : i + 1]) for i in range(B)],
    }
    if not args.skip_hf:
        import transformers

        hf = build_hf_model(model, args)
        result |= {
            "transformers": transformers.__version__,
            "hf_params_m": round(sum(p.numel() for p in hf.parameters()) / 1e6, 3),
        }

        def run_hf() -> None:
            with torch.no_grad():
                hf.generate(
                    pixel_values=images,
                    num_beams=k,
                    max_new_tokens=L,
                    min_new_tokens=L,
                    do_sample=False,
                    length_penalty=1.0,
                    early_stopping=False,
                    use_cache=True,
                )

        fns["hf_beam"] = run_hf
    t = timed(fns, args.repeats)
    for name, seconds in t.items():
        result[f"{name}_caps_per_s"] = round(B / seconds, 2)
    result |= {
        "cache_speedup": round(t["greedy_uncached"] / t["greedy_cached"], 2),
        "batched_beam_speedup": round(t["beam_one_at_a_time"] / t["beam_batched"], 2),
    }
    targets = {
        "cache_speedup>=3": result["cache_speedup"] >= 3,
        "batched_beam_speedup>=2.5": result["batched_beam_speedup"] >= 2.5,
    }
    if "hf_beam" in t:
        result["vitcap_vs_hf_beam"] = round(t["hf_beam"] / t["beam_batched"], 2)
        targets["vitcap_vs_hf_beam>=2"] = result["vitcap_vs_hf_beam"] >= 2
    result["load_avg_1m_after"] = load_avg()
    result["targets_met"] = targets
    print(json.dumps(result))


if __name__ == "__main__":
    main()
