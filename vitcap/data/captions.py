"""Caption file readers: one function, ``read_captions``, for every supported layout.

Formats (``format="auto"`` detects them; a directory holding exactly one caption file such as ``captions.txt``,
``captions.jsonl``, ``Flickr8k.token.txt`` or ``dataset_*.json`` means that file, otherwise the folder format):

- ``"coco"``: COCO captions JSON, ``{"images": [{"id", "file_name"}], "annotations": [{"image_id", "caption"}]}``.
- ``"karpathy"``: Karpathy split JSON (``dataset_coco.json`` style), ``{"images": [{"filename", "filepath"?,
  "split", "sentences": [{"raw"}]}]}``; ``restval`` counts as ``train``.
- ``"csv"``: CSV with a header naming ``image`` and ``caption`` (one row per caption, e.g. the Kaggle Flickr8k
  ``captions.txt``) or ``captions`` (a JSON list of strings per row), and optionally ``split``. Parsed with the
  ``csv`` module, so quoted captions may contain commas.
- ``"flickr_token"``: ``Flickr8k.token.txt`` style, ``NAME#i<TAB>caption`` per line.
- ``"jsonl"``: one JSON object per line with ``image`` and ``caption`` (str) or ``captions`` (list), optionally
  ``split``.
- ``"folder"``: a directory of images, each with a sidecar ``NAME.txt`` holding one caption per line (blank
  lines ignored).

Captions are stripped and runs of whitespace collapsed to one space; no other change is made.

Image paths are relative to ``images_dir``. When it is not given it is the folder itself (``"folder"``), or the
caption file's directory, or its ``images/`` subdirectory when the first entries are found there instead.

Splits come from the format (Karpathy, a ``split`` column/key), else from a ``splits.csv`` (``image,split``)
beside the caption file (inside the folder for ``"folder"``), else ``CaptionSet.split_images`` assigns them by a
hash of the image id. Split names are normalised: ``restval`` -> ``train``; ``dev``, ``valid``, ``validation``
-> ``val``.

Problems with individual entries (malformed lines, missing image files, empty captions, paths that escape the
image root, conflicting or missing splits) are all collected and raised together as one ``ManifestError``
listing each with its file and line (or JSON index); ``skip_bad=True`` drops the bad entries with one warning
that lists them. Files that cannot be read at all (not UTF-8, not JSON, no header) raise ``CaptionFormatError``
naming the file and line.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from vitcap.data.images import IMAGE_EXTENSIONS, ImageLoadError, load_image

__all__ = [
    "FORMATS",
    "SPLITS",
    "CaptionFormatError",
    "CaptionSet",
    "ManifestError",
    "Problem",
    "detect_format",
    "hash_split",
    "normalize_split",
    "read_captions",
    "read_text",
]

FORMATS = ("coco", "karpathy", "csv", "flickr_token", "jsonl", "folder")
SPLITS = ("train", "val", "test")
_SPLIT_ALIASES = {
    "train": "train",
    "restval": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "dev": "val",
    "test": "test",
}
_TOKEN_LINE = re.compile(r"^(?P<image>[^\t#]+)#(?P<num>\d+)\t(?P<caption>.*)$")
_MAX_LISTED = 50


@dataclass(frozen=True)
class Problem:
    """One bad manifest entry.

    Attributes:
        where: Location, ``"file:line"`` or ``"file: annotations[17]"``.
        reason: What is wrong.
        image: The image entry as written in the manifest, when known.
    """

    where: str
    reason: str
    image: str | None = None

    def __str__(self) -> str:
        return (
            f"{self.where}: {self.image!r}: {self.reason}" if self.image is not None else f"{self.where}: {self.reason}"
        )


class CaptionFormatError(ValueError):
    """A caption file that cannot be parsed at all; the message names the file (and line where known)."""


class ManifestError(ValueError):
    """Every bad entry of a manifest, reported at once.

    Attributes:
        source: The manifest (file or folder).
        problems: All problems found, in file order.
    """

    def __init__(self, source: str | os.PathLike, problems: list[Problem]) -> None:
        self.source = str(source)
        self.problems = list(problems)
        super().__init__(format_problems(self.source, self.problems, "pass skip_bad=True to skip them"))

    def __reduce__(self):
        return (type(self), (self.source, self.problems))


def format_problems(source: str, problems: list[Problem], hint: str) -> str:
    """One message listing every problem (the first 50, then a count)."""
    lines = [f"{source}: {len(problems)} bad manifest entr{'y' if len(problems) == 1 else 'ies'} ({hint}):"]
    lines += [f"  {p}" for p in problems[:_MAX_LISTED]]
    if len(problems) > _MAX_LISTED:
        lines.append(f"  ... and {len(problems) - _MAX_LISTED} more")
    return "\n".join(lines)


def normalize_split(name: str) -> str | None:
    """Canonical split name (``train``/``val``/``test``) or None when ``name`` is not a known split."""
    return _SPLIT_ALIASES.get(name.strip().lower())


def hash_split(image_id: str, val_fraction: float, test_fraction: float) -> str:
    """Deterministic split of one image from a SHA-1 of its id: the same on every machine and run.

    Args:
        image_id: Stable image name (path relative to the image root).
        val_fraction: Expected fraction assigned to ``val``.
        test_fraction: Expected fraction assigned to ``test``.
    """
    u = int.from_bytes(hashlib.sha1(image_id.encode("utf-8")).digest()[:8], "big") / 2.0**64
    if u < test_fraction:
        return "test"
    if u < test_fraction + val_fraction:
        return "val"
    return "train"


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


@dataclass
class _Entry:
    image: str  # as written in the manifest, relative to the image root
    caption: str | None  # None: an image listed without a caption (reported as a problem)
    where: str
    split: str | None = None


def read_captions(
    path: str | os.PathLike,
    format: str = "auto",
    images_dir: str | os.PathLike | None = None,
    *,
    skip_bad: bool = False,
    check_files: bool = True,
    verify_images: bool = False,
) -> CaptionSet:
    """Read captions in any supported format (see the module docstring) and validate them up front.

    Args:
        path: Caption file, or a folder of images with sidecar ``.txt`` files.
        format: One of ``FORMATS`` or ``"auto"`` (by content, see ``detect_format``).
        images_dir: Root that image paths are relative to; see the module docstring for the default.
        skip_bad: Drop bad entries with one warning listing them, instead of raising ``ManifestError``.
        check_files: Check that every image file exists (and is non-empty).
        verify_images: Also decode every image once with ``load_image`` (slow; finds corrupt files up front).

    Returns:
        The images with their captions and splits.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CaptionFormatError: The file cannot be parsed at all.
        ManifestError: Bad entries and ``skip_bad`` is False; lists every one with file and line.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"caption data not found: {path}")
    if format == "auto" and path.is_dir():
        path = _caption_file_in(path) or path
    fmt = detect_format(path) if format == "auto" else format
    if fmt not in FORMATS:
        raise ValueError(f"unknown caption format {format!r} for {path}; expected 'auto' or one of {FORMATS}")
    problems: list[Problem] = []
    if fmt == "folder":
        if not path.is_dir():
            raise CaptionFormatError(f"{path}: format 'folder' needs a directory")
        root = Path(images_dir) if images_dir is not None else path
        entries = _read_folder(path, root, problems)
    else:
        if path.is_dir():
            raise CaptionFormatError(f"{path}: is a directory; format {fmt!r} needs a caption file")
        reader = {
            "coco": _read_coco,
            "karpathy": _read_karpathy,
            "csv": _read_csv,
            "flickr_token": _read_token,
            "jsonl": _read_jsonl,
        }[fmt]
        entries = reader(path, problems)
        root = Path(images_dir) if images_dir is not None else _guess_root(path.parent, entries)
    splits_file = (path if fmt == "folder" else path.parent) / "splits.csv"
    has_own_splits = any(e.split is not None for e in entries)
    external = None if has_own_splits or not splits_file.is_file() else _read_splits_file(splits_file, problems)
    cs, more = _assemble(entries, root.resolve(), path, fmt, external, splits_file, check_files, verify_images)
    problems.extend(more)
    if problems:
        if not skip_bad:
            raise ManifestError(path, problems)
        warnings.warn(format_problems(str(path), problems, "skipped because skip_bad=True"), stacklevel=2)
    return cs


_KNOWN_NAMES = ("captions.jsonl", "captions.json", "captions.csv", "captions.txt", "Flickr8k.token.txt")
_KNOWN_PATTERNS = ("dataset_*.json", "captions_*.json", "*.token.txt", "*.token")


def _caption_file_in(folder: Path) -> Path | None:
    """The one caption file of a data directory (e.g. ``captions.txt`` beside ``images/``), if unambiguous."""
    found = [folder / n for n in _KNOWN_NAMES if (folder / n).is_file()]
    found += sorted(p for pattern in _KNOWN_PATTERNS for p in folder.glob(pattern) if p not in found)
    found = list(dict.fromkeys(found))
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise CaptionFormatError(f"{folder}: several caption files ({names}); pass one of them as the path")
    return found[0] if found else None


def detect_format(path: str | os.PathLike) -> str:
    """Guess the format of a caption file or folder from its content.

    Raises:
        CaptionFormatError: No format matches; the message says what was expected.
    """
    path = Path(path)
    if path.is_dir():
        return "folder"
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return "jsonl"
    text = read_text(path)
    if suffix == ".json" or text.lstrip().startswith(("{", "[")):
        data = _parse_json(path, text)
        if isinstance(data, dict) and "annotations" in data and "images" in data:
            return "coco"
        images = data.get("images") if isinstance(data, dict) else None
        if isinstance(images, list) and (not images or (isinstance(images[0], dict) and "sentences" in images[0])):
            return "karpathy"
        raise CaptionFormatError(
            f"{path}: JSON is neither COCO captions (keys 'images' and 'annotations') nor Karpathy splits "
            "('images' entries with 'sentences'); for one object per line use a .jsonl file"
        )
    first = next((line for line in text.splitlines() if line.strip()), "")
    if _TOKEN_LINE.match(first):
        return "flickr_token"
    header = [h.strip().lower() for h in next(csv.reader([first]), [])]
    if "image" in header and ("caption" in header or "captions" in header):
        return "csv"
    raise CaptionFormatError(
        f"{path}:1: cannot detect the caption format; expected a CSV header with 'image' and 'caption'/'captions', "
        "'NAME#i<TAB>caption' lines, JSON (COCO/Karpathy) or JSONL; pass format= explicitly"
    )


def read_text(path: Path) -> str:
    """Read a UTF-8 text file (a BOM is allowed).

    Raises:
        CaptionFormatError: Not valid UTF-8; names the line and byte.
    """
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise CaptionFormatError(
            f"{path}:{line}: not valid UTF-8 (byte 0x{data[e.start]:02x}); re-encode the file as UTF-8"
        ) from e


def _parse_json(path: Path, text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise CaptionFormatError(f"{path}:{e.lineno}: invalid JSON ({e.msg} at column {e.colno})") from e


def _read_coco(path: Path, problems: list[Problem]) -> list[_Entry]:
    data = _parse_json(path, read_text(path))
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
    entries: list[_Entry] = []
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
        entries.append(_Entry(names[ann["image_id"]][0], _caption(ann["caption"]), where))
    for image_id, (name, where) in names.items():
        if image_id not in seen:
            entries.append(_Entry(name, None, where))
    return entries


def _read_karpathy(path: Path, problems: list[Problem]) -> list[_Entry]:
    data = _parse_json(path, read_text(path))
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise CaptionFormatError(f"{path}: Karpathy split JSON needs a list 'images'")
    entries: list[_Entry] = []
    for i, img in enumerate(data["images"]):
        where = f"{path.name}: images[{i}]"
        if not isinstance(img, dict) or not isinstance(img.get("filename"), str):
            problems.append(Problem(where, "expected an object with 'filename', 'split' and 'sentences'"))
            continue
        name = img["filename"]
        if isinstance(img.get("filepath"), str) and img["filepath"]:
            name = f"{img['filepath']}/{name}"
        split = normalize_split(str(img.get("split", "")))
        if split is None:
            problems.append(Problem(where, f"unknown split {img.get('split')!r}", name))
            continue
        sentences = img.get("sentences")
        if not isinstance(sentences, list) or not sentences:
            entries.append(_Entry(name, None, where, split))
            continue
        for j, s in enumerate(sentences):
            raw = s.get("raw") if isinstance(s, dict) else None
            if not isinstance(raw, str):
                problems.append(Problem(f"{where}.sentences[{j}]", "expected an object with a string 'raw'", name))
                continue
            entries.append(_Entry(name, _caption(raw), f"{where}.sentences[{j}]", split))
    return entries


def _read_csv(path: Path, problems: list[Problem]) -> list[_Entry]:
    text = read_text(path)
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [h.strip().lower() for h in next(reader)]
    except StopIteration:
        raise CaptionFormatError(f"{path}:1: empty file; expected a CSV header with 'image' and 'caption'") from None
    except csv.Error as e:
        raise CaptionFormatError(f"{path}:1: malformed CSV header ({e})") from e
    if "image" not in header or ("caption" not in header and "captions" not in header):
        raise CaptionFormatError(
            f"{path}:1: CSV header {header} needs columns 'image' and 'caption' (or 'captions', a JSON list)"
        )
    col = {name: i for i, name in enumerate(header)}
    entries: list[_Entry] = []
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            problems.append(Problem(f"{path.name}:{reader.line_num}", f"malformed CSV ({e})"))
            continue
        where = f"{path.name}:{reader.line_num}"
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            problems.append(Problem(where, f"expected {len(header)} fields {header}, got {len(row)}"))
            continue
        _add_record(
            entries,
            problems,
            where,
            row[col["image"]],
            row[col["caption"]] if "caption" in col else None,
            row[col["captions"]] if "captions" in col else None,
            row[col["split"]] if "split" in col else None,
            captions_is_json_text=True,
        )
    return entries


def _read_token(path: Path, problems: list[Problem]) -> list[_Entry]:
    entries: list[_Entry] = []
    for n, line in enumerate(read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        m = _TOKEN_LINE.match(line.rstrip("\r"))
        where = f"{path.name}:{n}"
        if m is None:
            problems.append(Problem(where, "expected 'NAME#i<TAB>caption'"))
            continue
        entries.append(_Entry(m["image"].strip(), _caption(m["caption"]), where))
    return entries


def _read_jsonl(path: Path, problems: list[Problem]) -> list[_Entry]:
    entries: list[_Entry] = []
    for n, line in enumerate(read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path.name}:{n}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            problems.append(Problem(where, f"invalid JSON ({e.msg} at column {e.colno})"))
            continue
        if not isinstance(obj, dict):
            problems.append(Problem(where, "expected a JSON object with 'image' and 'caption' or 'captions'"))
            continue
        split = obj.get("split")
        _add_record(
            entries,
            problems,
            where,
            obj.get("image"),
            obj.get("caption"),
            obj.get("captions"),
            split if split is None or isinstance(split, str) else str(split),
        )
    return entries


def _add_record(
    entries: list[_Entry],
    problems: list[Problem],
    where: str,
    image,
    caption,
    captions,
    split: str | None,
    captions_is_json_text: bool = False,
) -> None:
    """One CSV row or JSONL object with ``caption`` (str) or ``captions`` (list, JSON text in CSV)."""
    if not isinstance(image, str) or not image.strip():
        problems.append(Problem(where, "missing 'image'"))
        return
    image = image.strip()
    norm_split = None
    if split is not None and split.strip():
        norm_split = normalize_split(split)
        if norm_split is None:
            problems.append(Problem(where, f"unknown split {split!r} (expected train/val/test)", image))
            return
    if captions_is_json_text and isinstance(captions, str) and captions.strip():
        try:
            captions = json.loads(captions)
        except json.JSONDecodeError:
            problems.append(Problem(where, "'captions' must be a JSON list of strings", image))
            return
    elif captions_is_json_text and isinstance(captions, str):
        captions = None
    if captions is not None:
        if not isinstance(captions, list) or not all(isinstance(c, str) for c in captions):
            problems.append(Problem(where, "'captions' must be a list of strings", image))
            return
        if not captions:
            entries.append(_Entry(image, None, where, norm_split))
        entries.extend(_Entry(image, _caption(c), where, norm_split) for c in captions)
        return
    if not isinstance(caption, str):
        problems.append(Problem(where, "missing 'caption' (a string) or 'captions' (a list)", image))
        return
    entries.append(_Entry(image, _caption(caption), where, norm_split))


def _read_folder(folder: Path, root: Path, problems: list[Problem]) -> list[_Entry]:
    entries: list[_Entry] = []
    images = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    for img in images:
        try:
            rel = img.resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            rel = os.path.relpath(img, root)
        sidecar = img.with_suffix(".txt")
        if not sidecar.is_file():
            problems.append(Problem(img.relative_to(folder).as_posix(), f"no sidecar caption file {sidecar.name}"))
            continue
        lines = [(n, line.strip()) for n, line in enumerate(read_text(sidecar).splitlines(), start=1) if line.strip()]
        where_file = sidecar.relative_to(folder).as_posix()
        if not lines:
            entries.append(_Entry(rel, None, where_file))
        entries.extend(_Entry(rel, caption, f"{where_file}:{n}") for n, caption in lines)
    if not images:
        raise CaptionFormatError(f"{folder}: no image files ({', '.join(IMAGE_EXTENSIONS)}) found")
    if not entries:
        raise CaptionFormatError(
            f"{folder}: none of the {len(images)} images has a sidecar caption file (NAME.txt beside NAME.jpg); "
            "for a caption file, pass its path"
        )
    return entries


def _read_splits_file(path: Path, problems: list[Problem]) -> dict[str, tuple[str, str]]:
    """``splits.csv`` rows as image entry -> (split, where)."""
    reader = csv.reader(io.StringIO(read_text(path), newline=""))
    header = [h.strip().lower() for h in next(reader, [])]
    if "image" not in header or "split" not in header:
        raise CaptionFormatError(f"{path}:1: splits file needs a header with 'image' and 'split', got {header}")
    i_img, i_split = header.index("image"), header.index("split")
    out: dict[str, tuple[str, str]] = {}
    for row in reader:
        where = f"{path.name}:{reader.line_num}"
        if not any(c.strip() for c in row):
            continue
        if len(row) != len(header):
            problems.append(Problem(where, f"expected {len(header)} fields {header}, got {len(row)}"))
            continue
        split = normalize_split(row[i_split])
        if split is None:
            problems.append(Problem(where, f"unknown split {row[i_split]!r} (expected train/val/test)", row[i_img]))
            continue
        out[row[i_img].strip()] = (split, where)
    return out


def _assemble(
    entries: list[_Entry],
    root: Path,
    source: Path,
    fmt: str,
    external_splits: dict[str, tuple[str, str]] | None,
    splits_file: Path,
    check_files: bool,
    verify_images: bool,
) -> tuple[CaptionSet, list[Problem]]:
    problems: list[Problem] = []
    captions: dict[Path, list[str]] = {}
    splits: dict[Path, str] = {}
    bad: set[Path] = set()
    checked: dict[Path, str | None] = {}  # path -> reason it is unusable, None when fine
    for e in entries:
        target = (root / e.image).resolve()
        if target not in checked:
            checked[target] = _check_image(target, root, check_files, verify_images)
        reason = checked[target]
        if reason is not None:
            if target not in bad:  # report each bad image once, at its first mention
                problems.append(Problem(e.where, reason, e.image))
                bad.add(target)
            continue
        if e.caption is None:
            problems.append(Problem(e.where, "no captions", e.image))
            continue
        if not e.caption:
            problems.append(Problem(e.where, "empty caption", e.image))
            continue
        if e.split is not None:
            previous = splits.setdefault(target, e.split)
            if previous != e.split:
                problems.append(Problem(e.where, f"split {e.split!r} conflicts with earlier {previous!r}", e.image))
                continue
        captions.setdefault(target, []).append(e.caption)
    if external_splits is not None:
        by_path = {(root / name).resolve(): value for name, value in external_splits.items()}
        for target in captions:
            if target not in by_path:
                problems.append(
                    Problem(splits_file.name, "not listed in splits.csv", target.relative_to(root).as_posix())
                )
            else:
                splits[target] = by_path[target][0]
        for target in [t for t in captions if t not in splits]:
            del captions[target]
    elif splits:
        for target in [t for t in captions if t not in splits]:
            problems.append(
                Problem(str(source.name), "some captions have a split and this image has none", str(target))
            )
            del captions[target]
    return CaptionSet(captions, root, source, fmt, splits), problems


def _check_image(target: Path, root: Path, check_files: bool, verify_images: bool) -> str | None:
    if not target.is_relative_to(root):
        return f"path escapes the image root {root}"
    if not check_files:
        return None
    if not target.is_file():
        return f"image file not found ({target})"
    if target.stat().st_size == 0:
        return f"image file is empty ({target})"
    if verify_images:
        try:
            load_image(target)
        except ImageLoadError as e:
            return e.reason
    return None


def _caption(text) -> str:
    return " ".join(str(text).split())


def _guess_root(parent: Path, entries: list[_Entry]) -> Path:
    """The caption file's directory, or its ``images/`` subdirectory when the entries are found there."""
    sample = [e.image for e in entries[:200:10]][:20]
    candidate = parent / "images"
    if not sample or not candidate.is_dir():
        return parent
    here = sum((parent / s).is_file() for s in sample)
    there = sum((candidate / s).is_file() for s in sample)
    return candidate if there > here else parent
