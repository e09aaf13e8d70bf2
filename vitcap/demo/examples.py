"""Example images for the demo page, rendered locally from the built-in shapes (no download)."""

from __future__ import annotations

import os
from pathlib import Path

from vitcap.data.shapes import make_scene, scene_image

__all__ = ["EXAMPLE_SEED", "write_examples"]

# A seed no demo config trains on, and the test split: the examples are scenes the model has not seen.
EXAMPLE_SEED = 2024
MIN_SIZE = 32  # the smallest image the shapes renderer draws


def write_examples(out_dir: str | os.PathLike, task: str, img_size: int, num: int = 4) -> list[Path]:
    """Write ``num`` shapes scenes as PNG files and return their paths.

    Args:
        out_dir: Folder to write to (created).
        task: "captioning" (1-2 objects per scene) or "classification" (one object, as the classes need).
        img_size: Side in pixels; the model's input size (at least 32).
        num: How many images.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    objects = (1, 1) if task == "classification" else (1, 2)
    paths = []
    for index in range(num):
        scene = make_scene(
            EXAMPLE_SEED, index, "test", max(MIN_SIZE, int(img_size)), min_objects=objects[0], max_objects=objects[1]
        )
        path = out / f"shapes_{task}_{index}.png"
        scene_image(scene).save(path)
        paths.append(path)
    return paths
