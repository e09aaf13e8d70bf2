"""`CaptionSet`: images and their captions, with the splits and ids the data modules use."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

from vitcap.data.captions.splits import SPLITS, hash_split

__all__ = ["CaptionSet"]


class CaptionSet(Mapping[Path, list[str]]):
    """Images and their captions: maps resolved image path -> list of captions (file order).

    Attributes:
        root: The image root that manifest paths are relative to (resolved).
        source: The caption file or folder.
        format: The format it was read as.
        splits: Split (``train``/``val``/``test``) per image when the data carries one; empty otherwise.
    """

    def __init__(
        self,
        captions: dict[Path, list[str]],
        root: Path,
        source: Path,
        format: str,
        splits: dict[Path, str] | None = None,
    ) -> None:
        self._captions = captions
        self.root = root
        self.source = source
        self.format = format
        self.splits = dict(splits or {})

    def __getitem__(self, path: Path) -> list[str]:
        return self._captions[path]

    def __iter__(self) -> Iterator[Path]:
        return iter(self._captions)

    def __len__(self) -> int:
        return len(self._captions)

    @property
    def num_captions(self) -> int:
        """Total number of captions over all images."""
        return sum(len(c) for c in self._captions.values())

    def image_id(self, path: Path) -> str:
        """Stable id of an image: its path relative to ``root``, with forward slashes."""
        return path.relative_to(self.root).as_posix()

    def by_id(self) -> dict[str, list[str]]:
        """Image id -> captions."""
        return {self.image_id(p): caps for p, caps in self._captions.items()}

    def split_images(self, val_fraction: float = 0.1, test_fraction: float = 0.1) -> dict[str, list[Path]]:
        """Images per split (``train``/``val``/``test``, file order within a split).

        Uses the data's own splits when it has them, else ``hash_split`` with the given fractions.
        """
        out: dict[str, list[Path]] = {s: [] for s in SPLITS}
        for p in self._captions:
            split = self.splits.get(p) if self.splits else hash_split(self.image_id(p), val_fraction, test_fraction)
            out[split or "train"].append(p)
        return out

    def __repr__(self) -> str:
        return f"CaptionSet({len(self)} images, {self.num_captions} captions, format={self.format!r}, root={self.root})"
