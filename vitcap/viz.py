"""Attention pictures: per-word cross-attention overlays for captions, attention rollout for ViT classifiers."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn


def _figure():
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    return plt


def upsample_map(grid: Tensor, size: tuple[int, int]) -> np.ndarray:
    """Bilinearly resize an attention grid (h, w) to an image size (width, height), scaled to [0, 1]."""
    w, h = size
    up = torch.nn.functional.interpolate(grid[None, None].float(), size=(h, w), mode="bilinear", align_corners=False)
    up = up[0, 0]
    lo, hi = up.min(), up.max()
    return ((up - lo) / (hi - lo + 1e-12)).numpy()


def _save(plt, fig, path: str | Path) -> Path:  # noqa: ANN001 - matplotlib's pyplot module and Figure
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def caption_attention_figure(
    image: Image.Image, words: list[str], grids: Tensor, path: str | Path, title: str | None = None
) -> Path:
    """Save a grid of panels, one per generated word: the image with that word's attention as a heat map.

    Args:
        image: The input image (RGB).
        words: Generated words, one per panel.
        grids: (words, h, w) attention of each word over the image's spatial tokens.
        path: Output PNG path.
        title: Optional figure title (e.g. the whole caption).

    Returns:
        The written path.
    """
    if grids.shape[0] != len(words):
        raise ValueError(f"{len(words)} words but {grids.shape[0]} attention maps")
    plt = _figure()
    panels = len(words) + 1
    cols = min(5, panels)
    rows = math.ceil(panels / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.4 * cols, 2.6 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    axes.flat[0].imshow(image)
    axes.flat[0].set_title("input", fontsize=10)
    for i, word in enumerate(words):
        ax = axes.flat[i + 1]
        ax.imshow(image)
        ax.imshow(upsample_map(grids[i], image.size), cmap="jet", alpha=0.5)
        ax.set_title(word, fontsize=10)
    if title:
        fig.suptitle(title, fontsize=11)
    return _save(plt, fig, path)


def rollout_figure(image: Image.Image, grid: Tensor, path: str | Path, title: str | None = None) -> Path:
    """Save the image beside its attention-rollout heat map (grid (h, w))."""
    plt = _figure()
    fig, axes = plt.subplots(1, 2, figsize=(5, 2.8))
    for ax in axes:
        ax.axis("off")
    axes[0].imshow(image)
    axes[0].set_title("input", fontsize=10)
    axes[1].imshow(image)
    axes[1].imshow(upsample_map(grid, image.size), cmap="jet", alpha=0.5)
    axes[1].set_title(title or "attention rollout", fontsize=10)
    return _save(plt, fig, path)


@torch.no_grad()
def attention_rollout(vit: nn.Module, images: Tensor, discard_ratio: float = 0.0) -> Tensor:
    """Attention rollout (Abnar & Zuidema, 2020) of a timm VisionTransformer, from its class token.

    Each block's attention is averaged over heads, the identity added for the residual path, rows renormalised,
    and the matrices multiplied through the depth. Attention is read by temporarily switching timm's blocks to
    their explicit (non-fused) path and hooking `attn_drop`, which receives the softmax weights.

    Args:
        vit: A timm `VisionTransformer` with a class token.
        images: (B, C, H, W) preprocessed images.
        discard_ratio: Share of the lowest attention weights zeroed per layer (0 keeps all).

    Returns:
        (B, h, w) relevance of each patch for the class token.
    """
    if getattr(vit, "cls_token", None) is None:
        raise ValueError("attention rollout needs a ViT with a class token")
    attns: list[Tensor] = []
    hooks, fused = [], []
    for block in vit.blocks:
        attn = block.attn
        fused.append(getattr(attn, "fused_attn", False))
        attn.fused_attn = False
        hooks.append(attn.attn_drop.register_forward_hook(lambda m, inp, out: attns.append(inp[0].detach())))
    try:
        vit.forward_features(images)
    finally:
        for hook in hooks:
            hook.remove()
        for block, was_fused in zip(vit.blocks, fused):
            block.attn.fused_attn = was_fused
    B, _, N, _ = attns[0].shape
    result = torch.eye(N, device=images.device).expand(B, N, N)
    for a in attns:
        a = a.mean(dim=1)  # (B, N, N) mean over heads
        if discard_ratio > 0:
            flat = a.reshape(B, -1)  # (B, N*N)
            k = int(flat.shape[1] * discard_ratio)
            low = flat.topk(k, dim=-1, largest=False).indices
            flat = flat.scatter(1, low, 0.0)
            a = flat.reshape(B, N, N)  # (B, N, N)
        a = a + torch.eye(N, device=a.device)
        a = a / a.sum(dim=-1, keepdim=True)
        result = a @ result
    prefix = vit.num_prefix_tokens
    h, w = vit.patch_embed.grid_size
    return result[:, 0, prefix:].reshape(B, h, w)  # (B, h, w)
