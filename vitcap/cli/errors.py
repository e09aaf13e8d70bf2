"""How the command lines report errors a user can fix: one line, `vitcap: error: <message>`, exit status 2.

Triage is by type: a `vitcap.errors.UserError` (raised where vitcap knows what is wrong: a file, a key, a checkpoint)
or one of Lightning's configuration errors converted where the trainer is configured (`settings_errors`). Anything
else is a bug and keeps its traceback. jsonargparse's own rejections (unknown keys, wrong types) are rewritten
here from its multi-line report into one line naming the key: that rewriting formats a message, it decides nothing.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import inspect
import re
from collections.abc import Iterable, Iterator
from typing import Any

from lightning.pytorch.cli import LightningArgumentParser
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from vitcap.cli import fail
from vitcap.errors import ConfigError, UserError, one_line

__all__ = [
    "VitcapArgumentParser",
    "fail",
    "format_config_error",
    "settings_errors",
    "user_error",
    "user_error_message",
]

# Task arguments that moved into typed groups in vitcap 0.2: named in the "did you mean" hint of an unknown key.
MOVED_KEYS = {
    "lr": "optim.lr",
    "weight_decay": "optim.weight_decay",
    "warmup": "optim.warmup",
    "min_lr_ratio": "optim.min_lr_ratio",
    "mixup_alpha": "mixup.mixup_alpha",
    "cutmix_alpha": "mixup.cutmix_alpha",
    "mixup_prob": "mixup.prob",
}


def user_error(exc: BaseException) -> UserError | MisconfigurationException | None:
    """The user error behind `exc` (itself or a cause), or None for a bug.

    jsonargparse re-raises an error of a constructor (`CaptionDataModule(max_length=1)`) as a multi-line
    "Does not validate against any of the Union subtypes" error whose `__cause__` is the original.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, (UserError, MisconfigurationException)):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def user_error_message(exc: BaseException) -> str:
    """The one line the CLI prints for a user error (see `user_error`)."""
    cause = user_error(exc) or exc
    text = one_line(cause)
    owner = re.search(r"class_path='([\w.]+)'", str(exc)) if cause is not exc else None
    if owner and owner.group(1) not in text:
        text = f"{owner.group(1)}: {text}"
    return text


@contextlib.contextmanager
def settings_errors(what: str) -> Iterator[None]:
    """Within the block, a `ValueError` is about the settings named by `what`, so it becomes a `ConfigError`.

    Used around the Lightning calls that only check a configuration (building the Trainer from its settings,
    sizing the loops against the data), where a `ValueError` means "this setting cannot work here".
    """
    try:
        yield
    except UserError:
        raise
    except (ValueError, MisconfigurationException) as e:
        raise ConfigError(str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__, key=what) from e


_IGNORED = ("Does not validate against", "Subtypes:", "Errors:", "Given value type:", "Expected a path but")


def _type_name(text: str) -> str:
    return re.sub(r"<class '(?:[\w.]+\.)?(\w+)'>", r"\1", text).replace("typing.", "")


def _suggest(word: str, options: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _init_args(class_path: str) -> list[str]:
    try:
        module, _, name = class_path.rpartition(".")
        cls = getattr(importlib.import_module(module), name)
        return [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    except Exception:  # noqa: BLE001 - suggestions are a nicety; the error itself is reported regardless
        return []


def format_config_error(message: str, options: Iterable[str] = ()) -> str:
    """Rewrite a jsonargparse error (often a dozen lines about Union subtypes) as one line naming the key.

    Args:
        message: The parser's message.
        options: Option names the parser accepts (`--trainer.max_epochs`, ...), for "did you mean" hints.

    Returns:
        One line, e.g. `trainer.max_epochs: expected int, got 'three'` or
        `unknown option --trainer.max_epochz (did you mean '--trainer.max_epochs'?)`.
    """
    message = message.strip()
    first = message.splitlines()[0] if message else "invalid configuration"
    match = re.match(r"unrecognized arguments: (.*)$", first)
    if match:
        unknown = [a for a in match.group(1).split() if a.startswith("-")] or match.group(1).split()[:1]
        key = unknown[0].split("=", 1)[0] if unknown else match.group(1)
        return f"unknown option {key}{_suggest(key, options)}"
    match = re.match(r"Subcommand '(\w+)' does not accept option '([^']+)'", first)
    if match:
        names = [o.lstrip("-") for o in options]
        return f"unknown key {match.group(2)!r} in the {match.group(1)} config{_suggest(match.group(2), names)}"
    keys: list[str] = []
    reasons: list[str] = []
    given = class_path = None
    for raw in message.splitlines():
        text = raw.strip().removeprefix("- ").strip()
        found = re.match(r'Parser key "([^"]+)":\s*(.*)$', text)
        if found:
            keys.append(found.group(1))
            text = found.group(2).strip()
        found = re.match(r"Problem with given class_path '([^']+)':\s*(.*)$", text)
        if found:
            class_path, text = found.group(1), found.group(2).strip()
        if not text or text.startswith(_IGNORED) or "NoneType" in text:
            continue
        if text.startswith("Given value:"):
            given = text.split(":", 1)[1].strip()
            continue
        option = re.match(r"Option '([^']+)' is not accepted", text)
        if option:
            keys.append(option.group(1))
            moved = MOVED_KEYS.get(option.group(1))
            hint = (
                f" (moved to {moved!r})"
                if moved
                else _suggest(option.group(1), _init_args(class_path))
                if class_path
                else ""
            )
            owner = f" by {class_path}" if class_path else ""
            reasons.append(f"unknown option, not accepted{owner}{hint}")
            continue
        expected = re.match(r"Expected an? (.+?)(?:\. Got value: (.*))?$", text)
        if expected:
            got = expected.group(2)
            reasons.append(f"expected {_type_name(expected.group(1))}" + (f", got {got!r}" if got is not None else ""))
            continue
        reasons.append(_type_name(text))
    if not reasons:
        return " ".join(line.strip() for line in message.splitlines() if line.strip())
    if given is not None:  # "Given value:" comes after the reasons it belongs to
        reasons = [f"{r}, got {given!r}" if r.startswith("expected ") and ", got " not in r else r for r in reasons]
    unique = list(dict.fromkeys(reasons))
    key = ".".join(k for k in keys if k != "init_args")
    return f"{key}: {'; '.join(unique)}" if key else "; ".join(unique)


class VitcapArgumentParser(LightningArgumentParser):
    """LightningCLI's parser, but a rejected config raises `ConfigError` with one line instead of printing usage.

    jsonargparse prints the whole usage (about 60 lines) and a multi-line Union-subtype report before exiting;
    the CLI prints `vitcap: error: <key>: <what was expected>` instead. Parsers that jsonargparse creates with
    `exit_on_error=False` for its own trial parses keep the default behaviour.
    """

    def error(self, message: str, ex: Exception | None = None) -> Any:
        if not self.exit_on_error:
            return super().error(message, ex)
        parser = getattr(ex, "subcommand_parser", None) or self
        options = [o for o in parser._option_string_actions if o.startswith("--")]
        raise ConfigError(format_config_error(message, options)) from None
