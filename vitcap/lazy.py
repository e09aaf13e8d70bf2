"""Package names that load on first use (PEP 562), so importing a package costs only what is used.

`vitcap.data`, `vitcap.data.shards`, `vitcap.generate` and `vitcap.deploy` publish names from submodules that
import torch, Lightning or webdataset; the ONNX runtime and the command lines import the light ones without those.
Each package keeps its real imports under `TYPE_CHECKING`, for type checkers and the architecture check. This module
imports nothing from vitcap.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The module `__getattr__` and `__dir__` of `package`, whose name `n` lives in submodule `exports[n]`.

    A name is imported on first use and then stored in the package, so later look-ups skip the hook.
    """
    module = sys.modules[package]

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{exports[name]}"), name)
        vars(module)[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(module)) | set(exports))

    return __getattr__, __dir__
