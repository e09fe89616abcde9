"""The daemon's units of work and their limits (SPEC 8.3): batch limits, the
progress of a fan-out, the report of one step."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal

from service.store import RunStats

FANOUT_KEY = "fanout"
"""scheduler_state key holding the progress of the current fan-out (JSON)."""


@dataclass(frozen=True, slots=True)
class BatchLimits:
    """How much one transaction may take on (SPEC 8.3: short transactions)."""

    max_events: int = 500
    max_contacts: int = 1000
    chunk_contacts: int = 1000
    staged_min_events: int = 100
    """From this many pending events a batch is staged: its contacts are read
    and planned outside the write lock, then written in short transactions
    (:mod:`service.daemon.staging`); fewer go the direct way, in one."""
    staged_events: int = 5000
    """Events a staged batch takes on at a time (read outside the lock)."""
    pool_min_contacts: int = 2000
    """Staged work of at least this many contacts is planned in the pool of
    planning processes (started for it, closed when the daemon is idle)."""


@dataclass(frozen=True, slots=True)
class FanOut:
    """A fan-out in progress.

    ``everyone`` walks every contact id (including ids of deleted contacts
    that still have plan rows) and consumes every event with id <= ``upto``
    with its last chunk; otherwise the contacts are those of event ``upto``
    alone, resolved again on each chunk, and that event is consumed with the
    last one. ``after`` is the last contact id done.
    """

    upto: int
    everyone: bool
    after: int | None = None

    def dumps(self) -> str:
        return json.dumps({"upto": self.upto, "everyone": self.everyone, "after": self.after})

    @classmethod
    def loads(cls, text: str) -> FanOut | None:
        try:
            raw = json.loads(text)
            after = raw.get("after")
            return cls(
                upto=int(raw["upto"]),
                everyone=bool(raw["everyone"]),
                after=None if after is None else int(after),
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            return None


@dataclass(slots=True)
class StepReport:
    """What one transaction did."""

    kind: Literal["batch", "fanout"]
    run_id: int
    events: int
    rejected: int
    contacts: int
    stats: RunStats
    ms: float
    finished: bool = True
    staged: bool = False
    """Read and planned outside the write lock (:mod:`service.daemon.staging`):
    the store's writer gap and the reads between its transactions leave
    upstream writers their turn."""
