"""`vitcap demo` without a browser: the page builder, its callbacks and the command line, on the toy checkpoints.

The browser test (`test_demo_browser.py`) drives the same page through headless Chromium.
"""

from __future__ import annotations

import base64
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

gr = pytest.importorskip("gradio", reason="the demo extra is not installed: pip install -e '.[demo]'")

import vitcap  # noqa: E402
from vitcap.data.images import load_image  # noqa: E402
from vitcap.demo import app  # noqa: E402
from vitcap.demo.card import attention_note, model_card  # noqa: E402
from vitcap.demo.examples import write_examples  # noqa: E402
from vitcap.demo.views import (  # noqa: E402
    DISPLAY_SIZE,
    CaptionView,
    centre_square,
    decoding_options,
    model_view,
    overlay,
    read_upload,
)
from vitcap.errors import ConfigError, DataError, ImageLoadError  # noqa: E402

GREEDY = ("greedy", 2, 1.0, 1.0, 12, 1)  # strategy, beam width, temperature, top-p, max length, captions


@pytest.fixture(scope="module")
def captioner(caption_run):
    return vitcap.load(caption_run[2])


@pytest.fixture(scope="module")
def classifier(classify_run):
    return vitcap.load(classify_run[2])


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_examples(tmp_path_factory.mktemp("examples"), "captioning", 32, num=1)[0]


def _elem_ids(demo: gr.Blocks) -> set[str]:
    return {block.elem_id for block in demo.blocks.values() if getattr(block, "elem_id", None)}


def _header_only_png(path: Path, width: int, height: int) -> Path:
    """A few-byte PNG that claims ``width`` x ``height`` pixels: a decompression bomb's header."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)))
    return path


# --------------------------------------------------------------------------------------------------- the page
def test_build_demo_makes_the_caption_page_without_launching(captioner, tmp_path: Path) -> None:
    demo = app.build_demo(captioner, source="toy.ckpt", examples_dir=tmp_path)
    assert isinstance(demo, gr.Blocks) and not demo.is_running
    assert {"input-image", "caption-button", "caption", "nbest", "words", "attention", "status", "model-card"} <= (
        _elem_ids(demo)
    )
    events = {fn.api_name: fn for fn in demo.fns.values()}
    assert {"caption", "word"} <= set(events)
    assert events["caption"].preprocess is False  # vitcap's image checks see the upload, not Gradio's decoder
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"shapes_captioning_{i}.png" for i in range(4)]
    image = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "input-image")
    assert "webcam" not in image.sources
    with_webcam = app.build_demo(captioner, examples_dir=tmp_path / "w", webcam=True)
    image = next(b for b in with_webcam.blocks.values() if getattr(b, "elem_id", None) == "input-image")
    assert "webcam" in image.sources


def test_caption_shows_the_models_caption_and_a_map_per_word(captioner, example: Path) -> None:
    expected = captioner.caption([load_image(example)], return_attention=True, max_length=12)[0]
    caption, rows, words, attention, status, view = app.caption_outputs(captioner, str(example), *GREEDY)
    assert caption == expected.caption and rows == [[1, expected.caption, round(expected.score, 3)]]
    assert isinstance(view, CaptionView) and view.words == expected.words
    np.testing.assert_allclose(view.maps, expected.attention.numpy())
    assert [value for _, value in words["choices"]] == list(range(len(expected.words))) and words["value"] == 0
    assert attention["value"].size == (DISPLAY_SIZE, DISPLAY_SIZE)
    assert f"“{expected.words[0]}”" in attention["label"]
    assert example.name in status and "greedy" in status and "ms on cpu" in status


def test_each_word_has_its_own_heat_map(captioner, example: Path) -> None:
    view = app.caption_outputs(captioner, str(example), *GREEDY)[-1]
    assert len(view.words) >= 2
    pictures = [np.asarray(app.word_outputs(view, i)["value"]) for i in range(len(view.words))]
    assert all(p.shape == (DISPLAY_SIZE, DISPLAY_SIZE, 3) for p in pictures)
    differs = [not np.array_equal(pictures[0], p) for p in pictures[1:]]
    assert any(differs) == any(not np.allclose(view.maps[0], m) for m in view.maps[1:])
    assert app.word_outputs(view, len(view.words))["value"] is None
    assert app.word_outputs(None, 0)["value"] is None


def test_nbest_and_sampling_controls(captioner, example: Path) -> None:
    rows = app.caption_outputs(captioner, str(example), "beam search", 3, 1.0, 1.0, 12, 3)[1]
    assert 1 <= len(rows) <= 3 and [r[0] for r in rows] == list(range(1, len(rows) + 1))
    assert [r[2] for r in rows] == sorted((r[2] for r in rows), reverse=True)
    rows = app.caption_outputs(captioner, str(example), "sampling", 2, 0.8, 0.9, 12, 2)[1]
    assert len(rows) == 2
    *_, status, _ = app.caption_outputs(captioner, str(example), "greedy", 2, 1.0, 1.0, 12, 3)
    assert "greedy decoding gives one caption" in status


@pytest.mark.parametrize(
    ("mode", "expected", "note"),
    [
        ("greedy", {"num_beams": 1, "do_sample": False, "num_return_sequences": 1}, "one caption"),
        ("beam search", {"num_beams": 3, "do_sample": False, "num_return_sequences": 3}, "raised from 2 to 3"),
        ("sampling", {"num_beams": 1, "do_sample": True, "temperature": 0.7, "top_p": 0.9}, ""),
    ],
)
def test_decoding_options(mode: str, expected: dict, note: str) -> None:
    options, text = decoding_options(mode, 2.0, 0.7, 0.9, 9.0, 3.0)
    assert options["max_length"] == 9 and isinstance(options["max_length"], int)
    assert expected.items() <= options.items()
    assert note in text and bool(note) == bool(text)


def test_unknown_decoding_mode_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="decoding"):
        decoding_options("telepathy", 2, 1.0, 1.0, 10, 1)


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("nothing", "no image"),
        ("text", "not a recognised image format"),
        ("empty", "empty file"),
        ("truncated", "truncated or corrupt"),
        ("bomb", "decompression bomb"),
        ("huge", "exceeds the limit 1000"),
    ],
)
def test_bad_uploads_show_a_message_and_the_page_keeps_working(
    case: str, reason: str, captioner, example: Path, tmp_path: Path
) -> None:
    path = tmp_path / "upload.png"
    if case == "text":
        path.write_text("not an image\n")
    elif case == "empty":
        path.write_bytes(b"")
    elif case == "truncated":
        path.write_bytes(example.read_bytes()[:200])
    elif case == "bomb":
        _header_only_png(path, 30_000, 30_000)
    elif case == "huge":
        path.write_bytes(example.read_bytes())  # 32 x 32 = 1024 pixels, over a limit of 1000
    # What the caption event receives: Gradio's file payload, in its upload folder under a name of its own.
    upload = None if case == "nothing" else {"path": str(path), "orig_name": "my photo.png"}
    caption, rows, words, attention, status, view = app.caption_outputs(
        captioner, upload, *GREEDY, max_pixels=1000 if case == "huge" else 10_000_000
    )
    assert "Could not caption" in status and reason in status
    assert case == "nothing" or "my photo" in status  # the user's name for the file, not the server's path
    assert str(tmp_path) not in status
    assert (caption, rows, words["choices"], attention["value"], view) == ("", [], [], None, None)
    assert app.caption_outputs(captioner, str(example), *GREEDY)[0]  # the next upload is captioned


def test_uploads_as_paths_payloads_and_webcam_data_urls(example: Path) -> None:
    image, name = read_upload({"path": str(example), "orig_name": "cat.png", "url": "http://x/file"})
    assert name == "cat.png" and image.mode == "RGB" and image.size == (32, 32)
    url = "data:image/png;base64," + base64.b64encode(example.read_bytes()).decode()
    image, name = read_upload({"path": None, "url": url})
    assert name == "webcam snapshot" and image.size == (32, 32)
    with pytest.raises(ImageLoadError, match="webcam snapshot: not valid base64"):
        read_upload({"path": None, "url": "data:image/png;base64,@@@"})
    with pytest.raises(DataError, match="no image"):
        read_upload({"path": None})


def test_long_thin_images_are_captioned_like_their_centre_square(captioner, example: Path, tmp_path: Path) -> None:
    square = load_image(example)
    strip = Image.new("RGB", (32, 6000), "white")
    strip.paste(square, (0, 2984))  # the example in the middle of a 32 x 6000 strip
    path = tmp_path / "strip.png"
    strip.save(path)
    view = app.caption_outputs(captioner, str(path), *GREEDY)[-1]
    assert centre_square(strip).tobytes() == square.tobytes()
    assert view.caption == captioner.caption([square], max_length=12)[0].caption


def test_the_overlay_covers_what_the_model_sees() -> None:
    wide = Image.new("RGB", (100, 40), "white")
    assert model_view(wide, {"crop_pct": 1.0}).size == (40, 40)
    assert model_view(wide, {"crop_pct": 0.875}).size == (35, 35)
    grid = np.zeros((4, 4), np.float32)
    grid[0, 3] = 1.0  # all attention on the top-right cell
    picture = np.asarray(overlay(Image.new("RGB", (64, 64), "gray"), grid)).astype(int)
    top_right, bottom_left = picture[4, 60], picture[60, 4]
    assert top_right[0] > top_right[2] and bottom_left[2] > bottom_left[0]  # red where it looked, blue elsewhere


def test_attention_note_states_the_aggregation(captioner) -> None:
    note = attention_note(captioner)
    assert "block 2 of 2 (the last)" in note and "attention_layer = -1" in note
    assert "averaged over that block's 2 heads" in note
    assert "4×4 grid" in note and "1 class/register token is left out" in note


def test_model_card_names_architecture_data_and_metrics(captioner, caption_run) -> None:
    card = model_card(captioner, caption_run[2])
    assert str(caption_run[2]) in card
    assert "ViT `vit_tiny_patch16_224`" in card and "4×4 grid" in card and "width 32, depth 2" in card
    assert "Transformer decoder: 2 blocks, width 32, 2 heads" in card
    assert f"{captioner.tokenizer.vocab_size} tokens" in card and "`circle`" in card
    assert captioner.meta.metrics and all(f"`{name}`" in card for name in captioner.meta.metrics)


def test_classifier_page_shows_top_k_and_rollout(classifier, example: Path, tmp_path: Path) -> None:
    demo = app.build_demo(classifier, examples_dir=tmp_path)
    assert "classify" in {fn.api_name for fn in demo.fns.values()}
    assert {"labels", "rollout", "classify-button", "model-card"} <= _elem_ids(demo)
    labels, rollout, status = app.classify_outputs(classifier, str(tmp_path / "shapes_classification_0.png"), 3)
    assert len(labels) == 3 and set(labels) <= set(classifier.class_names)
    assert list(labels.values()) == sorted(labels.values(), reverse=True) and sum(labels.values()) <= 1 + 1e-6
    assert rollout.size == (DISPLAY_SIZE, DISPLAY_SIZE) and "ms on cpu" in status
    assert "classes: `large_circle`" in model_card(classifier)
    labels, rollout, status = app.classify_outputs(classifier, {"path": str(example) + ".missing"}, 3)
    assert (labels, rollout) == (None, None) and "Could not classify" in status and "file not found" in status


# -------------------------------------------------------------------------------------------- the command line
def test_without_gradio_the_command_names_the_extra(monkeypatch, capsys) -> None:
    from vitcap.cli.main import main

    monkeypatch.setitem(sys.modules, "gradio", None)  # `import gradio` now raises ImportError
    assert main(["demo", "--checkpoint", "whatever.ckpt"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install -e '.[demo]'" in err and err.startswith("vitcap: error:")


def test_command_serves_on_localhost_by_default(monkeypatch, caption_run, capsys) -> None:
    from vitcap.cli.main import USAGE, main

    served = {}
    monkeypatch.setattr(app, "launch", lambda demo, **kw: served.update(kw, demo=demo) or "http://127.0.0.1:7860/")
    assert main(["demo", "--checkpoint", str(caption_run[2])]) == 0
    assert (served["host"], served["port"]) == ("127.0.0.1", 7860) and isinstance(served["demo"], gr.Blocks)
    assert "demo" in USAGE


def test_command_serves_an_export_folder(monkeypatch, caption_run, tmp_path: Path) -> None:
    from vitcap.cli.main import main
    from vitcap.inference import export

    folder = export(caption_run[2], tmp_path / "exported")
    served = {}
    monkeypatch.setattr(app, "launch", lambda demo, **kw: served.update(demo=demo) or "http://127.0.0.1:7860/")
    assert main(["demo", "--checkpoint", str(folder), "--port", "8123", "--webcam"]) == 0
    card = next(b for b in served["demo"].blocks.values() if getattr(b, "elem_id", None) == "model-card")
    assert str(folder) in card.value and "Transformer decoder" in card.value


def test_command_reports_bad_checkpoints_and_taken_ports(monkeypatch, caption_run, tmp_path: Path, capsys) -> None:
    from vitcap.cli.main import main

    assert main(["demo", "--checkpoint", str(tmp_path / "missing.ckpt")]) == 2
    assert "missing.ckpt" in capsys.readouterr().err

    def taken(demo, **kw):  # noqa: ANN001, ANN202
        raise OSError("Cannot find empty port in range: 7860-7860")

    monkeypatch.setattr(app, "launch", taken)
    assert main(["demo", "--checkpoint", str(caption_run[2])]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "127.0.0.1:7860" in err and "--port" in err
