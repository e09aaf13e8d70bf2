"""ONNX export and the PyTorch-free runtime: Optimum's layout, token-identical captions, no torch, bad folders."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from filelock import FileLock
from PIL import Image

import vitcap
from tests.conftest import REPO, caption_args
from vitcap.cli.main import main
from vitcap.deploy import load_onnx
from vitcap.deploy.runtime import OnnxCaptionPipeline, OnnxClassifyPipeline
from vitcap.errors import ConfigError

# A toy CNN captioner that also covers additive cross-attention and learned positions.
CNN = ["--model.preset", "cnn-tiny", "--model.encoder", "{img_size: 32, embed_dim: 32, out_index: 2}"]
CNN += [
    "--model.decoder",
    "{embed_dim: 32, depth: 2, num_heads: 2, max_len: 32, cross_attn: additive, pos_embed: learned}",
]


def export(checkpoint: Path, out: Path, *extra: str) -> Path:
    assert main(["export", "--checkpoint", str(checkpoint), "--out", str(out), "--format", "onnx", *extra]) == 0
    return out


@pytest.fixture(scope="module")
def heldout(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """64 test-split shapes images at 32 px (never trained on)."""
    out = tmp_path_factory.mktemp("heldout")
    assert main(["data", "shapes", "--out", str(out), "--num", "4", "--num-eval", "64", "--img-size", "32"]) == 0
    images = sorted((out / "captions" / "images").glob("test_*.png"))
    assert len(images) == 64
    return images


def shared(request: pytest.FixtureRequest, name: str, make: Callable[[Path], None]) -> Path:
    """A folder made once per test session, by whichever pytest-xdist worker asks first (exports take seconds)."""
    base = request.getfixturevalue("tmp_path_factory").getbasetemp()
    if hasattr(request.config, "workerinput"):
        base = base.parent  # shared by the workers
    out = base / name
    with FileLock(str(out) + ".lock"):
        if not (out / "config.json").is_file():
            make(out)
    return out


@pytest.fixture(scope="session")
def vit_export(request: pytest.FixtureRequest) -> Path:
    """The toy ViT captioner (`caption_run`) exported with int8 copies; `source.txt` beside it names the .ckpt."""

    def make(out: Path) -> None:
        _, _, ckpt = request.getfixturevalue("caption_run")
        export(ckpt, out, "--quantize", "int8")
        (out.parent / "vit_source.txt").write_text(str(ckpt))

    return shared(request, "vit_onnx", make)


@pytest.fixture(scope="session")
def cnn_export(request: pytest.FixtureRequest) -> Path:
    def make(out: Path) -> None:
        from vitcap.cli.train import lightning_cli

        root = out.with_name("cnn_run")
        lightning_cli(["fit", *caption_args(root, *CNN, "--trainer.max_epochs", "2")])
        export(sorted(root.rglob("last.ckpt"))[0], out)

    return shared(request, "cnn_onnx", make)


def _same_captions(folder: Path, images: list, **decoding) -> None:
    """onnxruntime's captions (n-best included) equal PyTorch's token for token; scores agree to 1e-4."""
    torch_results = vitcap.load(folder).caption(images, **decoding)
    onnx_results = load_onnx(folder, quantized=False).caption(images, **decoding)
    for a, b in zip(torch_results, onnx_results, strict=True):
        assert (a.tokens, a.caption) == (b.tokens, b.caption)
        assert abs(a.score - b.score) <= 1e-4
        assert np.allclose(a.token_logprobs, b.token_logprobs, atol=1e-4)
        assert [x["caption"] for x in a.alternatives] == [x["caption"] for x in b.alternatives]
        assert all(abs(x["score"] - y["score"]) <= 1e-4 for x, y in zip(a.alternatives, b.alternatives))


@pytest.mark.parametrize("encoder", ["vit", "cnn"])
def test_onnx_captions_equal_pytorch_on_64_heldout_images(encoder: str, request, heldout: list[Path]) -> None:
    folder = request.getfixturevalue(f"{encoder}_export")
    _same_captions(folder, heldout)  # greedy (the export's default)
    _same_captions(folder, heldout, num_beams=3, num_return_sequences=3)
    if encoder == "cnn":  # learned positions bound the caption length in both runtimes alike
        with pytest.raises(ConfigError, match="max_len"):
            load_onnx(folder).caption(heldout[:1], max_length=40)


def test_every_decoding_rule_is_reproduced(vit_export: Path, heldout: list[Path]) -> None:
    rules = dict(max_length=10, min_length=3, length_penalty=0.5, repetition_penalty=1.3, no_repeat_ngram_size=2)
    _same_captions(vit_export, heldout[:16], **rules)
    _same_captions(vit_export, heldout[:16], num_beams=4, num_return_sequences=2, **rules)
    _same_captions(vit_export, heldout[:16], num_beams=2, length_penalty=0.0, max_length=3)  # cut at max_length


def test_folder_has_optimums_layout(vit_export: Path) -> None:
    names = {p.name for p in vit_export.iterdir()}
    assert {"encoder_model.onnx", "decoder_model.onnx", "decoder_with_past_model.onnx", "config.json",
            "generation_config.json", "preprocessor_config.json", "tokenizer.json", "model.safetensors",
            "README.md", "decoder_with_past_model_quantized.onnx"} <= names  # fmt: skip
    assert not list(vit_export.parent.glob(".vit_onnx*"))  # no temporary folder left

    def io(name: str) -> tuple[dict, dict]:
        graph = onnx.load(str(vit_export / name)).graph
        dims = lambda vs: {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in vs}  # noqa: E731
        return dims(graph.input), dims(graph.output)

    inputs, outputs = io("decoder_with_past_model.onnx")
    assert list(inputs)[:5] == ["input_ids", "past_key_values.0.decoder.key", "past_key_values.0.decoder.value",
                                "past_key_values.0.encoder.key", "past_key_values.0.encoder.value"]  # fmt: skip
    assert list(outputs) == ["logits", "present.0.decoder.key", "present.0.decoder.value", "present.1.decoder.key",
                             "present.1.decoder.value"]  # cross K/V go in, never out again  # fmt: skip
    assert inputs["past_key_values.0.decoder.key"][0] == "batch_size"
    assert inputs["past_key_values.0.decoder.key"][2] == "past_decoder_sequence_length"
    assert inputs["past_key_values.0.encoder.key"][:3] == ["encoder_batch_size", 2, "encoder_sequence_length"]
    inputs, outputs = io("decoder_model.onnx")
    assert list(inputs) == ["input_ids", "encoder_hidden_states"]
    assert inputs["input_ids"] == ["batch_size", "decoder_sequence_length"]
    assert "present.1.encoder.value" in outputs
    inputs, outputs = io("encoder_model.onnx")
    assert inputs["pixel_values"] == ["batch_size", 3, 32, 32] and list(outputs) == ["last_hidden_state"]

    meta = json.loads((vit_export / "config.json").read_text())
    assert meta["onnx"]["files"]["decoder_with_past"] == "decoder_with_past_model.onnx"
    generation = json.loads((vit_export / "generation_config.json").read_text())
    assert generation["max_new_tokens"] == 12 and generation["eos_token_id"] == 2
    pre = json.loads((vit_export / "preprocessor_config.json").read_text())
    assert pre["crop_size"] == {"height": 32, "width": 32} and len(pre["image_mean"]) == 3
    from tokenizers import Tokenizer

    assert Tokenizer.from_file(str(vit_export / "tokenizer.json")).token_to_id("[EOS]") == 2
    card = (vit_export / "README.md").read_text()
    assert "ViTEncoder" in card and "--runtime onnx" in card
    # the same folder in PyTorch captions as the checkpoint it came from (issue item 5)
    ckpt = (vit_export.parent / "vit_source.txt").read_text()
    images = torch.rand(4, 3, 32, 32)
    assert [r.tokens for r in vitcap.load(ckpt).caption(images)] == [
        r.tokens for r in vitcap.load(vit_export).caption(images)
    ]
    assert isinstance(vitcap.load(vit_export, runtime="onnx"), OnnxCaptionPipeline)


NO_TORCH = """
import sys
sys.modules["torch"] = None  # any import of torch fails
from vitcap.cli.main import main
code = main(sys.argv[1:])
print("LOADED", sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision", "timm", "lightning")
      and sys.modules[m] is not None))
sys.exit(code)
"""


def test_vitcap_caption_runs_without_torch(vit_export: Path, heldout: list[Path]) -> None:
    files = [str(p) for p in heldout[:6]]
    argv = ["caption", "--checkpoint", str(vit_export), "--runtime", "onnx", "--beams", "3", "--num-captions", "2"]
    out = subprocess.run([sys.executable, "-c", NO_TORCH, *argv, "--json", *files], capture_output=True, text=True,
                         cwd=REPO)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.strip().splitlines()
    assert lines[-1] == "LOADED []"
    rows = [json.loads(line) for line in lines[:-1]]
    expected = load_onnx(vit_export).caption(files, num_beams=3, num_return_sequences=2)  # int8, the default
    assert [r["caption"] for r in rows] == [e.caption for e in expected]
    assert [len(r["alternatives"]) for r in rows] == [1] * len(files)
    # without --runtime onnx the torch-less command says what to do
    out = subprocess.run([sys.executable, "-c", NO_TORCH, "caption", "--checkpoint", str(vit_export), files[0]],
                         capture_output=True, text=True, cwd=REPO)  # fmt: skip
    assert out.returncode == 2 and "--runtime onnx" in out.stderr and "Traceback" not in out.stderr


def test_int8_is_smaller_and_mostly_agrees(vit_export: Path, heldout: list[Path]) -> None:
    for name in ("encoder_model", "decoder_model", "decoder_with_past_model"):
        assert (vit_export / f"{name}_quantized.onnx").stat().st_size < (vit_export / f"{name}.onnx").stat().st_size
    fp32 = [r.caption for r in load_onnx(vit_export, quantized=False).caption(heldout)]
    int8 = load_onnx(vit_export)  # int8 when the folder has it
    assert int8.onnx_config.quantized
    same = sum(a == b.caption for a, b in zip(fp32, int8.caption(heldout)))
    assert same >= 0.75 * len(heldout), f"int8 changed {len(heldout) - same} of {len(heldout)} captions"


def test_classifier_exports_as_one_model(classify_run, tmp_path: Path) -> None:
    _, _, ckpt = classify_run
    folder = export(ckpt, tmp_path / "onnx")
    assert (folder / "model.onnx").is_file() and not (folder / "encoder_model.onnx").exists()
    images = np.random.default_rng(0).standard_normal((5, 3, 32, 32)).astype(np.float32)
    onnx_top = load_onnx(folder).classify(images, top_k=3)
    torch_top = vitcap.load(folder).classify(torch.from_numpy(images), top_k=3)
    assert isinstance(load_onnx(folder), OnnxClassifyPipeline)
    for a, b in zip(torch_top, onnx_top, strict=True):
        assert [n for n, _ in a] == [n for n, _ in b]
        assert np.allclose([p for _, p in a], [p for _, p in b], atol=1e-5)


def test_linear_cross_attention_and_post_norm_export(tmp_path: Path, heldout: list[Path]) -> None:
    """Untrained, so the captions are nonsense, but the same in both runtimes (the CNN covers additive attention)."""
    from vitcap.checkpoint import CheckpointMeta, write_export
    from vitcap.data.transforms import make_preprocessing
    from vitcap.models.registry import ModelSpec, resolve_configs
    from vitcap.tokenizer import CaptionTokenizer

    torch.manual_seed(0)
    tok = CaptionTokenizer.train(["a small red circle", "a large blue square left of a green star", "two things"])
    encoder, decoder = resolve_configs("toy", None, {"cross_attn": "linear", "norm_first": False})
    spec = ModelSpec("captioner", encoder, decoder, vocab_size=tok.vocab_size)
    meta = CheckpointMeta("captioning", spec.to_dict(), tok.to_json(), make_preprocessing(32), {"max_length": 8})
    write_export(meta, spec.build().state_dict(), tmp_path / "untrained")
    folder = export(tmp_path / "untrained", tmp_path / "onnx")
    _same_captions(folder, heldout[:8], num_beams=3, num_return_sequences=2)


def test_preprocessing_matches_torchvision() -> None:
    from vitcap.data.transforms import build_eval_transform, make_preprocessing
    from vitcap.deploy.preprocess import Preprocessor

    rng = np.random.default_rng(0)
    same_size = Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    photo = Image.fromarray(rng.integers(0, 256, (45, 70, 3), dtype=np.uint8)).resize((140, 90))
    for pre in (make_preprocessing(32), make_preprocessing(32, crop_pct=0.875, interpolation="bilinear")):
        ours, theirs = Preprocessor(pre), build_eval_transform(pre)
        for image in (same_size, photo):
            a, b = ours.one(image), theirs(image).numpy()
            assert a.shape == b.shape
            step = 1 / 255 / min(pre["std"])  # one grey level
            assert np.abs(a - b).max() <= (0 if image is same_size and pre["crop_pct"] == 1 else 2 * step) + 1e-6


# ------------------------------------------------------------------------------------------------- bad input
def _error(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("vitcap: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_broken_folders_are_one_line_errors(vit_export: Path, heldout: list[Path], tmp_path: Path, capsys) -> None:
    image = str(heldout[0])

    def caption(folder: Path, *extra: str) -> str:
        assert main(["caption", "--checkpoint", str(folder), "--runtime", "onnx", *extra, image]) == 2
        return _error(capsys)

    def broken(name: str) -> Path:
        folder = tmp_path / name
        shutil.copytree(vit_export, folder)
        return folder

    folder = broken("missing")
    (folder / "decoder_with_past_model_quantized.onnx").unlink()
    assert "decoder_with_past_model_quantized.onnx: missing" in caption(folder)
    folder = broken("corrupt")
    (folder / "encoder_model_quantized.onnx").write_bytes(b"\x08\x07not a protobuf at all")
    assert "encoder_model_quantized.onnx: not a readable ONNX model" in caption(folder)
    for key, value, expected in (("format", 99, "export format 99"), ("layout", 99, "ONNX layout 99")):
        folder = broken(f"newer_{key}")
        config = json.loads((folder / "config.json").read_text())
        (config["onnx"] if key == "layout" else config)[key] = value
        (folder / "config.json").write_text(json.dumps(config))
        line = caption(folder)
        assert "config.json" in line and expected in line and "upgrade vitcap" in line
    plain = tmp_path / "plain"
    assert main(["export", "--checkpoint", str(vit_export), "--out", str(plain)]) == 0
    assert "--format onnx" in caption(plain)
    assert "--runtime torch" in caption(vit_export, "--sample")
    assert "--runtime torch" in caption(vit_export, "--save-attention", str(tmp_path))
    assert "--runtime torch" in caption(vit_export, "--out", str(tmp_path / "captions.jsonl"))  # bulk: Lightning


def test_bad_exports_are_one_line_errors_and_write_nothing(
    vit_export: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    out = tmp_path / "out"
    assert main(["export", "--checkpoint", str(vit_export / "encoder_model.onnx"), "--out", str(out), "--format",
                 "onnx"]) == 2  # fmt: skip
    assert "encoder_model.onnx" in _error(capsys) and not out.exists()
    assert main(["export", "--checkpoint", str(vit_export), "--out", str(out), "--quantize", "int8"]) == 2
    assert "--format onnx" in _error(capsys)

    def cannot_trace(*args, **kwargs):
        raise RuntimeError("Could not guard on data-dependent expression u0 > 0")

    monkeypatch.setattr(torch.onnx, "export", cannot_trace)
    assert main(["export", "--checkpoint", str(vit_export), "--out", str(out), "--format", "onnx"]) == 2
    line = _error(capsys)
    assert "encoder_model.onnx: the ViTEncoder + TextDecoder" in line and "cannot be exported to ONNX" in line
    assert "nothing written" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no half-written folder, no temporary one
