"""Collate functions: lists of dataset samples -> the batch dicts of the design contract.

Captioning batches: ``images`` (B, 3, H, W) float, ``tokens`` (M, T) long right-padded with ``pad_id``
(``[BOS] ... [EOS]``), ``caption_index`` (M,) long (row of ``images`` each caption belongs to), ``ids`` (B image
ids); evaluation batches add ``references`` (B lists of raw captions) and tokenise every reference (M = total
references), training batches have one caption per image (M = B, ``caption_index = arange(B)``). Both add
``labels`` (B,) long when the samples carry class labels (shapes: for joint classification + captioning).
Classification batches: ``images``, ``labels`` (B,) long, ``ids``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from vitcap.tokenizer import CaptionTokenizer

__all__ = ["CaptionEvalCollate", "CaptionTrainCollate", "classification_collate"]


class CaptionTrainCollate:
    """Batch of (image, caption) pairs; tokenises the captions.

    Args:
        tokenizer: Caption tokenizer.
        max_length: Maximum token row length T including ``[BOS]``/``[EOS]``.
    """

    def __init__(self, tokenizer: CaptionTokenizer, max_length: int) -> None:
        self.tokenizer, self.max_length = tokenizer, max_length

    def __call__(self, samples: Sequence[dict]) -> dict:
        B = len(samples)
        batch = {
            "images": torch.stack([s["image"] for s in samples]),  # (B, C, H, W)
            "tokens": self.tokenizer.encode_batch([s["caption"] for s in samples], self.max_length),  # (B, T)
            "caption_index": torch.arange(B, dtype=torch.long),
            "ids": [s["id"] for s in samples],
        }
        return _add_labels(batch, samples)


class CaptionEvalCollate:
    """Batch of images, each once, with all their references (tokenised unless ``with_tokens=False``).

    Args:
        tokenizer: Caption tokenizer.
        max_length: Maximum token row length T.
        with_tokens: Add ``tokens`` and ``caption_index`` (validation/test loss); False for prediction.
    """

    def __init__(self, tokenizer: CaptionTokenizer, max_length: int, with_tokens: bool = True) -> None:
        self.tokenizer, self.max_length, self.with_tokens = tokenizer, max_length, with_tokens

    def __call__(self, samples: Sequence[dict]) -> dict:
        references = [list(s["captions"]) for s in samples]
        batch = {
            "images": torch.stack([s["image"] for s in samples]),  # (B, C, H, W)
            "ids": [s["id"] for s in samples],
            "references": references,
        }
        if self.with_tokens:
            flat = [c for refs in references for c in refs]
            batch["tokens"] = self.tokenizer.encode_batch(flat, self.max_length)  # (M, T)
            batch["caption_index"] = torch.repeat_interleave(
                torch.arange(len(samples)), torch.tensor([len(r) for r in references])
            )  # (M,)
        return _add_labels(batch, samples)


def _add_labels(batch: dict, samples: Sequence[dict]) -> dict:
    if samples and all("label" in s for s in samples):
        batch["labels"] = torch.tensor([s["label"] for s in samples], dtype=torch.long)  # (B,)
    return batch


def classification_collate(samples: Sequence[dict]) -> dict:
    """Batch of classification samples: ``images`` (B, C, H, W), ``labels`` (B,) long, ``ids``."""
    return {
        "images": torch.stack([s["image"] for s in samples]),  # (B, C, H, W)
        "labels": torch.tensor([s["label"] for s in samples], dtype=torch.long),
        "ids": [s["id"] for s in samples],
    }
