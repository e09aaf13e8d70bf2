"""Command lines: `vitcap` (`vitcap.cli.main`) and `train.py` (`vitcap.cli.train`), one module per command.

Every command reports errors a user can fix as one line, `vitcap: error: <message>`, with exit status 2. This
package module imports nothing, so each command loads only what it uses.
"""

from __future__ import annotations

import sys

__all__ = ["fail"]


def fail(message: str) -> int:
    """Print `vitcap: error: <message>` on stderr and return the exit status 2 (every command's user errors)."""
    print(f"vitcap: error: {message}", file=sys.stderr, flush=True)
    return 2
