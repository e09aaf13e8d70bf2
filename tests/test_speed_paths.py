"""The speed paths stay correct: bf16 autocast and torch.compile training, the fused optimizer, oneDNN linears,
the gather-free training batch. Timings live in bench/train_step.py, never here.

The full inductor compile (a C++ toolchain build of every kernel) takes 30-60 s on 2 CPU cores, so it runs
only with VITCAP_TEST_COMPILE=1; the default suite traces the same modules through dynamo and AOTAutograd
(`aot_eager`), which finds graph breaks and tracing errors without building kernels.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.testing import assert_close

from tests.conftest import REPO, caption_args
from vitcap.cli.train import lightning_cli
from vitcap.layers import gemm as linear_module
from vitcap.layers.gemm import OneDNNLinear, onednn_linear_available, use_onednn_linear
from vitcap.models import CNNEncoder, create_captioner
from vitcap.tasks.optim import adamw, param_groups

V = 30


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


class _Recorder:
    """Replaces `nn.Module.compile`: records what is compiled and compiles it with a given backend."""

    def __init__(self, backend: str) -> None:
        self.backend = backend
        self.compiled: list[str] = []
        self._original = torch.nn.Module.compile

    def __call__(recorder, module: torch.nn.Module, *args, **kwargs) -> None:  # noqa: N805 - bound via the class
        recorder.compiled.append(type(module).__name__)
        kwargs.setdefault("backend", recorder.backend)
        recorder._original(module, *args, **kwargs)


def test_fit_bf16_mixed_on_cpu(tmp_path: Path) -> None:
    cli = lightning_cli(
        ["fit", *caption_args(tmp_path, "--trainer.precision", "bf16-mixed", "--trainer.fast_dev_run", "2")]
    )
    assert cli.trainer.state.finished
    assert cli.trainer.precision == "bf16-mixed"
    assert torch.isfinite(cli.trainer.callback_metrics["train/loss"])
    # Mixed precision: float32 master weights, bf16 matmuls inside the context Lightning wraps the steps in.
    assert all(p.dtype == torch.float32 for p in cli.model.parameters())
    model = cli.model.model
    with cli.trainer.precision_plugin.forward_context():
        logits = model(torch.randn(2, 3, 32, 32), torch.randint(3, model.decoder.vocab_size, (2, 5)))
    assert logits.dtype == torch.bfloat16


def test_compile_switch_compiles_what_training_calls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    torch._dynamo.reset()
    recorder = _Recorder("aot_eager")
    monkeypatch.setattr(torch.nn.Module, "compile", lambda module, *a, **k: recorder(module, *a, **k))
    cli = lightning_cli(["fit", *caption_args(tmp_path, "--model.compile", "true", "--trainer.fast_dev_run", "2")])
    assert cli.trainer.state.finished and torch.isfinite(cli.trainer.callback_metrics["train/loss"])
    # The task calls model.encode / model.forward_memory, never model(...): compiling the Captioner itself would
    # compile nothing that training runs.
    assert recorder.compiled == ["ViTEncoder", "TextDecoder"]
    model = cli.model.model
    assert model.encoder._compiled_call_impl is not None and model.decoder._compiled_call_impl is not None
    torch._dynamo.reset()


def test_training_forward_has_no_graph_breaks() -> None:
    torch._dynamo.reset()
    model = create_captioner("toy", vocab_size=V).train()
    images, tokens = torch.randn(4, 3, 32, 32), torch.randint(3, V, (4, 9))
    encoder = torch._dynamo.explain(model.encoder)(images)
    decoder = torch._dynamo.explain(model.decoder)(tokens, model.encode(images))
    assert encoder.graph_count >= 1 and decoder.graph_count >= 1
    assert encoder.graph_break_count == 0, encoder.break_reasons
    assert decoder.graph_break_count == 0, decoder.break_reasons
    torch._dynamo.reset()


@pytest.mark.skipif(os.environ.get("VITCAP_TEST_COMPILE") != "1", reason="inductor build takes 30-60 s on 2 CPU cores")
def test_inductor_compiled_step_matches_eager() -> None:
    torch._dynamo.reset()
    eager = create_captioner("toy", vocab_size=V).train()
    compiled = create_captioner("toy", vocab_size=V).train()
    compiled.load_state_dict(eager.state_dict())
    compiled.encoder.compile()
    compiled.decoder.compile()
    images, tokens = torch.randn(4, 3, 32, 32), torch.randint(3, V, (4, 9))
    losses = []
    for model in (eager, compiled):
        logits = model.forward_memory(model.encode(images), tokens[:, :-1], torch.arange(4))
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, V), tokens[:, 1:].reshape(-1))
        loss.backward()
        losses.append(loss)
    assert_close(losses[0], losses[1], atol=1e-4, rtol=1e-4)
    grads = [torch.cat([p.grad.flatten() for p in m.parameters() if p.grad is not None]) for m in (eager, compiled)]
    assert_close(grads[0], grads[1], atol=1e-4, rtol=1e-3)
    torch._dynamo.reset()


def test_in_order_caption_index_skips_the_gather_with_equal_results() -> None:
    model = create_captioner("toy", vocab_size=V).train()
    images, tokens = torch.randn(3, 3, 32, 32), torch.randint(3, V, (3, 7))
    memory = model.encode(images)
    gathered = model.decoder(tokens, memory.index_select(0, torch.arange(3)))
    assert_close(model.forward_memory(memory, tokens, torch.arange(3)), gathered)
    # Same count of captions as images but out of order must still gather.
    shuffled = torch.tensor([2, 0, 1])
    assert_close(model.forward_memory(memory, tokens, shuffled), model.decoder(tokens, memory[shuffled]))
    assert not torch.allclose(model.forward_memory(memory, tokens, shuffled), gathered)
    # The skipped gather must not cut the gradient path back to the encoder.
    model.forward_memory(memory, tokens, torch.arange(3)).sum().backward()
    assert model.encoder.model.patch_embed.proj.weight.grad is not None


def test_default_adamw_is_fused_on_cpu_and_matches_the_loop() -> None:
    fused_model = create_captioner("toy", vocab_size=V)
    loop_model = create_captioner("toy", vocab_size=V)
    loop_model.load_state_dict(fused_model.state_dict())
    fused = adamw(param_groups(fused_model), lr=1e-2, weight_decay=0.05)
    loop = torch.optim.AdamW(param_groups(loop_model), lr=1e-2, weight_decay=0.05, foreach=False)
    assert fused.defaults["fused"]
    for _ in range(3):
        # The same gradients for both, so any difference comes from the update arithmetic alone.
        for a, b in zip(fused_model.parameters(), loop_model.parameters(), strict=True):
            a.grad = torch.randn_like(a) * 1e-2
            b.grad = a.grad.clone()
        fused.step()
        loop.step()
    for a, b in zip(fused_model.parameters(), loop_model.parameters(), strict=True):
        assert_close(a, b, atol=1e-6, rtol=1e-5)


def _big_linear() -> tuple[torch.nn.Linear, OneDNNLinear]:
    # 512 rows x 128 in x 160 out = 10.5M multiply-accumulates: above MIN_MACS, so the oneDNN path is taken.
    native = torch.nn.Linear(128, 160)
    onednn = torch.nn.Linear(128, 160)
    onednn.load_state_dict(native.state_dict())
    assert use_onednn_linear(onednn) == 1 and isinstance(onednn, OneDNNLinear)
    return native, onednn


@pytest.mark.skipif(not onednn_linear_available(), reason="this torch build has no usable oneDNN linear")
def test_onednn_linear_trains_like_f_linear(monkeypatch: pytest.MonkeyPatch) -> None:
    native, onednn = _big_linear()
    calls = []
    original = linear_module._OneDNNLinearFunction.apply
    monkeypatch.setattr(linear_module._OneDNNLinearFunction, "apply", lambda *a: calls.append(1) or original(*a))
    x = torch.randn(4, 128, 128, requires_grad=True)  # (B, T, K): leading dims are flattened into rows
    x_native = x.detach().clone().requires_grad_()
    out, ref = onednn(x), native(x_native)
    assert calls, "the oneDNN path was not taken"
    assert_close(out, ref, atol=1e-5, rtol=1e-5)
    grad = torch.randn_like(ref)
    out.backward(grad)
    ref.backward(grad)
    assert_close(x.grad, x_native.grad, atol=1e-5, rtol=1e-5)
    assert_close(onednn.weight.grad, native.weight.grad, atol=1e-4, rtol=1e-5)
    assert_close(onednn.bias.grad, native.bias.grad, atol=1e-4, rtol=1e-5)


def test_onednn_linear_keeps_f_linear_off_the_training_path(monkeypatch: pytest.MonkeyPatch) -> None:
    native, onednn = _big_linear()
    monkeypatch.setattr(linear_module._OneDNNLinearFunction, "apply", lambda *a: pytest.fail("oneDNN path taken"))
    x = torch.randn(512, 128)
    with torch.no_grad():  # inference and generation: bit-for-bit F.linear
        assert torch.equal(onednn(x), native(x))
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast picks its own (bf16 oneDNN) kernel
        assert onednn(x).dtype == torch.bfloat16
    assert torch.equal(onednn(x[:8]), native(x[:8]))  # too small to pay oneDNN's per-call overhead
    assert onednn.state_dict().keys() == native.state_dict().keys()


@pytest.mark.parametrize("backend", ["onednn", "torch"])
def test_training_uses_the_chosen_linears_and_checkpoints_keep_their_names(
    backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if backend == "onednn" and not onednn_linear_available():
        pytest.skip("this torch build has no usable oneDNN linear")
    monkeypatch.setenv("VITCAP_LINEAR", backend)
    cli = lightning_cli(["fit", *caption_args(tmp_path, "--trainer.fast_dev_run", "1")])
    model = cli.model.model
    assert cli.model.linear_backend == backend
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    on_onednn = [type(m) is OneDNNLinear for m in linears]
    assert linears and all(on_onednn) if backend == "onednn" else not any(on_onednn)  # timm's layers included
    eager = create_captioner("toy", vocab_size=model.decoder.vocab_size)
    assert eager.state_dict().keys() == model.state_dict().keys()


def test_cnn_encoder_runs_channels_last_with_nchw_results() -> None:
    encoder = CNNEncoder("resnet18", embed_dim=32, out_index=2).train()
    images = torch.randn(2, 3, 64, 64)
    assert encoder._stem.weight.is_contiguous(memory_format=torch.channels_last)
    tokens = encoder(images)
    encoder.model.to(memory_format=torch.contiguous_format)  # the layout before: input follows the weights
    assert_close(tokens, encoder(images), atol=1e-4, rtol=1e-4)


def test_train_step_bench_prints_one_json_line(tmp_path: Path) -> None:
    # The benchmark's plumbing on the toy model; no timing is checked (figures live in docs/BENCHMARKS.md).
    bench = REPO / "bench" / "train_step.py"
    args = ["--model", "toy", "--batch", "4", "--steps", "1", "--repeats", "1", "--warmup", "0", "--skip-hf"]
    args += ["--lightning-steps", "2", "--ablations", "--data-dir", str(tmp_path / "absent")]
    proc = subprocess.run([sys.executable, str(bench), *args], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    assert result["model"]["vitcap_images_per_s"] > 0 and result["model"]["vitcap_torch_images_per_s"] > 0
    assert result["cpu"] and "cpu_flags" in result and result["linear_backend"]["auto"] in ("torch", "onednn")
    assert result["model"]["gflop_per_step"]["vitcap"] > 0
    assert "lightning_overhead_pct" in result["lightning"]
    assert result["data"] == {"skipped": f"no flickr8k-mini at {tmp_path / 'absent'}"}


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the malloc tuning is for glibc")
def test_malloc_tuning_applies_once_per_process_and_can_be_switched_off() -> None:
    # A child process each: mallopt changes the whole process, and the setting is what run_lightning applies.
    code = "from vitcap.runtime import keep_freed_memory; print(keep_freed_memory())"
    for env, expected in (({}, "True"), ({"VITCAP_MALLOC": "system"}, "False")):
        out = subprocess.run(
            [sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True, text=True, check=True
        )
        assert out.stdout.strip() == expected
