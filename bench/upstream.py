"""What the benchmark does as an upstream system: real changes and the sender.

Everything here runs in the benchmark's process, never in mailplan's: changes
are committed with the standard ``sqlite3`` module, and the time of a change is
taken when its ``COMMIT`` returns. The plan of a change is committed when the
daemon deletes its event, which it does in the same transaction as the plan
writes (SPEC 8.3); :class:`Observer` sees that through ``PRAGMA data_version``,
polled every millisecond (the resolution of every latency figure).
"""

from __future__ import annotations

import random
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

STATES = ("CA", "NY", "TX", "FL", "ID", "MO", "OR", "NV", "KY", "CT", "WA", "IL")


def connect(db: Path, busy_ms: int = 5000) -> sqlite3.Connection:
    conn = sqlite3.connect(db, isolation_level=None, timeout=busy_ms / 1000)
    conn.execute(f"PRAGMA busy_timeout = {int(busy_ms)}")
    return conn


def max_event(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT coalesce(max(id), 0) FROM scheduler_events").fetchone()[0])


def plan_of(conn: sqlite3.Connection, contact_id: int) -> list[tuple[object, ...]]:
    return conn.execute(
        "SELECT email_type, event_year, event_month, event_day, scheduled_send_date, status "
        "FROM email_schedules WHERE contact_id = ? AND status IN ('pre-scheduled', 'skipped') "
        "ORDER BY 1, 2, 3, 4",
        (contact_id,),
    ).fetchall()


def _shift(text: str | None, days: int) -> str | None:
    if not text:
        return text
    try:
        return (date.fromisoformat(text[:10]) + timedelta(days=days)).isoformat()
    except ValueError:
        return text


@dataclass
class Commit:
    """An upstream commit: when it returned, how long it waited for the lock
    (over every attempt), its last event, and how many attempts failed with
    "database is locked" after the whole busy timeout."""

    at: float
    wait: float
    event: int
    failed: int = 0


def begin(conn: sqlite3.Connection) -> tuple[float, int]:
    """``BEGIN IMMEDIATE`` as an upstream system does it: on "database is
    locked" (the busy timeout ran out) it tries again. (seconds waited, failures)."""
    started = time.monotonic()
    failed = 0
    while True:
        try:
            conn.execute("BEGIN IMMEDIATE")
            return time.monotonic() - started, failed
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            failed += 1


def real_change(conn: sqlite3.Connection, contact_id: int, kind: str, rng: random.Random) -> Commit:
    """Move a birth date, a policy (effective) date or the state of a contact."""
    wait, failed = begin(conn)
    row = conn.execute(
        "SELECT birth_date, effective_date, state FROM contacts WHERE id = ?", (contact_id,)
    ).fetchone()
    if row is not None:
        birth, effective, state = row
        days = rng.choice((-1, 1)) * rng.randint(1, 45)
        if kind == "birth_date":
            conn.execute(
                "UPDATE contacts SET birth_date = ? WHERE id = ?", (_shift(birth, days), contact_id)
            )
        elif kind == "effective_date":
            conn.execute(
                "UPDATE contacts SET effective_date = ? WHERE id = ?",
                (_shift(effective, days), contact_id),
            )
        else:
            new = rng.choice([s for s in STATES if s != state])
            conn.execute("UPDATE contacts SET state = ? WHERE id = ?", (new, contact_id))
    event = max_event(conn)
    conn.execute("COMMIT")
    return Commit(time.monotonic(), wait, event, failed)


def mark_sent(conn: sqlite3.Connection, ids: list[int], stamp: str) -> Commit:
    """The sender: planned rows become ``sent`` (history)."""
    wait, failed = begin(conn)
    conn.executemany(
        "UPDATE email_schedules SET status = 'sent', sent_at = ?, actual_send_datetime = ? "
        "WHERE id = ? AND status = 'pre-scheduled'",
        [(stamp, stamp, i) for i in ids],
    )
    event = max_event(conn)
    conn.execute("COMMIT")
    return Commit(time.monotonic(), wait, event, failed)


@dataclass
class Observer:
    """Watches the events inbox from its own connection and thread; tells when
    every event up to an id has been consumed (the plan of it committed)."""

    db: Path
    step: float = 0.001
    _conn: sqlite3.Connection | None = None
    _version: int = -1
    low: int = 0
    """Every event with id < ``low`` is consumed (or none is pending: max + 1)."""
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _waiters: list[tuple[int, Commit, list[float]]] = field(default_factory=list)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        started = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(started,), daemon=True)
        self._thread.start()
        started.wait()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _refresh(self) -> None:
        assert self._conn is not None
        row = self._conn.execute(
            "SELECT (SELECT min(id) FROM scheduler_events), "
            "(SELECT coalesce(max(seq), 0) FROM sqlite_sequence WHERE name = 'scheduler_events')"
        ).fetchone()
        low = int(row[0]) if row[0] is not None else int(row[1]) + 1
        now = time.monotonic()
        with self._lock:
            self.low = low
            keep = []
            for event, commit, sink in self._waiters:
                if event < low:
                    sink.append(now - commit.at)
                else:
                    keep.append((event, commit, sink))
            self._waiters = keep

    def _run(self, started: threading.Event) -> None:
        self._conn = connect(self.db)
        self._refresh()
        started.set()
        try:
            while not self._stop.is_set():
                version = int(self._conn.execute("PRAGMA data_version").fetchone()[0])
                if version != self._version:
                    self._version = version
                    self._refresh()
                time.sleep(self.step)
        finally:
            self._conn.close()

    def expect(self, commit: Commit, sink: list[float]) -> None:
        """Append the commit's lag (seconds) to ``sink`` once its events are consumed."""
        with self._lock:
            if commit.event < self.low:
                sink.append(time.monotonic() - commit.at)
            else:
                self._waiters.append((commit.event, commit, sink))

    def outstanding(self) -> int:
        with self._lock:
            return len(self._waiters)

    def wait_all(self, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while self.outstanding():
            if time.monotonic() > end:
                return False
            time.sleep(0.005)
        return True

    def drained(self, upto: int) -> bool:
        with self._lock:
            return upto < self.low
