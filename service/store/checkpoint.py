"""WAL checkpoints on a connection of their own.

SQLite's automatic checkpoint runs inside the COMMIT call of the connection
whose commit takes the WAL past 1,000 pages. :class:`Checkpointer` is a
connection that only checkpoints: the daemon's (see
:mod:`service.daemon.checkpoints` for why and when), and the thread of
:class:`CheckpointThread` that checkpoints beside a long pass of write
transactions (a full recompute, :meth:`CheckpointMixin.checkpoints_outside_lock`).
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

from service.errors import StoreError
from service.store.base import StoreBase, translate

log = structlog.get_logger(__name__)

CHECKPOINT_EVERY_S = 0.05
"""The pause between two checkpoints of a :class:`CheckpointThread`: a full
recompute writes a few hundred WAL pages in that time, so the WAL stays
under the 1,000 pages at which an upstream commit would checkpoint it."""
AUTOCHECKPOINT_OFF = "PRAGMA wal_autocheckpoint = 0"
AUTOCHECKPOINT_ON = "PRAGMA wal_autocheckpoint = 1000"
"""SQLite's default: a checkpoint once the WAL holds 1,000 pages (restored
after :meth:`CheckpointMixin.checkpoints_outside_lock`)."""


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


class CheckpointThread:
    """A thread that runs a passive checkpoint (it waits for no reader or
    writer and takes no write lock) on a :class:`Checkpointer` every
    :data:`CHECKPOINT_EVERY_S` until stopped. Errors are logged and retried:
    a missed checkpoint only leaves the WAL longer."""

    def __init__(self, path: Path) -> None:
        self.checkpointer = Checkpointer(path)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mailplan-checkpoint", daemon=True)
        self.runs = 0
        """Checkpoints attempted."""

    def start(self) -> None:
        self._thread.start()

    def kick(self) -> None:
        """Checkpoint now rather than at the next tick (after a commit)."""
        self._wake.set()

    def stop(self) -> None:
        """Stop after the running checkpoint (blocking: call it in a thread)."""
        self._stop.set()
        self._wake.set()
        self._thread.join()
        self.checkpointer.close()

    def _run(self) -> None:
        while True:
            self._wake.wait(CHECKPOINT_EVERY_S)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.checkpointer.checkpoint()
            except StoreError as exc:
                log.debug("checkpoint_skipped", error=str(exc))
            self.runs += 1


class CheckpointMixin(StoreBase):
    """The store's part: :meth:`checkpoints_outside_lock`, :meth:`checkpoints_beside`."""

    _checkpoints: CheckpointThread | None = None
    _wake: anyio.Event | None = None

    @asynccontextmanager
    async def checkpoints_outside_lock(self) -> AsyncIterator[None]:
        """Inside: this connection's commits do not checkpoint the WAL; a
        thread of its own (:class:`CheckpointThread`) does, between them
        (:meth:`checkpoints_beside`).

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
        try:
            async with self.checkpoints_beside():
                yield
        finally:
            with anyio.CancelScope(shield=True):
                await self.run_sql(AUTOCHECKPOINT_ON, what="wal_autocheckpoint")

    @asynccontextmanager
    async def checkpoints_beside(self) -> AsyncIterator[None]:
        """Inside: a thread of its own (:class:`CheckpointThread`) runs a
        passive checkpoint every :data:`CHECKPOINT_EVERY_S` and right after
        each of this store's commits; this connection's own setting
        (``wal_autocheckpoint``) is left as it is (the daemon's is off).

        Right after each commit, because the upstream writer that waited
        for the lock commits a moment after ours: with our pages still in
        the WAL, its COMMIT syncs them (an upstream connection's default
        ``synchronous = FULL`` syncs the log in every commit) or copies them
        back itself once the WAL holds 1,000 pages, and it waits for that
        (see :meth:`checkpoint_soon`). A passive checkpoint takes no lock
        another writer waits for."""
        # Nested (not done today), the outer thread is registered again after.
        outer = self._checkpoints, self._after_commit
        thread = self._checkpoints = CheckpointThread(self.path)
        self._after_commit = thread.kick
        thread.start()
        try:
            yield
        finally:
            self._checkpoints, self._after_commit = outer
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(thread.stop)

    def checkpoint_soon(self) -> None:
        """Right after a large commit: the checkpoint thread of
        :meth:`checkpoints_outside_lock` (if one runs) checkpoints now, not
        at its next tick, and so does whoever waits on :meth:`checkpoint_wake`
        (the daemon's checkpoint task; the daemon's staged chunks call this).

        An upstream writer that waited for the lock commits a moment after
        ours. If our commit's pages are still in the WAL then (and the WAL
        holds 1,000 pages), its COMMIT copies them into the database and
        syncs both files itself (at 200k contacts such a writer's COMMIT
        took 53-199 ms at p99). Checkpointing at once means either the copy
        is done before it commits, or it is under way and the writer's own
        automatic checkpoint finds the checkpoint lock taken and returns at
        once."""
        if self._checkpoints is not None:
            self._checkpoints.kick()
        if self._wake is not None:
            self._wake.set()

    def checkpoint_wake(self) -> anyio.Event:
        """An event :meth:`checkpoint_soon` sets: the daemon's checkpoint
        task (:func:`service.daemon.checkpoints.keep_wal_short`) waits on
        it besides its tick, so that the daemon's large commits (staged
        chunks) are copied back before an upstream commit would copy them."""
        if self._wake is None or self._wake.is_set():
            self._wake = anyio.Event()
        return self._wake
