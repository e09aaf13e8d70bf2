"""The errors a user can cause and fix: a bad file, a bad config key, a checkpoint or export of the wrong kind.

Every such error subclasses `UserError` and is raised where the problem is known, with a message that names the
file or key and what was expected. The command lines print `vitcap: error: <message>` (one line, exit status 2)
for a `UserError` and keep the traceback for anything else, which is a bug: triage is by type, never by where an
exception was raised or by what its text says.

They stay `ValueError`s, as they were before this module, so `except ValueError` in user code keeps working.
Each one can be rebuilt from its message alone: a DataLoader worker re-raises an exception in the main process by
calling its type with the worker's formatted traceback, and so the type survives the trip (see `one_line`).
This module imports nothing, so any layer may use it.
"""

from __future__ import annotations

import os

__all__ = [
    "CaptionFormatError",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "ExportError",
    "ImageLoadError",
    "ManifestError",
    "UserError",
    "one_line",
]


class UserError(ValueError):
    """An error the user can fix; its message is shown as one line, without a traceback.

    Args:
        message: What is wrong, naming the file or key and what was expected.
        path: The file the error is about, if any.
        key: The configuration key the error is about, if any (`model.decoder.depth`).
    """

    def __init__(self, message: str, *, path: str | os.PathLike | None = None, key: str | None = None) -> None:
        super().__init__(message)
        self.path = None if path is None else str(path)
        self.key = key

    def __reduce__(self):  # pickles across processes with its attributes (multiprocessing, DDP spawn)
        # The state carries the subclasses' own attributes (ImageLoadError.reason, ManifestError.problems).
        return (_rebuild, (type(self), str(self), self.path, self.key), dict(self.__dict__))


def _rebuild(cls: type[UserError], message: str, path: str | None, key: str | None) -> UserError:
    error = cls.__new__(cls)
    UserError.__init__(error, message, path=path, key=key)
    return error


class ConfigError(UserError):
    """A configuration value or command-line option that cannot be used; the message names the key."""


class CheckpointError(UserError):
    """A file or folder that is not a usable vitcap checkpoint or export; the message names it."""


class ExportError(UserError):
    """A model or folder that cannot be exported, or an export folder that cannot be read."""


class DataError(UserError):
    """Input data that cannot be used: images, caption files, shards."""


class ImageLoadError(DataError):
    """An image file that cannot be used; the message names the file and the reason.

    `ImageLoadError(path, reason)` builds the message `cannot load image PATH: REASON`; `ImageLoadError(message)`
    takes a finished message (how a DataLoader worker's error is re-raised).
    """

    def __init__(self, path: str | os.PathLike, reason: str | None = None) -> None:
        if reason is None:  # a finished message
            super().__init__(str(path))
            self.reason = str(path)
            return
        super().__init__(f"cannot load image {path}: {reason}", path=path)
        self.reason = reason


class CaptionFormatError(DataError):
    """A caption file that cannot be parsed at all; the message names the file (and line where known)."""


class ManifestError(DataError):
    """Every bad entry of a manifest, reported at once (see `vitcap.data.captions`).

    Attributes:
        source: The manifest (file or folder).
        problems: All problems found, in file order (empty when rebuilt from a message).
    """

    def __init__(self, source: str | os.PathLike, problems: list | None = None, message: str | None = None) -> None:
        self.source = str(source)
        self.problems = list(problems or [])
        super().__init__(message if message is not None else self.source, path=source if problems else None)


_WORKER_PREFIX = "Caught "


def one_line(error: BaseException) -> str:
    """The message of an error as the command line prints it: one line, naming the file or key.

    A user error re-raised from a DataLoader worker carries the worker's whole traceback in its message
    ("Caught ImageLoadError in DataLoader worker process 0. Original Traceback ..."); its last line is the
    original message.
    """
    text = str(error).strip()
    if text.startswith(_WORKER_PREFIX) and "\n" in text:
        last = [line for line in text.splitlines() if line.strip()][-1]
        text = last.split(": ", 1)[1] if ": " in last else last
    if isinstance(error, UserError) and error.path and error.path not in text:
        text = f"{error.path}: {text}"
    if isinstance(error, UserError) and error.key and not text.startswith(error.key):
        text = f"{error.key}: {text}"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) > 1 and not isinstance(error, ManifestError):  # a manifest lists every bad entry by design
        text = " ".join(lines)
    return text or type(error).__name__
