"""``vitcap evaluate``: score a predictions file against reference captions, without Java.

Predictions are either the JSON lines written by ``vitcap caption --json`` (one object per line,
``{"image": path, "caption": str, "score": float, "alternatives": [{"caption": str, ...}, ...]}``) or a COCO
results file (a JSON array of ``{"image_id": id, "caption": str}``). References are any caption file that
:func:`vitcap.data.captions.read_captions` reads (COCO captions JSON, Karpathy JSON, Flickr ``captions.txt``,
``Flickr8k.token.txt``, JSON lines, a folder with sidecar ``.txt`` files); image files need not exist.

Predictions are matched to reference images by file name (the path's last component; if two reference images
share a name, the longest matching path suffix decides) or, for COCO results, by ``image_id`` (the id of a COCO
captions file, else a file stem equal to the id or ending in its digits, ``COCO_val2014_000000391895`` = 391895).
Scores are computed over the images that have both; predictions without references and reference images
without a prediction are counted in one warning each, naming the files.

Both sides are COCO-tokenised (:func:`~vitcap.metrics.tokenize.coco_tokenize`) and scored with BLEU-1..4,
ROUGE-L and CIDEr-D on pycocoevalcap's scales (0-1; CIDEr-D x10) by :func:`vitcap.metrics.caption_scores`, plus
the degenerate-output statistics of :mod:`vitcap.metrics.stats`. METEOR and SPICE are optional
(``--java-metrics``; they need Java).

Unusable input (a missing or unreadable file, a malformed line, an unknown format) raises a
:class:`vitcap.errors.UserError` naming the file and line; ``main`` prints it on one line and returns 2.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import warnings
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any

from vitcap.errors import ConfigError, DataError, UserError, one_line
from vitcap.metrics.caption import POINT_METRICS, caption_scores, java_available
from vitcap.metrics.stats import caption_stats
from vitcap.metrics.tokenize import coco_tokenize

__all__ = ["EvaluationError", "Prediction", "evaluate_files", "main", "read_predictions"]

_MAX_NAMED = 5


class EvaluationError(DataError):
    """Unusable evaluation input; the one-line message names the file (and line or entry) and the problem."""


@dataclass
class Prediction:
    """One predicted caption, with the n-best alternatives when the file has them.

    Attributes:
        image: The image path or name as written (``vitcap caption --json``), else None.
        image_id: The COCO ``image_id`` (COCO results files), else None.
        caption: The best caption.
        alternatives: Other captions for the same image (beam n-best), best first.
        where: ``"file:line"`` or ``"file: [index]"``, for messages.
    """

    image: str | None
    image_id: int | str | None
    caption: str
    alternatives: list[str] = field(default_factory=list)
    where: str = ""

    @property
    def name(self) -> str:
        """How messages name this prediction's image."""
        return self.image if self.image is not None else f"image_id {self.image_id}"


def _read_text(path: Path) -> str:
    if not path.exists():
        raise EvaluationError(f"{path}: no such file")
    if path.is_dir():
        raise EvaluationError(f"{path}: is a directory, expected a predictions file")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise EvaluationError(f"{path}: cannot read ({e.strerror or e})", path=path) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise EvaluationError(f"{path}:{line}: not valid UTF-8 (byte 0x{data[e.start]:02x})") from None


def _caption_of(value: Any, where: str, key: str) -> str:
    if not isinstance(value, str):
        raise EvaluationError(f"{where}: {key!r} must be a string, got {type(value).__name__}")
    return value


def _alternatives(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise EvaluationError(f"{where}: 'alternatives' must be a list, got {type(value).__name__}")
    out = []
    for i, alt in enumerate(value):
        # vitcap caption writes {"caption", "score"} objects; plain strings are accepted too.
        out.append(_caption_of(alt.get("caption") if isinstance(alt, dict) else alt, where, f"alternatives[{i}]"))
    return out


def _prediction(obj: Any, where: str) -> Prediction:
    if not isinstance(obj, dict):
        raise EvaluationError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    if "caption" not in obj:
        raise EvaluationError(f"{where}: missing 'caption'")
    image = obj.get("image", obj.get("file_name"))
    image_id = obj.get("image_id")
    if image is None and image_id is None:
        raise EvaluationError(f"{where}: missing 'image' (or COCO 'image_id')")
    if image is not None and not isinstance(image, str):
        raise EvaluationError(f"{where}: 'image' must be a string, got {type(image).__name__}")
    if image_id is not None and not isinstance(image_id, (int, str)):
        raise EvaluationError(f"{where}: 'image_id' must be an integer or string, got {type(image_id).__name__}")
    return Prediction(
        image=image,
        image_id=image_id,
        caption=_caption_of(obj["caption"], where, "caption"),
        alternatives=_alternatives(obj.get("alternatives"), where),
        where=where,
    )


def read_predictions(path: str | Path) -> list[Prediction]:
    """Read predictions: ``vitcap caption --json`` JSON lines, or a COCO results JSON array.

    Raises:
        EvaluationError: Missing file, not UTF-8, malformed JSON line or entry, or no predictions at all; the
            message names the file and line (or array index).
    """
    path = Path(path)
    text = _read_text(path)
    predictions: list[Prediction] = []
    if text.lstrip().startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as e:
            raise EvaluationError(f"{path}:{e.lineno}: invalid JSON ({e.msg} at column {e.colno})") from None
        predictions = [_prediction(obj, f"{path}: [{i}]") for i, obj in enumerate(items)]
    else:
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise EvaluationError(f"{path}:{lineno}: invalid JSON ({e.msg} at column {e.colno})") from None
            predictions.append(_prediction(obj, f"{path}:{lineno}"))
    if not predictions:
        raise EvaluationError(f"{path}: no predictions found")
    return predictions


def _coco_image_names(path: Path) -> dict[str, str]:
    """``str(image id) -> file name`` of a COCO captions file (read_captions keys images by path, not id)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        return {}
    return {
        str(img["id"]): str(img["file_name"])
        for img in data["images"]
        if isinstance(img, dict) and "id" in img and "file_name" in img
    }


class _Matcher:
    """Finds the reference image of a prediction by file name, path suffix or COCO image id."""

    def __init__(self, references: dict[str, list[str]], coco_names: dict[str, str]) -> None:
        self.by_name: defaultdict[str, list[str]] = defaultdict(list)
        self.by_stem_number: defaultdict[int, list[str]] = defaultdict(list)
        self.by_stem: defaultdict[str, list[str]] = defaultdict(list)
        for key in references:
            p = PurePath(key)
            self.by_name[p.name].append(key)
            self.by_stem[p.stem].append(key)
            digits = re.search(r"(\d+)$", p.stem)
            if digits:
                self.by_stem_number[int(digits.group(1))].append(key)
        self.coco_names = coco_names

    @staticmethod
    def _best_suffix(keys: list[str], image: str) -> str | None:
        """The key sharing the longest path suffix with ``image``; None when that is a tie (ambiguous)."""
        if len(keys) == 1:
            return keys[0]
        parts = PurePath(image.replace("\\", "/")).parts

        def common(key: str) -> int:
            n = 0
            for a, b in zip(reversed(PurePath(key).parts), reversed(parts)):
                if a != b:
                    break
                n += 1
            return n

        ranked = sorted(keys, key=common, reverse=True)
        return ranked[0] if common(ranked[0]) > common(ranked[1]) else None

    def match(self, pred: Prediction) -> str | None:
        """The reference key of ``pred``; None when no reference image or several equally good ones match."""
        if pred.image is not None:
            keys = self.by_name.get(PurePath(pred.image.replace("\\", "/")).name)
            if keys:
                return self._best_suffix(keys, pred.image)
        if pred.image_id is not None:
            image_id = str(pred.image_id)
            if image_id in self.coco_names:
                name = self.coco_names[image_id]
                keys = self.by_name.get(PurePath(name).name)
                if keys:
                    return self._best_suffix(keys, name)
            keys = self.by_stem.get(image_id)
            if keys is None and image_id.isdigit():
                keys = self.by_stem_number.get(int(image_id))
            if keys:
                return keys[0] if len(keys) == 1 else None
        return None

    def candidates(self, pred: Prediction) -> int:
        """How many reference images share the prediction's file name (to tell "ambiguous" from "missing")."""
        return len(self.by_name.get(PurePath(pred.image.replace("\\", "/")).name, [])) if pred.image else 0


def _named(items: Sequence[str]) -> str:
    shown = ", ".join(items[:_MAX_NAMED])
    return shown + (f", ... ({len(items) - _MAX_NAMED} more)" if len(items) > _MAX_NAMED else "")


def _read_references(path: Path, references_format: str) -> dict[str, list[str]]:
    from vitcap.data.captions import read_captions

    if not path.exists():
        raise EvaluationError(f"{path}: no such file")
    try:
        # Evaluation needs only the captions; the images may live elsewhere or not at all. An unknown format or an
        # unusable file raises a vitcap.errors.UserError (ConfigError, CaptionFormatError, ManifestError).
        captions = read_captions(path, format=references_format, check_files=False)
    except OSError as e:
        raise EvaluationError(f"{path}: cannot read ({e.strerror or e})", path=path) from None
    return {p.as_posix(): list(caps) for p, caps in captions.items()}


def evaluate_files(
    predictions: str | Path,
    references: str | Path,
    references_format: str = "auto",
    java_metrics: bool = False,
) -> dict[str, Any]:
    """Score a predictions file against a reference caption file.

    Args:
        predictions: ``vitcap caption --json`` output (JSON lines) or a COCO results JSON array.
        references: A caption file in any format ``read_captions`` reads.
        references_format: ``"auto"`` or one of :data:`vitcap.data.captions.FORMATS`.
        java_metrics: Also run METEOR and SPICE through pycocoevalcap (needs Java; SPICE needs its models).

    Returns:
        ``{"predictions", "references": paths, "num_images": images scored, "num_unmatched_predictions",
        "num_unmatched_references", "scores": {"bleu1".."bleu4", "rouge_l", "cider_d"[, "meteor", "spice"]},
        "stats": caption_stats of the best captions (plus "distinct_per_image" and "captions_per_image" over
        the alternatives when the file has them)}``. Scores are on pycocoevalcap's scales (0-1, CIDEr-D x10).

    Raises:
        EvaluationError: Unreadable predictions, or no prediction matches a reference image.
        vitcap.errors.UserError: Unreadable references or an unknown ``references_format`` (from
            ``read_captions``: ``CaptionFormatError``, ``ManifestError``, ``ConfigError``).
        RuntimeError: ``java_metrics`` without Java or pycocoevalcap.
    """
    predictions, references = Path(predictions), Path(references)
    preds = read_predictions(predictions)
    refs = _read_references(references, references_format)
    matcher = _Matcher(refs, _coco_image_names(references) if references.suffix.lower() == ".json" else {})

    matched: dict[str, Prediction] = {}
    unmatched: list[str] = []
    ambiguous: list[str] = []
    duplicates: list[str] = []
    for pred in preds:
        key = matcher.match(pred)
        if key is None and matcher.candidates(pred) > 1:
            ambiguous.append(f"{pred.name} ({pred.where})")
        elif key is None:
            unmatched.append(pred.name)
        elif key in matched:
            duplicates.append(f"{pred.name} ({pred.where})")
        else:
            matched[key] = pred
    if duplicates:
        warnings.warn(
            f"{predictions}: {len(duplicates)} more prediction(s) for an image already predicted, "
            f"only the first counts: {_named(duplicates)}",
            stacklevel=2,
        )
    if ambiguous:
        warnings.warn(
            f"{predictions}: {len(ambiguous)} prediction(s) match several reference images of the same file name "
            f"in {references} and are not scored; give a longer path: {_named(ambiguous)}",
            stacklevel=2,
        )
    if unmatched:
        warnings.warn(
            f"{predictions}: {len(unmatched)} of {len(preds)} predictions have no references in {references} "
            f"and are not scored: {_named(unmatched)}",
            stacklevel=2,
        )
    missing = [key for key in refs if key not in matched]
    if not matched:
        raise EvaluationError(
            f"{predictions}: no prediction matches an image of {references} "
            f"(predictions name e.g. {_named([p.name for p in preds][:3])}; "
            f"references name e.g. {_named([PurePath(k).name for k in refs][:3])})"
        )
    if missing:
        warnings.warn(
            f"{references}: {len(missing)} of {len(refs)} reference images have no prediction in {predictions}; "
            f"scoring the {len(matched)} that do (missing: {_named([PurePath(k).name for k in missing])})",
            stacklevel=2,
        )

    keys = list(matched)
    candidates = [coco_tokenize(matched[k].caption) for k in keys]
    ref_lists = [[coco_tokenize(r) for r in refs[k]] for k in keys]
    scores = caption_scores(candidates, ref_lists, java=java_metrics)
    stats = caption_stats(candidates, tokenize=False)
    if any(matched[k].alternatives for k in keys):
        all_captions = [c for k in keys for c in [matched[k].caption, *matched[k].alternatives]]
        all_images = [k for k in keys for _ in range(1 + len(matched[k].alternatives))]
        stats["distinct_per_image"] = caption_stats(all_captions, all_images)["distinct_per_image"]
        stats["captions_per_image"] = len(all_captions) / len(keys)
    return {
        "predictions": str(predictions),
        "references": str(references),
        "num_images": len(keys),
        "num_unmatched_predictions": len(unmatched) + len(ambiguous),
        "num_unmatched_references": len(missing),
        "scores": scores,
        "stats": stats,
    }


_LABELS = {
    "bleu1": "BLEU-1",
    "bleu2": "BLEU-2",
    "bleu3": "BLEU-3",
    "bleu4": "BLEU-4",
    "rouge_l": "ROUGE-L",
    "cider_d": "CIDEr-D",
    "meteor": "METEOR",
    "spice": "SPICE",
}


def _print_table(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    # soft_wrap: long paths stay on one line instead of being broken at the terminal width
    console.print(
        f"{result['predictions']} vs {result['references']}: {result['num_images']} images scored", soft_wrap=True
    )
    table = Table(title="caption metrics")
    table.add_column("metric")
    table.add_column("score", justify="right")
    table.add_column("x100", justify="right")
    for key, value in result["scores"].items():
        table.add_row(_LABELS.get(key, key), f"{value:.4f}", f"{value * 100:.2f}" if key in POINT_METRICS else "")
    console.print(table)
    stats = Table(title="output statistics")
    stats.add_column("statistic")
    stats.add_column("value", justify="right")
    for key, value in result["stats"].items():
        text = (
            f"{int(value)}"
            if float(value).is_integer() and key.startswith(("num_", "distinct_c", "vocab"))
            else f"{value:.4f}"
        )
        stats.add_row(key, text)
    console.print(stats)


def main(argv: list[str]) -> int:
    """``vitcap evaluate``: print the scores as a table, or one JSON object with ``--json``.

    Args:
        argv: The command-line arguments after ``evaluate``.

    Returns:
        0 on success, 2 on unusable input (a ``UserError``: the one-line reason goes to stderr).
    """
    parser = argparse.ArgumentParser(
        prog="vitcap evaluate",
        description="Score predicted captions against references: BLEU-1..4, ROUGE-L, CIDEr-D (COCO caption "
        "evaluation, no Java), plus degenerate-output statistics. Scores use pycocoevalcap's scales "
        "(0-1; CIDEr-D x10); the table also shows them x100.",
    )
    parser.add_argument("--predictions", required=True, type=Path, help="vitcap caption --json output or COCO results")
    parser.add_argument("--references", required=True, type=Path, help="reference captions (any read_captions format)")
    parser.add_argument("--references-format", default="auto", help="auto (default), coco, karpathy, csv, ...")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    parser.add_argument("--java-metrics", action="store_true", help="also METEOR and SPICE (needs Java)")
    args = parser.parse_args(argv)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            if args.java_metrics and not java_available():
                raise ConfigError(
                    "METEOR/SPICE need a Java runtime on the PATH and pycocoevalcap (pip install pycocoevalcap)",
                    key="--java-metrics",
                )
            result = evaluate_files(args.predictions, args.references, args.references_format, args.java_metrics)
        except UserError as e:
            _print_warnings(caught)
            print(f"vitcap evaluate: error: {one_line(e)}", file=sys.stderr)
            return 2
    _print_warnings(caught)
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
    else:
        _print_table(result)
    return 0


def _print_warnings(caught: list[warnings.WarningMessage]) -> None:
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
