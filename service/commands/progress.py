"""A progress bar for long commands (``recompute --all``, ``generate``) on a
terminal; nothing at all when stderr is a pipe, a file or the journal (SPEC 10)."""

from __future__ import annotations

import sys
import time
from typing import TextIO

WIDTH = 30
REDRAW_S = 0.2


class Progress:
    """``update(done)`` redraws ``label [####....] 45 % (done of total)`` in place."""

    def __init__(self, label: str, total: int, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = bool(getattr(self.stream, "isatty", lambda: False)())
        self.label, self.total = label, max(total, 1)
        self.started = self.drawn = time.monotonic()
        self.shown = False

    def update(self, done: int, total: int | None = None) -> None:
        if not self.enabled:
            return
        if total is not None:
            self.total = max(total, 1)
        now = time.monotonic()
        if now - self.drawn < REDRAW_S and done < self.total:
            return
        self.drawn = now
        share = min(done / self.total, 1.0)
        bar = "#" * round(share * WIDTH)
        count = f"({min(done, self.total)} of {self.total})"
        took = f"{now - self.started:.0f} s"
        self.stream.write(f"\r{self.label} [{bar:<{WIDTH}}] {share:4.0%} {count} {took}")
        self.stream.flush()
        self.shown = True

    def close(self) -> None:
        if self.shown:
            self.stream.write("\n")
            self.stream.flush()
