"""`vitcap evaluate`: evaluate_files and main end to end on files, through the real `vitcap` entry point too."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest

from vitcap.cli.evaluate import EvaluationError, evaluate_files, main, read_predictions
from vitcap.metrics import coco_tokenize, java_available, java_metrics
from vitcap.metrics.bleu import corpus_bleu
from vitcap.metrics.cider import cider_d
from vitcap.metrics.rouge import rouge_l

REFS = {
    "COCO_val2014_000000000001.jpg": ["A dog runs on the grass.", "a brown dog running", "The dog is in a park"],
    "COCO_val2014_000000000002.jpg": ["A man rides a horse.", "a person riding a brown horse"],
    "COCO_val2014_000000000003.jpg": ["Two children play in the snow", "kids in the snow"],
    "COCO_val2014_000000000004.jpg": ["A red car on a street", "a car parked outside"],
}
PREDS = {
    "COCO_val2014_000000000001.jpg": ("a dog running on the grass", ["a dog on grass", "a dog running on the grass"]),
    "COCO_val2014_000000000002.jpg": ("A man riding a horse.", ["a man on a horse"]),
    "COCO_val2014_000000000003.jpg": ("two kids playing in snow", ["children in the snow"]),
}


def write_coco_references(path: Path, refs: dict[str, list[str]] = REFS) -> Path:
    images = [{"id": i + 1, "file_name": name} for i, name in enumerate(refs)]
    annotations = [
        {"id": 100 * (i + 1) + j, "image_id": i + 1, "caption": cap}
        for i, caps in enumerate(refs.values())
        for j, cap in enumerate(caps)
    ]
    path.write_text(json.dumps({"images": images, "annotations": annotations}), encoding="utf-8")
    return path


def write_flickr_references(path: Path, refs: dict[str, list[str]] = REFS) -> Path:
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "caption"])
        for name, caps in refs.items():
            writer.writerows([name, cap] for cap in caps)
    return path


def write_jsonl_predictions(path: Path, preds: dict[str, tuple[str, list[str]]] = PREDS, extra: int = 0) -> Path:
    lines = [
        {"image": f"/data/val/{name}", "caption": cap, "score": -0.5, "alternatives": [{"caption": a, "score": -1.0} for a in alts]}
        for name, (cap, alts) in preds.items()
    ]  # fmt: skip
    lines += [
        {"image": f"unknown_{i}.jpg", "caption": "a cat", "score": -1.0, "alternatives": []} for i in range(extra)
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return path


def expected_scores(names: list[str]) -> dict[str, float]:
    cands = [coco_tokenize(PREDS[n][0]) for n in names]
    refs = [[coco_tokenize(r) for r in REFS[n]] for n in names]
    out = {f"bleu{k + 1}": v for k, v in enumerate(corpus_bleu(cands, refs))}
    out["rouge_l"] = rouge_l(cands, refs)[0]
    out["cider_d"] = cider_d(cands, refs)[0]
    return out


@pytest.mark.parametrize("writer", [write_coco_references, write_flickr_references], ids=["coco", "flickr_csv"])
def test_jsonl_predictions_scored_over_the_intersection(tmp_path: Path, writer) -> None:  # noqa: ANN001
    refs = writer(tmp_path / ("captions.json" if writer is write_coco_references else "captions.txt"))
    preds = write_jsonl_predictions(tmp_path / "preds.jsonl", extra=2)
    with pytest.warns(UserWarning) as record:
        result = evaluate_files(preds, refs)
    messages = [str(w.message) for w in record]
    assert any("2 of 5 predictions have no references" in m and "unknown_0.jpg" in m for m in messages)
    assert any("1 of 4 reference images have no prediction" in m and "000000000004.jpg" in m for m in messages)
    assert result["num_images"] == 3
    assert result["num_unmatched_predictions"] == 2 and result["num_unmatched_references"] == 1
    assert result["scores"] == pytest.approx(expected_scores(list(PREDS)), abs=1e-12)
    # alternatives: image 1 has a duplicate alternative -> 2 distinct of 3, images 2 and 3: 2 of 2
    assert result["stats"]["distinct_per_image"] == pytest.approx((2 + 2 + 2) / 3)
    assert result["stats"]["captions_per_image"] == pytest.approx((3 + 2 + 2) / 3)
    assert result["stats"]["distinct_ratio"] == 1.0


def test_coco_results_matched_by_image_id(tmp_path: Path) -> None:
    refs = write_coco_references(tmp_path / "captions.json")
    results = [{"image_id": i + 1, "caption": PREDS[name][0]} for i, name in enumerate(REFS) if name in PREDS]
    (tmp_path / "results.json").write_text(json.dumps(results), encoding="utf-8")
    with pytest.warns(UserWarning, match="1 of 4 reference images have no prediction"):
        result = evaluate_files(tmp_path / "results.json", refs)
    assert result["num_images"] == 3
    assert result["scores"] == pytest.approx(expected_scores(list(PREDS)), abs=1e-12)
    # Without a COCO id table (Flickr-style CSV), the id is matched to the digits ending the file stem.
    with pytest.warns(UserWarning, match="1 of 4 reference images"):
        by_stem = evaluate_files(tmp_path / "results.json", write_flickr_references(tmp_path / "captions.txt"))
    assert by_stem["scores"] == pytest.approx(result["scores"], abs=1e-12)


def test_real_flickr_file_matches_pycocoevalcap(tmp_path: Path, flickr_captions: dict[str, list[str]]) -> None:
    pycoco_bleu = pytest.importorskip("pycocoevalcap.bleu.bleu")
    pycoco_cider = pytest.importorskip("pycocoevalcap.cider.cider")
    refs = write_flickr_references(tmp_path / "captions.txt", {n: caps[1:] for n, caps in flickr_captions.items()})
    preds = tmp_path / "preds.jsonl"
    preds.write_text("".join(json.dumps({"image": n, "caption": c[0]}) + "\n" for n, c in flickr_captions.items()))
    result = evaluate_files(preds, refs)
    gts = {n: [coco_tokenize(c) for c in caps[1:]] for n, caps in flickr_captions.items()}
    res = {n: [coco_tokenize(caps[0])] for n, caps in flickr_captions.items()}
    bleu, _ = pycoco_bleu.Bleu(4).compute_score(gts, res, verbose=0)
    assert result["num_images"] == len(flickr_captions) == 866
    assert result["scores"]["bleu4"] == pytest.approx(bleu[3], abs=1e-6)
    assert result["scores"]["cider_d"] == pytest.approx(pycoco_cider.Cider().compute_score(gts, res)[0], abs=1e-6)


def test_main_prints_one_json_object(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    refs = write_coco_references(tmp_path / "captions.json")
    preds = write_jsonl_predictions(tmp_path / "preds.jsonl")
    assert main(["--predictions", str(preds), "--references", str(refs), "--json"]) == 0
    out, err = capsys.readouterr()
    result = json.loads(out)  # exactly one JSON document on stdout
    assert result["scores"] == pytest.approx(expected_scores(list(PREDS)), abs=1e-12)
    assert "warning: " in err and "1 of 4 reference images" in err


def test_main_prints_tables(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    refs = write_coco_references(tmp_path / "captions.json")
    preds = write_jsonl_predictions(tmp_path / "preds.jsonl")
    assert main(["--predictions", str(preds), "--references", str(refs)]) == 0
    out = capsys.readouterr().out
    for label in ("BLEU-4", "ROUGE-L", "CIDEr-D", "x100", "vocab_used", "repeat_ngram_share", "3 images scored"):
        assert label in out


def test_vitcap_evaluate_entry_point(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from vitcap.cli.main import main as vitcap_main

    refs = write_coco_references(tmp_path / "captions.json")
    preds = write_jsonl_predictions(tmp_path / "preds.jsonl")
    assert vitcap_main(["evaluate", "--predictions", str(preds), "--references", str(refs), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["num_images"] == 3


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"image": "a.jpg", "caption": "a dog"}\n{"image": "b.jpg", "caption": \n', r"preds.jsonl:2: invalid JSON"),
        (b'{"image": "a.jpg", "caption": "a dog"}\n\n{"image": "b.jpg"}\n', r"preds.jsonl:3: missing 'caption'"),
        (b'{"caption": "a dog"}\n', r"preds.jsonl:1: missing 'image'"),
        (b'{"image": "a.jpg", "caption": 3}\n', r"preds.jsonl:1: 'caption' must be a string"),
        (b'{"image": "a.jpg", "caption": "a", "alternatives": "b"}\n', r"preds.jsonl:1: 'alternatives' must be a list"),
        (b'{"image": "a.jpg", "caption": "caf\xe9"}\n', r"preds.jsonl:1: not valid UTF-8 \(byte 0xe9\)"),
        (b"[1, 2]", r"preds.jsonl: \[0\]: expected a JSON object"),
        (b"\n\n", r"preds.jsonl: no predictions found"),
    ],
)
def test_bad_predictions_give_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, message: str
) -> None:
    refs = write_coco_references(tmp_path / "captions.json")
    preds = tmp_path / "preds.jsonl"
    preds.write_bytes(content)
    with pytest.raises(EvaluationError, match=message):
        read_predictions(preds)
    assert main(["--predictions", str(preds), "--references", str(refs)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("vitcap evaluate: error: ") and "\n" not in err
    assert str(preds) in err


def test_missing_files_and_no_overlap(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    refs = write_coco_references(tmp_path / "captions.json")
    preds = write_jsonl_predictions(tmp_path / "preds.jsonl")
    with pytest.raises(EvaluationError, match="nope.jsonl: no such file"):
        evaluate_files(tmp_path / "nope.jsonl", refs)
    with pytest.raises(EvaluationError, match="nope.json: no such file"):
        evaluate_files(preds, tmp_path / "nope.json")
    assert main(["--predictions", str(preds), "--references", str(tmp_path / "nope.json")]) == 2
    assert "nope.json: no such file" in capsys.readouterr().err
    other = write_jsonl_predictions(tmp_path / "other.jsonl", preds={"x.jpg": ("a dog", [])})
    with pytest.warns(UserWarning), pytest.raises(EvaluationError, match="no prediction matches an image"):
        evaluate_files(other, refs)


def test_duplicate_predictions_keep_the_first(tmp_path: Path) -> None:
    refs = write_coco_references(tmp_path / "captions.json")
    preds = write_jsonl_predictions(tmp_path / "preds.jsonl")
    with preds.open("a", encoding="utf-8") as f:
        f.write(json.dumps({"image": "COCO_val2014_000000000001.jpg", "caption": "something else entirely"}) + "\n")
    with pytest.warns(UserWarning) as record:
        result = evaluate_files(preds, refs)
    assert any(
        "1 more prediction(s) for an image already predicted" in str(w.message) and "preds.jsonl:4" in str(w.message)
        for w in record
    )
    assert result["scores"] == pytest.approx(expected_scores(list(PREDS)), abs=1e-12)


@pytest.mark.skipif(
    not (os.environ.get("VITCAP_JAVA_TESTS") and java_available()),
    reason="METEOR starts a JVM (~15 s); set VITCAP_JAVA_TESTS=1 with Java installed to run it",
)
def test_meteor_through_java() -> None:
    cands = [coco_tokenize("A dog runs on the grass."), "a red car"]
    refs = [[coco_tokenize("A dog is running on grass."), "a brown dog runs"], ["two people talking"]]
    scores = java_metrics(cands, refs, spice=False)
    assert 0.0 < scores["meteor"] < 1.0 and "spice" not in scores


def test_same_file_name_in_two_folders(tmp_path: Path) -> None:
    refs = tmp_path / "captions.jsonl"
    rows = [{"image": "a/x.jpg", "caption": "a dog on grass"}, {"image": "b/x.jpg", "caption": "a red car"}]
    refs.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    preds = tmp_path / "preds.jsonl"
    rows = [{"image": "/elsewhere/b/x.jpg", "caption": "a red car"}, {"image": "x.jpg", "caption": "a dog"}]
    preds.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    with pytest.warns(UserWarning) as record:
        result = evaluate_files(preds, refs)
    # The longer path picks b/x.jpg; the bare name is ambiguous and reported as such, not as "no references".
    assert result["num_images"] == 1 and result["scores"]["rouge_l"] == pytest.approx(1.0)
    assert result["num_unmatched_predictions"] == 1
    assert any("match several reference images" in str(w.message) and "preds.jsonl:2" in str(w.message) for w in record)
