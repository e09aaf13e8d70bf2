import collections
import csv
import json
from pathlib import Path

import pytest
from PIL import Image

from vitcap.data.captions import (
    CaptionFormatError,
    ManifestError,
    detect_format,
    hash_split,
    read_captions,
)

SHARED_DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
FLICKR = SHARED_DATA / "flickr8k-mini"

CONTENT = {
    "a.png": ['A dog, "Rex", runs on the grass .', "a brown dog running"],
    "b.png": ["Un café près de la mer"],
    "c.png": ["two kids play", "children playing outside", "kids, outdoors, playing"],
}


def _images(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(CONTENT):
        Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(root / name)
    return root


def _write_all_formats(tmp: Path) -> dict[str, tuple[Path, Path]]:
    """The same content in all 7 formats: name -> (path, images_dir)."""
    images = _images(tmp / "images")
    out = {}
    coco_images = [{"id": 10 + i, "file_name": n} for i, n in enumerate(CONTENT)]
    ids = {n: 10 + i for i, n in enumerate(CONTENT)}
    anns = [{"id": k, "image_id": ids[n], "caption": c} for k, (n, c) in enumerate(_pairs())]
    (tmp / "coco.json").write_text(json.dumps({"images": coco_images, "annotations": anns}), encoding="utf-8")
    out["coco"] = (tmp / "coco.json", images)
    karpathy = {
        "images": [
            {"filename": n, "filepath": "", "split": "restval", "sentences": [{"raw": c, "tokens": []} for c in caps]}
            for n, caps in CONTENT.items()
        ]
    }
    (tmp / "dataset_test.json").write_text(json.dumps(karpathy), encoding="utf-8")
    out["karpathy"] = (tmp / "dataset_test.json", images)
    with open(tmp / "captions.txt", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["image", "caption"])
        w.writerows(_pairs())
    out["flickr_csv"] = (tmp / "captions.txt", images)
    (tmp / "Flickr8k.token.txt").write_text(
        "".join(f"{n}#{i}\t{c}\n" for n, caps in CONTENT.items() for i, c in enumerate(caps)), encoding="utf-8"
    )
    out["flickr_token"] = (tmp / "Flickr8k.token.txt", images)
    with open(tmp / "data.jsonl", "w", encoding="utf-8") as f:
        f.write(json.dumps({"image": "a.png", "captions": CONTENT["a.png"]}) + "\n\n")
        f.write(json.dumps({"image": "b.png", "caption": CONTENT["b.png"][0]}) + "\n")
        for c in CONTENT["c.png"]:
            f.write(json.dumps({"image": "c.png", "caption": c}) + "\n")
    out["jsonl"] = (tmp / "data.jsonl", images)
    with open(tmp / "lists.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["image", "captions"])
        w.writerows([n, json.dumps(caps)] for n, caps in CONTENT.items())
    out["csv_lists"] = (tmp / "lists.csv", images)
    folder = _images(tmp / "folder")
    for n, caps in CONTENT.items():
        (folder / n).with_suffix(".txt").write_text("\n".join(caps) + "\n\n", encoding="utf-8")
    out["folder"] = (folder, folder)
    return out


def _pairs():
    return [(n, c) for n, caps in CONTENT.items() for c in caps]


def test_all_formats_yield_identical_samples(tmp_path):
    formats = _write_all_formats(tmp_path)
    expected = {n: [" ".join(c.split()) for c in caps] for n, caps in CONTENT.items()}
    detected = {}
    for name, (path, images_dir) in formats.items():
        cs = read_captions(path, images_dir=images_dir if name != "folder" else None)
        detected[name] = cs.format
        assert cs.by_id() == expected, name
        assert list(cs) == [(images_dir / n).resolve() for n in CONTENT], name
        assert cs.num_captions == 6
    assert detected == {
        "coco": "coco",
        "karpathy": "karpathy",
        "flickr_csv": "csv",
        "flickr_token": "flickr_token",
        "jsonl": "jsonl",
        "csv_lists": "csv",
        "folder": "folder",
    }
    # Karpathy's own splits, restval counted as train
    karpathy = read_captions(formats["karpathy"][0], images_dir=formats["karpathy"][1])
    assert set(karpathy.splits.values()) == {"train"}


def test_default_images_dir_is_beside_or_images_subdir(tmp_path):
    _images(tmp_path / "images")
    (tmp_path / "captions.txt").write_text("image,caption\na.png,a dog\n", encoding="utf-8")
    cs = read_captions(tmp_path / "captions.txt")
    assert list(cs) == [(tmp_path / "images" / "a.png").resolve()]
    # a data directory with one caption file means that file
    assert read_captions(tmp_path).format == "csv"


def test_splits_csv_beside_the_file(tmp_path):
    formats = _write_all_formats(tmp_path)
    (tmp_path / "splits.csv").write_text("image,split\na.png,train\nb.png,dev\nc.png,test\n", encoding="utf-8")
    cs = read_captions(formats["flickr_csv"][0])
    assert {cs.image_id(p): s for p, s in cs.splits.items()} == {"a.png": "train", "b.png": "val", "c.png": "test"}
    parts = cs.split_images()
    assert [len(parts[s]) for s in ("train", "val", "test")] == [1, 1, 1]


def test_split_column_and_hash_split(tmp_path):
    _images(tmp_path)
    lines = [{"image": "a.png", "caption": "x", "split": "train"}, {"image": "b.png", "caption": "y", "split": "val"}]
    lines.append({"image": "c.png", "caption": "z", "split": "test"})
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(x) for x in lines), encoding="utf-8")
    cs = read_captions(tmp_path / "d.jsonl")
    assert sorted(cs.splits.values()) == ["test", "train", "val"]
    # hash split: deterministic, roughly the requested fractions
    names = [f"img_{i}.jpg" for i in range(2000)]
    splits = collections.Counter(hash_split(n, 0.1, 0.2) for n in names)
    assert [hash_split(n, 0.1, 0.2) for n in names] == [hash_split(n, 0.1, 0.2) for n in names]
    assert 300 < splits["test"] < 500 and 120 < splits["val"] < 280


def test_non_utf8_names_file_and_line(tmp_path):
    (tmp_path / "captions.txt").write_bytes(b"image,caption\na.png,fine\nb.png,caf\xe9 latin-1\n")
    with pytest.raises(CaptionFormatError, match=r"captions.txt:3: not valid UTF-8"):
        read_captions(tmp_path / "captions.txt")


def test_invalid_json_names_line(tmp_path):
    (tmp_path / "c.json").write_text('{"images": [\n  {"id": 1,}\n]}', encoding="utf-8")
    with pytest.raises(CaptionFormatError, match=r"c.json:2: invalid JSON"):
        read_captions(tmp_path / "c.json")
    (tmp_path / "other.json").write_text('{"foo": 1}', encoding="utf-8")
    with pytest.raises(CaptionFormatError, match="neither COCO"):
        read_captions(tmp_path / "other.json")
    (tmp_path / "x.csv").write_text("name,text\na,b\n", encoding="utf-8")
    with pytest.raises(CaptionFormatError, match=r"x.csv:1: cannot detect"):
        read_captions(tmp_path / "x.csv")


def _bad_token_file(tmp_path: Path) -> Path:
    _images(tmp_path / "images")
    (tmp_path / "images" / "zero.png").write_bytes(b"")
    (tmp_path / "secret.png").write_bytes(b"x")
    lines = [
        "a.png#0\ta dog",  # 1 ok
        "a.png has no tab",  # 2 malformed
        "missing.png#0\ta ghost",  # 3 missing file
        "b.png#0\t   ",  # 4 empty caption
        "../secret.png#0\tescapes the root",  # 5 outside the image root
        "b.png#1\ta cafe",  # 6 ok
        "zero.png#0\tempty file",  # 7 zero-byte image
        "c.png#0\tkids",  # 8 ok
    ]
    (tmp_path / "images" / "tokens.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return tmp_path / "images" / "tokens.txt"


def test_manifest_reports_every_problem_at_once(tmp_path):
    path = _bad_token_file(tmp_path)
    with pytest.raises(ManifestError) as info:
        read_captions(path)
    err = info.value
    assert len(err.problems) == 5
    msg = str(err)
    for where, what in [
        ("tokens.txt:2", "expected 'NAME#i<TAB>caption'"),
        ("tokens.txt:3", "image file not found"),
        ("tokens.txt:4", "empty caption"),
        ("tokens.txt:5", "escapes the image root"),
        ("tokens.txt:7", "image file is empty"),
    ]:
        line = next(li for li in msg.splitlines() if li.strip().startswith(where))
        assert what in line, line
    assert "missing.png" in msg and "../secret.png" in msg and "skip_bad=True" in msg


def test_skip_bad_warns_and_skips(tmp_path):
    path = _bad_token_file(tmp_path)
    with pytest.warns(UserWarning, match=r"5 bad manifest entries") as record:
        cs = read_captions(path, skip_bad=True)
    assert "tokens.txt:3" in str(record[0].message)
    assert cs.by_id() == {"a.png": ["a dog"], "b.png": ["a cafe"], "c.png": ["kids"]}


def test_csv_field_count_and_json_lines_errors(tmp_path):
    _images(tmp_path)
    (tmp_path / "c.csv").write_text('image,caption\na.png,"ok, quoted"\nb.png,un,quoted\n', encoding="utf-8")
    with pytest.raises(ManifestError, match=r"c.csv:3: expected 2 fields"):
        read_captions(tmp_path / "c.csv")
    (tmp_path / "d.jsonl").write_text('{"image": "a.png", "caption": "ok"}\n{"image": "b.png"\n[1]\n', encoding="utf-8")
    with pytest.raises(ManifestError) as info:
        read_captions(tmp_path / "d.jsonl")
    assert [p.where for p in info.value.problems] == ["d.jsonl:2", "d.jsonl:3"]


def test_folder_without_sidecars_is_a_clear_error(tmp_path):
    _images(tmp_path)
    with pytest.raises(CaptionFormatError, match="sidecar"):
        read_captions(tmp_path, format="folder")


def test_verify_images_finds_corrupt_files(tmp_path):
    _images(tmp_path)
    (tmp_path / "b.png").write_bytes(b"not an image")
    (tmp_path / "c.jsonl").write_text('{"image": "a.png", "caption": "x"}\n{"image": "b.png", "caption": "y"}\n')
    assert len(read_captions(tmp_path / "c.jsonl")) == 2
    with pytest.raises(ManifestError, match="c.jsonl:2: 'b.png': not a recognised image format"):
        read_captions(tmp_path / "c.jsonl", verify_images=True)


def test_detect_format(tmp_path):
    formats = _write_all_formats(tmp_path)
    assert detect_format(formats["coco"][0]) == "coco"
    assert detect_format(formats["flickr_token"][0]) == "flickr_token"


@pytest.mark.skipif(not FLICKR.is_dir(), reason="shared flickr8k-mini data not present")
def test_flickr8k_mini():
    cs = read_captions(FLICKR / "captions.txt")
    assert cs.format == "csv" and cs.root == (FLICKR / "images").resolve()
    assert len(cs) == 866 and cs.num_captions == 4330
    assert all(len(c) == 5 for c in cs.values())
    assert collections.Counter(cs.splits.values()) == {"train": 753, "val": 113}
    parts = cs.split_images()
    assert (len(parts["train"]), len(parts["val"]), len(parts["test"])) == (753, 113, 0)
    first = cs[(FLICKR / "images" / "1000268201_693b08cb0e.jpg").resolve()]
    assert first[0] == "A child in a pink dress is climbing up a set of stairs in an entry way ."
    assert any("," in c for caps in cs.values() for c in caps)
