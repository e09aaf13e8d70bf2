"""Reading one tar shard with the `webdataset` library, and what a sample's members mean.

img2dataset's layout: the members of one sample share a key (`KEY.jpg`, `KEY.txt`, `KEY.json`, `KEY.cls`). The
webdataset library opens the shard (local file, `pipe:` command or URL), streams its members and groups them by
key; vitcap groups within one shard only, so a truncated shard can never lend its last image to the next shard's
first caption. What cannot be read is reported through `problem(url, key, reason)` and skipped:

- a truncated or corrupt tar: the samples before the damage are kept, the rest of the shard is skipped;
- a sample without an image, caption or class, or whose image does not decode: that sample is skipped.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Iterator
from typing import Any

from PIL import Image

from vitcap.data.images import decode_image
from vitcap.data.shards.index import IMAGE_SUFFIXES
from vitcap.errors import ConfigError, DataError

__all__ = [
    "ShardWarning",
    "SkipSample",
    "iter_shard",
    "sample_captions",
    "sample_image",
    "sample_label",
    "warn_problem",
]

Problem = Callable[[str, str, str], None]
TEXT_SUFFIXES = ("txt", "json", "cls")


class ShardWarning(UserWarning):
    """A shard member or sample that was skipped (named by shard and key)."""


class SkipSample(DataError):
    """A sample that cannot be used; the stream skips it (message: the reason)."""


def warn_problem(url: str, key: str, reason: str) -> None:
    """The default problem report: one warning per skipped sample, naming the shard and the key."""
    warnings.warn(f"{url}: {key or '(shard)'}: skipped: {reason}", ShardWarning, stacklevel=2)


def _webdataset() -> Any:
    try:
        from webdataset import tariterators
        from webdataset.gopen import gopen
    except ImportError as e:  # pragma: no cover - the `shards` extra is part of `dev`
        raise ConfigError("tar shards need the webdataset library: pip install 'vitcap[shards]'") from e
    return gopen, tariterators


def _raise(exn: Exception) -> bool:
    raise exn


def iter_shard(url: str, problem: Problem = warn_problem, text_only: bool = False) -> Iterator[dict[str, Any]]:
    """The samples of one shard in file order: dicts of member suffix -> bytes, plus `__key__` and `__url__`.

    Args:
        url: Shard path or URL.
        problem: Called with (url, key, reason) for what is skipped.
        text_only: Read only the text members (`txt`, `json`, `cls`); image bytes are passed over.
    """
    gopen, tariterators = _webdataset()
    select = (lambda name: name.rpartition(".")[2].lower() in TEXT_SUFFIXES) if text_only else None
    key = ""
    try:
        stream = gopen(url)
    except Exception as e:  # noqa: BLE001 - missing file, failed command, network: one report, then the next shard
        problem(url, "", f"cannot open the shard ({type(e).__name__}: {e})")
        return
    try:
        members = tariterators.tar_file_iterator(stream, handler=_raise, select_files=select)
        tagged = ({**m, "__url__": url} for m in members)
        for sample in tariterators.group_by_keys(tagged, handler=_raise):
            key = sample["__key__"]
            yield sample
    except Exception as e:  # noqa: BLE001 - tarfile and gopen raise many types on damaged data
        after = f"after key {key}" if key else "at its start"
        problem(url, key, f"the shard is truncated or corrupt {after}; its remaining samples are skipped ({e})")
    finally:
        stream.close()


def sample_image(sample: dict[str, Any], max_pixels: int | None = None) -> Image.Image:
    """The sample's image as RGB (`load_image`'s rules).

    Raises:
        SkipSample: No image member, or it does not decode.
    """
    for suffix in IMAGE_SUFFIXES:
        if suffix in sample:
            name = f"{sample['__url__']}:{sample['__key__']}.{suffix}"
            try:
                return decode_image(sample[suffix], name, max_pixels=max_pixels)
            except DataError as e:
                raise SkipSample(getattr(e, "reason", str(e))) from None
    raise SkipSample("no image member (" + ", ".join(sorted(k for k in sample if not k.startswith("__"))) + ")")


def _json(sample: dict[str, Any]) -> dict[str, Any]:
    try:
        value = json.loads(sample["json"])
    except (ValueError, UnicodeDecodeError) as e:
        raise SkipSample(f"{sample['__key__']}.json is not valid JSON ({e})") from None
    if not isinstance(value, dict):
        raise SkipSample(f"{sample['__key__']}.json is not a JSON object")
    return value


def sample_captions(sample: dict[str, Any]) -> list[str]:
    """Captions of a sample: `json` `captions` (a list) or `caption`, else the `txt` member.

    Raises:
        SkipSample: No caption, or only empty ones.
    """
    captions: list[str] = []
    meta = _json(sample) if "json" in sample else {}
    if isinstance(meta.get("captions"), list):
        captions = [c for c in meta["captions"] if isinstance(c, str)]
    elif "txt" in sample:
        try:
            captions = [sample["txt"].decode("utf-8")]
        except UnicodeDecodeError:
            raise SkipSample(f"{sample['__key__']}.txt is not UTF-8") from None
    elif isinstance(meta.get("caption"), str):
        captions = [meta["caption"]]
    captions = [c.strip() for c in captions if c and c.strip()]
    if not captions:
        raise SkipSample("no caption (KEY.txt, or KEY.json with 'caption' / 'captions')")
    return captions


def sample_label(sample: dict[str, Any], num_classes: int | None = None) -> int:
    """The class index of a sample (`cls` member, or `json` `label`).

    Raises:
        SkipSample: No class, not an integer, or outside `0 .. num_classes - 1`.
    """
    if "cls" in sample:
        raw: Any = sample["cls"].decode("utf-8", "replace").strip()
    elif "json" in sample and "label" in _json(sample):
        raw = _json(sample)["label"]
    else:
        raise SkipSample("no class (KEY.cls)")
    try:
        label = int(raw)
    except (TypeError, ValueError):
        raise SkipSample(f"class {raw!r} is not an integer") from None
    if label < 0 or (num_classes is not None and label >= num_classes):
        raise SkipSample(f"class {label} is outside 0..{(num_classes or 0) - 1}")
    return label
