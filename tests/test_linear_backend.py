"""The CPU linear backend is chosen by measurement, cached per machine and model, and can be forced."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from vitcap.errors import ConfigError
from vitcap.layers.gemm import OneDNNLinear, onednn_linear_available
from vitcap.models import create_captioner
from vitcap.training import linear_backend
from vitcap.training.linear_backend import (
    apply_linear_backend,
    cached_backends,
    choose_linear_backend,
    cpu_facts,
    measure,
    pick,
)

V = 20


def _model_and_example() -> tuple[torch.nn.Module, tuple[torch.Tensor, ...]]:
    model = create_captioner("toy", vocab_size=V).train()
    return model, (torch.randn(4, 3, 32, 32), torch.randint(3, V, (4, 9)))


def _onednn_layers(model: torch.nn.Module) -> int:
    return sum(type(m) is OneDNNLinear for m in model.modules())


def test_pick_keeps_torch_unless_onednn_is_clearly_faster() -> None:
    assert pick({"torch": 1.0, "onednn": 0.99}) == "torch"  # within the 3% margin: never risk a slow-down
    assert pick({"torch": 1.0, "onednn": 0.90}) == "onednn"
    assert pick({"torch": 1.0, "onednn": 1.20}) == "torch"


@pytest.mark.parametrize("value, expected", [("torch", "torch"), ("onednn", "onednn")])
def test_environment_forces_the_backend(value: str, expected: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if expected == "onednn" and not onednn_linear_available():
        pytest.skip("this torch build has no usable oneDNN linear")
    monkeypatch.setenv("VITCAP_LINEAR", value)
    model, example = _model_and_example()
    choice = choose_linear_backend(model, example, measure_fn=lambda *a: pytest.fail("must not measure"))
    assert (choice.backend, choice.source) == (expected, "env")
    apply_linear_backend(model, choice.backend)
    assert (_onednn_layers(model) > 0) == (expected == "onednn")
    apply_linear_backend(model, "torch")
    assert _onednn_layers(model) == 0


def test_bad_environment_value_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VITCAP_LINEAR", "mkl")
    with pytest.raises(ConfigError, match="auto, torch or onednn") as error:
        choose_linear_backend(*_model_and_example())
    assert error.value.key == "VITCAP_LINEAR"


@pytest.mark.skipif(not onednn_linear_available(), reason="this torch build has no usable oneDNN linear")
def test_auto_measures_once_then_reads_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VITCAP_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("VITCAP_LINEAR", raising=False)
    model, example = _model_and_example()
    calls = []

    def fake(m: torch.nn.Module, ex: tuple) -> dict[str, float]:
        calls.append(1)
        return {"torch": 1.0, "onednn": 0.5}

    first = choose_linear_backend(model, example, measure_fn=fake)
    again = choose_linear_backend(model, example, measure_fn=fake)
    assert (first.backend, first.source, again.backend, again.source) == ("onednn", "measured", "onednn", "cache")
    assert len(calls) == 1
    cached = json.loads((tmp_path / "linear_backend.json").read_text())
    (key,) = cached
    facts = cpu_facts()
    assert facts["cpu"] in key and f"threads={facts['threads']}" in key and f"torch={facts['torch']}" in key
    other_shape = (example[0][:2], example[1][:2])  # another batch shape is measured anew
    choose_linear_backend(model, other_shape, measure_fn=fake)
    assert len(calls) == 2
    assert cached_backends() == ["onednn"]  # what benchmarks record as this machine's choice


@pytest.mark.skipif(not onednn_linear_available(), reason="this torch build has no usable oneDNN linear")
def test_measuring_leaves_the_model_as_it_was() -> None:
    # A CNN encoder: training-mode steps update BatchNorm statistics, which measuring must put back.
    model = create_captioner(
        "cnn-tiny", vocab_size=V, encoder={"embed_dim": 32, "out_index": 2}, decoder={"embed_dim": 32, "num_heads": 2}
    ).train()
    example = (torch.randn(4, 3, 32, 32), torch.randint(3, V, (4, 9)))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    with torch.random.fork_rng(devices=[]):  # as choose_linear_backend does
        seconds = measure(model, example, repeats=1)
    assert set(seconds) == {"torch", "onednn"} and all(s > 0 for s in seconds.values())
    assert model.training and all(p.grad is None for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # running statistics included
    assert torch.equal(rng, torch.get_rng_state())
    assert linear_backend.MARGIN < 1
