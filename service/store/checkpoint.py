"""A connection of its own for WAL checkpoints (the daemon's; see
:mod:`service.daemon.checkpoints` for why and when)."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from service.store.base import translate


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
        A log with nothing new returns at once. Raises
        :class:`~service.errors.StoreError` (busy with another checkpoint,
        the file gone)."""
        with self._lock:
            if self._closing:
                return 0
            self._running = True
        try:
            return self._checkpoint(self._connection())
        except sqlite3.Error as exc:
            raise translate(exc, self.path, "a WAL checkpoint") from exc
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
