"""``"coco"``: COCO captions JSON, ``{"images": [{"id", "file_name"}], "annotations": [{"image_id", "caption"}]}``."""

from __future__ import annotations

from pathlib import Path

from vitcap.data.captions.entries import Entry, clean_caption
from vitcap.data.captions.problems import Problem
from vitcap.data.captions.text import parse_json, read_text
from vitcap.errors import CaptionFormatError

__all__ = ["read_coco"]


def read_coco(path: Path, problems: list[Problem]) -> list[Entry]:
    """Entries of a COCO captions file; an image without annotations is one entry without a caption.

    Raises:
        CaptionFormatError: Not JSON, or no lists ``images`` and ``annotations``.
    """
    data = parse_json(path, read_text(path))
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("images"), list)
        or not isinstance(data.get("annotations"), list)
    ):
        raise CaptionFormatError(f"{path}: COCO captions JSON needs lists 'images' and 'annotations'")
    names: dict[object, tuple[str, str]] = {}
    for i, img in enumerate(data["images"]):
        where = f"{path.name}: images[{i}]"
        if not isinstance(img, dict) or "id" not in img or not isinstance(img.get("file_name"), str):
            problems.append(Problem(where, "expected an object with 'id' and 'file_name'"))
            continue
        names[img["id"]] = (img["file_name"], where)
    entries: list[Entry] = []
    seen: set[object] = set()
    for i, ann in enumerate(data["annotations"]):
        where = f"{path.name}: annotations[{i}]"
        if not isinstance(ann, dict) or "image_id" not in ann or "caption" not in ann:
            problems.append(Problem(where, "expected an object with 'image_id' and 'caption'"))
            continue
        if ann["image_id"] not in names:
            problems.append(Problem(where, f"image_id {ann['image_id']!r} is not in 'images'"))
            continue
        seen.add(ann["image_id"])
        entries.append(Entry(names[ann["image_id"]][0], clean_caption(ann["caption"]), where))
    for image_id, (name, where) in names.items():
        if image_id not in seen:
            entries.append(Entry(name, None, where))
    return entries
