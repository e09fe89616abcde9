"""WAL checkpoints kept out of the daemon's commits.

SQLite's default makes the commit that takes the write-ahead log past 1,000
pages copy the log back into the database file before it returns
(``wal_autocheckpoint``). At a million contacts that copy touches pages all
over an 800 MB file and takes 0.1-1.5 s on a busy disk, during which the
daemon plans nothing: the next upstream change waits for it.

The daemon therefore turns automatic checkpoints off on its own connection
and runs passive checkpoints on a second connection of its own, in a worker
thread, every :data:`CHECKPOINT_EVERY_S` while the log has grown. A passive
checkpoint takes no lock that writers wait for: the daemon's batches and
upstream writers go on while it copies (SQLite serialises only checkpoints
with each other). Upstream connections keep their own automatic checkpoints;
with the log kept short they rarely reach them.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import anyio
import structlog

from service.store import Store

log = structlog.get_logger(__name__)

CHECKPOINT_EVERY_S = 1.0
"""How often the log is looked at (a passive checkpoint of an empty log costs
microseconds)."""


class Checkpointer:
    """A connection that only runs ``PRAGMA wal_checkpoint(PASSIVE)``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None
        self._copied = 0
        self._lock = threading.Lock()
        self._running = False
        self._closing = False
        self.checkpoints = 0
        """Checkpoints that copied pages."""

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = sqlite3.connect(
                self.path.resolve().as_uri() + "?mode=rw",
                uri=True,
                isolation_level=None,
                check_same_thread=False,
            )
            conn.execute("PRAGMA busy_timeout = 0")
            conn.execute("PRAGMA synchronous = NORMAL")
            self._conn = conn
        return self._conn

    def checkpoint(self) -> int:
        """One passive checkpoint; the pages of the log it copied back now.
        A log with nothing new returns at once."""
        with self._lock:
            if self._closing:
                return 0
            self._running = True
        try:
            return self._checkpoint(self._connection())
        finally:
            with self._lock:
                self._running = False
                if self._closing:
                    self._close()

    def _checkpoint(self, conn: sqlite3.Connection) -> int:
        _busy, pages, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        before, self._copied = self._copied, int(copied)
        if int(pages) <= 0 or int(copied) <= 0:
            self._copied = 0
            return 0
        done = int(copied) - before if int(copied) >= before else int(copied)
        if done > 0:
            self.checkpoints += 1
        return max(done, 0)

    def close(self) -> None:
        """Close now, or (a checkpoint running in its thread) interrupt it
        and let that thread close when it returns."""
        with self._lock:
            self._closing = True
            if self._running:
                if self._conn is not None:
                    self._conn.interrupt()
                return
            self._close()

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


async def keep_wal_short(
    store: Store, path: Path, stop: anyio.Event, every: float = CHECKPOINT_EVERY_S
) -> None:
    """Until ``stop``: the daemon's connection does not checkpoint in its
    commits; a connection of this task does, every ``every`` seconds."""
    await store.set_wal_autocheckpoint(0)
    ckpt = Checkpointer(path)
    try:
        while not stop.is_set():
            with anyio.move_on_after(every):
                await stop.wait()
            if stop.is_set():
                break
            try:
                # Abandoned on cancellation: a stop does not wait for a
                # checkpoint (close() interrupts it).
                await anyio.to_thread.run_sync(ckpt.checkpoint, abandon_on_cancel=True)
            except sqlite3.Error as exc:
                # Busy with another checkpoint, or the file is gone: the
                # daemon's own checks handle a lost database; try again later.
                log.debug("wal_checkpoint_skipped", error=str(exc))
    finally:
        ckpt.close()
