"""Crash-safe checkpoint files for Lightning: an fsync'd write to a temporary file in the same folder, then a rename.

A kill at any moment leaves either the old or the new checkpoint, never a truncated one. Lightning's own writer
saves to the system temporary folder and moves the file over without fsync, which can leave an empty or partial
file after a power loss. `AtomicCheckpointIO` (installed by the vitcap CLI) also reads with `weights_only=True`
and turns unreadable files into a `CheckpointError` naming the file.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import uuid
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from vitcap.checkpoint import torch_load

__all__ = ["AtomicCheckpointIO", "atomic_save"]


def _temporary_name(path: Path) -> Path:
    # Hidden and not ending in .ckpt, so `--ckpt_path last` (Lightning matches `last*.ckpt`) never picks it up;
    # the pid lets a later save recognise leftovers of a killed process.
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


def _remove_stale_temporaries(path: Path) -> None:
    """Delete temporary files of earlier saves to `path` whose writer process no longer exists (killed mid-save)."""
    pattern = re.compile(rf"^\.{re.escape(path.name)}\.(\d+)\.[0-9a-f]{{8}}\.tmp$")
    with contextlib.suppress(OSError):
        for entry in path.parent.iterdir():
            match = pattern.match(entry.name)
            if not match or int(match.group(1)) == os.getpid():
                continue
            try:
                os.kill(int(match.group(1)), 0)
            except ProcessLookupError:
                with contextlib.suppress(OSError):
                    entry.unlink()
            except OSError:  # PermissionError: the process exists (another user); leave its file alone
                pass


def _fsync_dir(folder: Path) -> None:
    # The rename is only durable once the directory entry is on disk; some filesystems refuse O_RDONLY dir fsync.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.EBADF, errno.EACCES):
            raise
    finally:
        os.close(fd)


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """`torch.save` that never leaves a partial file at `path`.

    The data goes to a temporary file in the same folder (same filesystem, so the rename is atomic), which is
    flushed and fsynced before `os.replace` puts it in place; the folder is fsynced after the rename. On any
    failure, including KeyboardInterrupt, the temporary file is removed and the old `path` is untouched.

    Args:
        obj: Anything `torch.save` accepts.
        path: Destination file; its folder is created.

    Returns:
        `path` as a `Path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(path)
    tmp = _temporary_name(path)
    try:
        # 0o666 & ~umask: the same permissions a plain open() would give the checkpoint.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(path.parent)
    return path


def _is_local(path: str | os.PathLike) -> bool:
    return "://" not in str(path) or str(path).startswith("file://")


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning `CheckpointIO` that writes checkpoints atomically and reads them with `weights_only=True`.

    Remote paths (`s3://...`) fall back to Lightning's own writer. The vitcap CLI installs this plugin unless the
    config names another `CheckpointIO`.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None or not _is_local(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        atomic_save(checkpoint, str(path).removeprefix("file://"))

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        if not _is_local(path):
            return super().load_checkpoint(path, map_location=map_location, weights_only=weights_only)
        # Lightning passes a function that keeps storages where they were saved; CPU is what resuming needs.
        return torch_load(path, map_location="cpu", weights_only=True if weights_only is None else weights_only)
