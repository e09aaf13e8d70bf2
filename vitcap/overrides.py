"""Typed partial settings: "these fields replace the preset's (or the data's) value, the others stay".

A config writes `model.encoder: {out_index: 2}` to change one field of a preset's `EncoderConfig`. `overrides_of`
makes, from a settings dataclass, a twin whose fields are all optional with default None ("keep"), so
jsonargparse still checks every key and type at parse time and documents the fields; `apply_overrides` merges
the fields that are set over a base value. This module imports nothing from vitcap but `vitcap.errors`.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, TypeVar

from vitcap.errors import ConfigError

__all__ = ["apply_overrides", "overrides_of", "set_fields"]

T = TypeVar("T")


def overrides_of(cls: type, name: str, doc: str, module: str) -> type:
    """A dataclass named `name` with every field of `cls`, each optional with default None.

    Args:
        cls: The settings dataclass.
        name: Class name of the twin.
        doc: Its docstring.
        module: Module the twin is published from (jsonargparse and pickling look it up there).
    """
    hints = typing.get_type_hints(cls)
    fields = [(f.name, hints[f.name] | None, dataclasses.field(default=None)) for f in dataclasses.fields(cls)]
    made = dataclasses.make_dataclass(name, fields)
    made.__doc__ = doc
    made.__module__ = module
    return made


def set_fields(overrides: Any) -> dict[str, Any]:
    """The fields an overrides object (a twin from `overrides_of`, or a plain dict) sets."""
    if overrides is None:
        return {}
    if dataclasses.is_dataclass(overrides) and not isinstance(overrides, type):
        return {k: v for k, v in dataclasses.asdict(overrides).items() if v is not None}
    if isinstance(overrides, dict):
        return dict(overrides)
    raise ConfigError(f"expected a mapping of settings, got {type(overrides).__name__}")


def apply_overrides(base: T, overrides: Any, key: str) -> T:
    """`base` with the fields `overrides` sets replaced; a whole object of `base`'s type replaces it.

    Raises:
        ConfigError: naming `key`, for fields `base` does not have or values its validation refuses.
    """
    if overrides is None:
        return base
    if isinstance(overrides, type(base)):
        return overrides
    values = set_fields(overrides)
    known = {f.name for f in dataclasses.fields(base)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"unknown settings {unknown}; expected some of {sorted(known)}", key=key)
    return dataclasses.replace(base, **values)
