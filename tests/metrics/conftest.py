"""Shared fixtures of the metric tests: the real Flickr8k-mini captions when the shared data folder is present."""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

import pytest

# The shared data folder is a sibling of the checkout: <checkout>/../shared/data/flickr8k-mini.
FLICKR_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "flickr8k-mini"
FLICKR_CAPTIONS = FLICKR_DIR / "captions.txt"


@pytest.fixture(scope="session")
def flickr_captions() -> dict[str, list[str]]:
    """Image name -> its 5 human captions (file order); skips when the data folder is absent."""
    if not FLICKR_CAPTIONS.is_file():
        pytest.skip(f"real caption data not found at {FLICKR_CAPTIONS}")
    captions: defaultdict[str, list[str]] = defaultdict(list)
    with FLICKR_CAPTIONS.open(encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            captions[row["image"]].append(row["caption"])
    return dict(captions)
