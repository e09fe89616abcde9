"""The daemon's one retry policy (SPEC 13): exponential backoff with a ceiling.

Every retried piece of the daemon's work (re-opening a database that went
away, a batch that failed, the calendar tick) waits by the same rule: the
first retry after ``first`` seconds, each next one twice as long, never more
than ``ceiling``; a success starts over. A failure that repeats is logged at
most once per wait, so a database gone for an hour writes a few dozen lines,
not millions, and costs no CPU while it waits.
"""

from __future__ import annotations

from dataclasses import dataclass

import anyio


@dataclass(slots=True)
class Backoff:
    """How long to wait before the next attempt of one kind of work."""

    first: float = 0.1
    ceiling: float = 30.0
    failures: int = 0

    def next_delay(self) -> float:
        """Count one more failure; the wait before the next attempt."""
        self.failures += 1
        return min(self.first * 2.0 ** (self.failures - 1), self.ceiling)

    def reset(self) -> None:
        self.failures = 0


class Leave:
    """Tells long work to stop at the next transaction boundary.

    Shared by the daemon (which sets it: stop requested, database gone) and
    the worker (which asks it and sleeps on it); neither calls the other.
    """

    def __init__(self) -> None:
        self._event = anyio.Event()

    def set(self) -> None:
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    async def wait(self) -> None:
        await self._event.wait()

    async def pause(self, seconds: float) -> None:
        """Sleep ``seconds``, or less if it is set meanwhile."""
        with anyio.move_on_after(seconds):
            await self._event.wait()
