# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
"""A dependency-free progress bar shown on rank 0 only."""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["Progress"]


class Progress:
    """Progress of ``total`` steps, drawn on rank 0.

    On a terminal the bar redraws in place; otherwise (CI logs, files) a line is written about every tenth of the
    work, so logs stay short.

    Args:
        total: Number of steps.
        label: Text in front of the bar.
        enabled: Draw anything at all (pass ``comm.rank == 0 and user_wants_progress``).
        stream: Where to draw; standard error by default.
    """

    def __init__(self, total: int, label: str, *, enabled: bool = True, stream: TextIO | None = None):
        self.total = max(int(total), 1)
        self.label = label
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._start = time.perf_counter()
        self._last_reported = -1

    def update(self, done: int, info: str = "") -> None:
        """Report that ``done`` steps are finished; ``info`` is appended to the line."""
        if not self.enabled:
            return
        decile = (10 * done) // self.total
        if not self._tty and decile == self._last_reported and done != self.total:
            return
        self._last_reported = decile
        elapsed = time.perf_counter() - self._start
        eta = elapsed / done * (self.total - done) if done else float("nan")
        width = 30
        filled = (width * done) // self.total
        bar = "#" * filled + "-" * (width - filled)
        line = f"{self.label} [{bar}] {done}/{self.total} {elapsed:6.1f}s elapsed, ETA {eta:6.1f}s {info}"
        if self._tty:
            self.stream.write("\r" + line + ("\n" if done == self.total else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()
