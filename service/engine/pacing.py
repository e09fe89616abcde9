"""Chunk sizes that keep each write transaction short (SPEC 8.3: target ≤ 200 ms).

A fan-out or a full recompute works through contacts in chunks, each its own
transaction; while it holds the write lock, upstream writers wait. How many
contacts fit in the target depends on the book and on how loaded the machine
is, so the size is adjusted after every chunk from the time the last one took.
"""

from __future__ import annotations

from dataclasses import dataclass, field

TARGET_S = 0.15
"""Aimed-for duration of one chunk's transaction (below the SPEC's 200 ms)."""
MIN_CHUNK = 50


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
