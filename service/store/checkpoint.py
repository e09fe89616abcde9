"""WAL checkpoints beside a long pass of write transactions (a full recompute).

SQLite's automatic checkpoint runs inside the COMMIT call of the connection
whose commit takes the WAL past 1,000 pages. :class:`CheckpointMixin` lets a
pass switch that off on its connection while a :class:`Checkpointer` thread
with a connection of its own checkpoints beside it.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import anyio.to_thread
import structlog

from service.store.base import StoreBase

log = structlog.get_logger(__name__)

CHECKPOINT_EVERY_S = 0.05
"""The pause between two checkpoints of a :class:`Checkpointer`: a full
recompute writes a few hundred WAL pages in that time, so the WAL stays
under the 1,000 pages at which an upstream commit would checkpoint it."""
AUTOCHECKPOINT_OFF = "PRAGMA wal_autocheckpoint = 0"
AUTOCHECKPOINT_ON = "PRAGMA wal_autocheckpoint = 1000"
"""SQLite's default: a checkpoint once the WAL holds 1,000 pages (restored
after :meth:`CheckpointMixin.checkpoints_outside_lock`)."""
SMALL_CHECKPOINTS = "PRAGMA wal_autocheckpoint = 256"
"""The daemon's connection checkpoints the WAL every 256 pages
(:meth:`CheckpointMixin.use_small_checkpoints`)."""


class Checkpointer:
    """A thread with its own connection that checkpoints the WAL (``PASSIVE``:
    it waits for no reader or writer and takes no write lock) every
    :data:`CHECKPOINT_EVERY_S` until stopped. Errors are logged and retried:
    a missed checkpoint only leaves the WAL longer."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mailplan-checkpoint", daemon=True)
        self.checkpoints = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop after the running checkpoint (blocking: call it in a thread)."""
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            log.warning("checkpointer_not_started", path=str(self.path), error=str(exc))
            return
        try:
            conn.execute("PRAGMA synchronous = NORMAL")
            while not self._stop.wait(CHECKPOINT_EVERY_S):
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                    self.checkpoints += 1
                except sqlite3.Error as exc:
                    log.debug("checkpoint_skipped", error=str(exc))
        finally:
            conn.close()


class CheckpointMixin(StoreBase):
    """The store's part: :meth:`checkpoints_outside_lock`, :meth:`use_small_checkpoints`."""

    async def use_small_checkpoints(self) -> None:
        """Checkpoint the WAL in small steps from this connection (the daemon).

        An upstream writer whose commit takes the WAL past 1,000 pages runs
        the checkpoint in that commit and waits for it. The daemon writes
        most of the pages, so with a lower threshold on its own connection
        it checkpoints first, in smaller pieces, after its commits (no write
        lock is held then).
        """
        await self.run_sql(SMALL_CHECKPOINTS, what="wal autocheckpoint")

    @asynccontextmanager
    async def checkpoints_outside_lock(self) -> AsyncIterator[None]:
        """Inside: this connection's commits do not checkpoint the WAL; a
        thread of its own (:class:`Checkpointer`) does, between them.

        SQLite's automatic checkpoint runs inside the COMMIT call once the
        WAL holds 1,000 pages (it copies pages into the database file and
        syncs both). A long run of short write transactions (a full
        recompute) then pays a checkpoint every few commits: the lock is
        free by then, but the time counts against the transaction, shrinks
        the next chunk and delays the pass. On a connection of its own it
        runs beside the pass, keeps the WAL short (so an upstream commit
        rarely finds 1,000 pages to checkpoint itself) and blocks no writer.
        """
        await self.run_sql(AUTOCHECKPOINT_OFF, what="wal_autocheckpoint")
        checkpointer = Checkpointer(self.path)
        checkpointer.start()
        try:
            yield
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(checkpointer.stop)
                await self.run_sql(AUTOCHECKPOINT_ON, what="wal_autocheckpoint")
