"""CPU GEMM backend: ``nn.Linear`` whose float32 CPU training matmuls run on oneDNN instead of the BLAS torch links.

Why: on CPU, ``F.linear`` and its backward call the BLAS sgemm torch was built with (MKL in the x86 wheels). On
the AMD EPYC development machine MKL runs its generic code path, 50-100 GFLOP/s per core, while oneDNN's JIT
kernels (shipped inside torch, and what torch already uses for bf16 matmuls and convolutions) reach 150-230
GFLOP/s on the same shapes, so a training step of the demo captioner (about 60% sgemm) gets ~1.4x faster.

Same arithmetic, another kernel: results agree with ``F.linear`` to float32 rounding (~1e-7 relative), the way
two BLAS libraries agree. Only large float32 CPU products with autograd recording take this path; everything
else (CUDA, bf16/fp16 and autocast, ``torch.compile`` tracing, inference and generation, small products where
oneDNN's per-call overhead would dominate) keeps ``F.linear``, so decoding stays bit-for-bit what it was.
The path is checked once against ``F.linear`` and switched off, with a warning, where the oneDNN ops are
missing or disagree; ``VITCAP_CPU_LINEAR=native`` switches it off by hand.
"""

from __future__ import annotations

import os
import warnings
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["OneDNNLinear", "onednn_linear_available", "use_onednn_linear", "use_plain_linear"]

# Multiply-accumulates (rows * in * out) from which oneDNN beats MKL on the development CPU, one thread:
# 512 x 128 x 128 is about even, 2048 x 128 x 512 is 2x faster; below, oneDNN's per-call overhead wins.
MIN_MACS = 1 << 23


def _linear(x2: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """oneDNN inner product ``x2 @ weight.T + bias`` of dense float32 tensors, ``(R, K) -> (R, N)``."""
    return torch.ops.mkldnn._linear_pointwise(x2, weight, bias, "none", [], "")


class _OneDNNLinearFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:  # type: ignore[override]
        x2 = x.reshape(-1, x.shape[-1]).contiguous()  # (R, K)
        ctx.save_for_backward(x2, weight)
        ctx.x_shape = x.shape
        ctx.has_bias = bias is not None
        return _linear(x2, weight, bias).view(*x.shape[:-1], weight.shape[0])  # (..., N)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None]:  # type: ignore[override]
        x2, weight = ctx.saved_tensors
        grad2 = grad.reshape(-1, weight.shape[0]).contiguous()  # (R, N)
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            # dL/dx = grad @ W: an inner product with the (K, N) transposed weight (a small copy).
            grad_x = _linear(grad2, weight.t().contiguous(), None).view(ctx.x_shape)
        if ctx.needs_input_grad[1] or (ctx.has_bias and ctx.needs_input_grad[2]):
            grad_w, grad_b = torch.ops.aten.mkldnn_linear_backward_weights(
                grad2.to_mkldnn(), x2.to_mkldnn(), weight, ctx.has_bias
            )
        return grad_x, grad_w, grad_b if ctx.has_bias else None


@lru_cache(maxsize=1)
def onednn_linear_available() -> bool:
    """Whether the oneDNN path exists in this torch build, is not switched off, and matches ``F.linear``."""
    if os.environ.get("VITCAP_CPU_LINEAR", "onednn") == "native":
        return False
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(64, 48, generator=gen, requires_grad=True)
        w = torch.randn(40, 48, generator=gen, requires_grad=True)
        b = torch.randn(40, generator=gen, requires_grad=True)
        g = torch.randn(64, 40, generator=gen)
        ref = torch.autograd.grad(F.linear(x, w, b), (x, w, b), g)
        out = _OneDNNLinearFunction.apply(x, w, b)
        got = torch.autograd.grad(out, (x, w, b), g)
        ok = torch.allclose(out, F.linear(x, w, b), rtol=1e-4, atol=1e-4) and all(
            torch.allclose(a, r, rtol=1e-4, atol=1e-4) for a, r in zip(got, ref, strict=True)
        )
    except (RuntimeError, AttributeError, NotImplementedError) as e:
        warnings.warn(f"vitcap: oneDNN linear unavailable, CPU training uses F.linear ({e})", stacklevel=2)
        return False
    if not ok:
        warnings.warn("vitcap: oneDNN linear disagrees with F.linear; CPU training uses F.linear", stacklevel=2)
    return ok


def _use_onednn(x: Tensor, weight: Tensor) -> bool:
    return (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and weight.dtype == torch.float32
        and torch.is_grad_enabled()
        and (x.requires_grad or weight.requires_grad)
        and x.numel() * weight.shape[0] >= MIN_MACS  # rows * K * N
        and not torch.is_autocast_enabled("cpu")
        and not torch.compiler.is_compiling()
        and onednn_linear_available()
    )


class OneDNNLinear(nn.Linear):
    """``nn.Linear`` (same parameters, state dict and init) that trains on oneDNN on CPU, see the module docstring."""

    def forward(self, x: Tensor) -> Tensor:
        if _use_onednn(x, self.weight):
            return _OneDNNLinearFunction.apply(x, self.weight, self.bias)
        return F.linear(x, self.weight, self.bias)


def use_onednn_linear(module: nn.Module) -> int:
    """Turn every plain ``nn.Linear`` inside ``module`` (timm's included) into a ``OneDNNLinear``, in place.

    Only the class changes: parameters, buffers, hooks and state-dict names stay, so checkpoints are
    interchangeable both ways. Subclasses of ``nn.Linear`` are left alone (they may have their own forward).

    Returns:
        The number of layers changed.
    """
    changed = 0
    for layer in module.modules():
        if type(layer) is nn.Linear:
            layer.__class__ = OneDNNLinear
            changed += 1
    return changed


def use_plain_linear(module: nn.Module) -> int:
    """Undo `use_onednn_linear`: every ``OneDNNLinear`` inside ``module`` becomes a plain ``nn.Linear`` again.

    Returns:
        The number of layers changed.
    """
    changed = 0
    for layer in module.modules():
        if type(layer) is OneDNNLinear:
            layer.__class__ = nn.Linear
            changed += 1
    return changed
