"""Chunk sizes that keep each write transaction short (SPEC 8.3: target ≤ 200 ms).

A fan-out or a full recompute works through contacts in chunks, each its own
transaction; while it holds the write lock, upstream writers wait. How many
contacts fit in the target depends on the book and on how loaded the machine
is, so the size is adjusted after every chunk from the time the last one took.
"""

from __future__ import annotations

from dataclasses import dataclass, field

TARGET_S = 0.035
"""Aimed-for duration of one chunk's transaction (the daemon's fan-out and
tick chunks, which read and plan inside it): with the store's writer gap
after it, an upstream writer waiting meanwhile gets in within ~50 ms (SPEC
12: p99 ≤ 50 ms), where 150 ms chunks kept it waiting up to ~200 ms."""
MIN_CHUNK = 50

WRITE_TARGET_S = 0.03
"""Aimed-for duration of a chunk's write transaction, its commit included,
when the chunk was read and planned outside it (a full recompute): short
enough that an upstream
writer waiting in SQLite's busy handler, which tries again after 1, 2, 5,
10, 15, 20 ms, gets in within about 50 ms (see ``StoreBase._writer_gap``)."""


@dataclass(slots=True)
class ChunkSizer:
    """The size of the next chunk: at most ``ceiling``, at least ``MIN_CHUNK``."""

    ceiling: int
    target_s: float = TARGET_S
    size: int = field(init=False)

    def __post_init__(self) -> None:
        self.size = min(self.ceiling, max(MIN_CHUNK, self.ceiling // 4))

    def record(self, contacts: int, seconds: float) -> None:
        """A chunk of ``contacts`` took ``seconds``: size the next one."""
        if contacts <= 0 or seconds <= 0:
            return
        ideal = contacts * self.target_s / seconds
        # Grow gently, shrink at once: one slow chunk is a writer waiting.
        grown = min(ideal, self.size * 2.0)
        self.size = int(min(self.ceiling, max(MIN_CHUNK, grown)))
