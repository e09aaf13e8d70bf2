"""The float32 GEMM path CPU training uses for `nn.Linear`, chosen by measurement on this machine and model.

Which kernel is fastest depends on the processor: on an AMD EPYC with AVX-512, MKL's sgemm (what `F.linear` calls
in torch's x86 builds) runs a generic code path and oneDNN's JIT kernels train the demo ~1.3x faster; on an
AVX2-only EPYC the same oneDNN path is 0.87x (slower). So nothing is assumed: before the first training step,
`choose_linear_backend` times one forward + backward of the model on a batch of its training shape with each
candidate (`torch`: `F.linear`; `onednn`: `vitcap.layers.gemm.OneDNNLinear`), interleaved, and keeps oneDNN only
when it is at least `MARGIN` faster, so the choice is never slower than plain torch by more than the timing noise.
The result is cached in `linear_backend.json` under the user's cache folder (`$VITCAP_CACHE_DIR`, else
`$XDG_CACHE_HOME/vitcap`, else `~/.cache/vitcap`), keyed by CPU model, thread count, torch version and the model's
linear shapes, and logged once. `VITCAP_LINEAR=auto|torch|onednn` overrides (`auto` is the default).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from vitcap.errors import ConfigError
from vitcap.layers.gemm import onednn_linear_available, use_onednn_linear, use_plain_linear

__all__ = [
    "BACKENDS",
    "LinearChoice",
    "apply_linear_backend",
    "cached_backends",
    "choose_linear_backend",
    "cpu_facts",
    "pick",
]

BACKENDS = ("torch", "onednn")
ENV = "VITCAP_LINEAR"
MARGIN = 0.97  # oneDNN must take at most 97% of plain torch's time to be chosen
CACHE_FILE = "linear_backend.json"
FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile")


@dataclass
class LinearChoice:
    """The backend training uses and why.

    Attributes:
        backend: "torch" or "onednn".
        source: "env" (VITCAP_LINEAR), "cache", "measured" or "unavailable" (no usable oneDNN path).
        seconds: Median seconds of one forward + backward per backend, when measured.
        key: The cache key (CPU model, threads, torch version, model shapes).
    """

    backend: str
    source: str
    seconds: dict[str, float] = field(default_factory=dict)
    key: str = ""

    def describe(self) -> str:
        text = f"CPU linear backend: {self.backend} ({self.source}"
        if len(self.seconds) == 2:
            ratio = self.seconds["torch"] / self.seconds["onednn"]
            text += f"; oneDNN ran a training step {ratio:.2f}x the speed of F.linear"
        return text + ")"


def cpu_facts() -> dict[str, Any]:
    """CPU model, the instruction-set flags that decide GEMM speed, threads and torch version."""
    model, flags = platform.processor() or platform.machine(), set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and ":" in line:
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and ":" in line:
                flags = set(line.split(":", 1)[1].split())
                break
    return {
        "cpu": model,
        "flags": [f for f in FLAGS if f in flags],
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }


def cached_backends() -> list[str]:
    """The backends cached for this CPU model, thread count and torch version (any model): what training picks here."""
    prefix = _machine_key()
    entries = _read_cache(_cache_dir() / CACHE_FILE)
    return sorted(
        {v["backend"] for k, v in entries.items() if k.startswith(prefix) and isinstance(v, dict) and "backend" in v}
    )


def pick(seconds: dict[str, float]) -> str:
    """oneDNN when it is at least `MARGIN` faster than plain torch, else torch."""
    return "onednn" if seconds["onednn"] <= MARGIN * seconds["torch"] else "torch"


def _cache_dir() -> Path:
    if os.environ.get("VITCAP_CACHE_DIR"):
        return Path(os.environ["VITCAP_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "vitcap"


def _machine_key() -> str:
    """The machine part of a cache key: CPU model, threads and torch version."""
    facts = cpu_facts()
    return f"{facts['cpu']}|threads={facts['threads']}|torch={facts['torch']}|"


def _key(model: nn.Module, example: tuple[Tensor, ...]) -> str:
    shapes = sorted((m.in_features, m.out_features) for m in model.modules() if isinstance(m, nn.Linear))
    signature = json.dumps([shapes, [list(t.shape) for t in example]])
    digest = hashlib.sha1(signature.encode()).hexdigest()[:12]
    return f"{_machine_key()}model={digest}"


def _read_cache(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_cache(path: Path, key: str, choice: LinearChoice) -> None:
    with contextlib.suppress(OSError):  # a read-only home must not stop training
        path.parent.mkdir(parents=True, exist_ok=True)
        data = _read_cache(path)
        data[key] = {**asdict(choice), "date": time.strftime("%Y-%m-%d")}
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, path)


def measure(model: nn.Module, example: tuple[Tensor, ...], repeats: int = 5) -> dict[str, float]:
    """Median seconds of one training-mode forward + backward of `model(*example)` per backend, taking turns.

    Timed in train mode, as training runs (BatchNorm in eval mode takes other, slower backward kernels on CPU, which
    would skew the comparison); its buffers (BatchNorm statistics) are restored and its gradients dropped
    afterwards, and the caller forks the random state, so training is left exactly as it was.
    """
    buffers = {name: buf.detach().clone() for name, buf in model.named_buffers()}
    was_training = model.training
    model.train()
    times: dict[str, list[float]] = {name: [] for name in BACKENDS}

    def step() -> None:
        out = model(*example)
        out.float().square().mean().backward()

    try:
        for round_ in range(repeats + 1):  # round 0 warms both paths up
            for name in BACKENDS if round_ % 2 == 0 else BACKENDS[::-1]:
                apply_linear_backend(model, name)
                start = time.perf_counter()
                step()
                if round_:
                    times[name].append(time.perf_counter() - start)
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
        with torch.no_grad():
            for name, buf in model.named_buffers():
                buf.copy_(buffers[name])
    return {name: statistics.median(ts) for name, ts in times.items()}


def apply_linear_backend(model: nn.Module, backend: str) -> int:
    """Put every plain `nn.Linear` of `model` on `backend` in place (parameters and state-dict names unchanged)."""
    if backend == "onednn":
        return use_onednn_linear(model)
    return use_plain_linear(model)


def choose_linear_backend(
    model: nn.Module, example: tuple[Tensor, ...], measure_fn: Callable[..., dict[str, float]] = measure
) -> LinearChoice:
    """Decide the CPU linear backend for training `model` on batches shaped like `example` (see the module doc).

    Raises:
        ConfigError: for a `VITCAP_LINEAR` value other than auto, torch or onednn.
    """
    requested = os.environ.get(ENV, "auto").strip().lower() or "auto"
    if os.environ.get("VITCAP_CPU_LINEAR") == "native":  # the switch of vitcap 0.1
        requested = "torch"
    if requested not in ("auto", *BACKENDS):
        raise ConfigError(f"expected auto, torch or onednn, got {requested!r}", key=ENV)
    if requested == "onednn" and not onednn_linear_available():
        return LinearChoice("torch", "unavailable")
    if requested != "auto":
        return LinearChoice(requested, "env")
    if not onednn_linear_available():
        return LinearChoice("torch", "unavailable")
    key = _key(model, example)
    path = _cache_dir() / CACHE_FILE
    cached = _read_cache(path).get(key)
    if isinstance(cached, dict) and cached.get("backend") in BACKENDS:
        return LinearChoice(cached["backend"], "cache", dict(cached.get("seconds") or {}), key)
    with torch.random.fork_rng(devices=[]):
        seconds = measure_fn(model, example)
    choice = LinearChoice(pick(seconds), "measured", {k: round(v, 5) for k, v in seconds.items()}, key)
    _write_cache(path, key, choice)
    return choice
