"""Stopping a run on SIGTERM / SIGINT with the exit status a scheduler expects (128 + signal: 143 / 130).

`interrupt_on_signals` is the behaviour outside the training loop (nothing to save); `StopOnSignal`
(`vitcap.training.callbacks`) replaces it while training runs and saves `last.ckpt` first.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["STOP_SIGNALS", "TrainingInterrupted", "interrupt_on_signals"]

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class TrainingInterrupted(SystemExit):
    """A run stopped by SIGTERM / SIGINT; exits with status 128 + signal number (143 / 130), never 0.

    Attributes:
        signum: The signal.
        checkpoint: The checkpoint written before stopping, if any.
        step: The global step it holds.
    """

    def __init__(self, signum: int, checkpoint: str | os.PathLike | None = None, step: int | None = None) -> None:
        super().__init__(128 + int(signum))
        self.signum = int(signum)
        self.checkpoint = None if checkpoint is None else Path(checkpoint)
        self.step = step

    def __str__(self) -> str:
        text = f"interrupted by {signal.Signals(self.signum).name}"
        if self.checkpoint is not None:
            text += f"; saved step {self.step} to {self.checkpoint} (resume with --ckpt_path last)"
        return text

    def __reduce__(self):
        return (type(self), (self.signum, self.checkpoint, self.step))


@contextlib.contextmanager
def interrupt_on_signals() -> Iterator[None]:
    """Within the block, SIGTERM and SIGINT raise `TrainingInterrupted` at once (exit status 143 / 130).

    This is the behaviour outside the training loop (setup, validation, test, predict), where there is nothing
    to save; `StopOnSignal` replaces it while training runs. DataLoader workers forked inside the block inherit
    the handler but ignore the signal: the main process decides when to stop and shuts them down.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    owner = os.getpid()

    def handler(signum: int, frame: Any) -> None:
        if os.getpid() == owner:
            raise TrainingInterrupted(signum)

    previous = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    for s in STOP_SIGNALS:
        signal.signal(s, handler)
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)
