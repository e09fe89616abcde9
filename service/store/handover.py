"""The store's hand-overs to its connection's thread, and what saves them.

aiosqlite runs every call on the connection's own thread: each call is a
thread switch there and back, which on a busy machine costs far more than
the short statements of a small batch. :class:`HandOver` is the part of
:class:`~service.store.base.StoreBase` that decides how a statement gets to
the connection:

- :meth:`HandOver.in_connection` runs a function with the ``sqlite3``
  connection in one hand-over (a statement with its fetch and close, or
  several statements);
- :meth:`HandOver.statements_inline` runs them on the calling thread;
- :meth:`HandOver.execute_later` queues a write nobody waits for until the
  next statement;
- :meth:`HandOver.cached_state` answers scheduler_state reads inside a
  write transaction from the copy read with its BEGIN.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any, TypeVar

import aiosqlite

from service.errors import StoreError

Params = Sequence[Any] | Mapping[str, Any]
T = TypeVar("T")

SMALL_QUERIES = frozenset({"get_state", "fetch_events", "event_seq", "max_event_id"})
"""Point reads by primary key (or the first rows of an index) that the daemon
makes around every batch; see :meth:`StoreBase.run_small_statements_inline`."""


def _all_rows(conn: sqlite3.Connection, sql_text: str, params: Params) -> list[tuple[Any, ...]]:
    # The cursor is closed on every path: a failed fetch that left its
    # statement open would hold a read snapshot for good (no commit of
    # another connection would ever be seen, WAL checkpoints would stop).
    cursor = conn.execute(sql_text, params)
    try:
        return cursor.fetchall()
    finally:
        cursor.close()


def _all_rows_of(
    conn: sqlite3.Connection, statements: Sequence[tuple[str, Params]]
) -> list[list[tuple[Any, ...]]]:
    return [_all_rows(conn, sql_text, params) for sql_text, params in statements]


def _begin_reading(
    conn: sqlite3.Connection, statement: str, sql_text: str
) -> list[tuple[Any, ...]] | None:
    """``statement`` (BEGIN), then the rows of ``sql_text``; None if only
    the read failed (the transaction is open all the same)."""
    _row_count(conn, statement, ())
    try:
        return _all_rows(conn, sql_text, ())
    except sqlite3.Error:
        return None


def _after(deferred: Sequence[tuple[str, Any, bool]], fn: Callable[..., T]) -> Callable[..., T]:
    """``fn`` preceded, in the same call, by the deferred statements."""

    def call(conn: sqlite3.Connection, *args: Any) -> T:
        for sql_text, params, many in deferred:
            if many:
                conn.executemany(sql_text, params).close()
            else:
                conn.execute(sql_text, params).close()
        return fn(conn, *args)

    return call


def _row_count(conn: sqlite3.Connection, sql_text: str, params: Params) -> int:
    cursor = conn.execute(sql_text, params)
    try:
        return cursor.rowcount
    finally:
        cursor.close()


def _row_count_many(conn: sqlite3.Connection, sql_text: str, rows: Iterable[Params]) -> int:
    cursor = conn.executemany(sql_text, rows)
    try:
        return max(cursor.rowcount, 0)
    finally:
        cursor.close()


def _last_row_id(conn: sqlite3.Connection, sql_text: str, params: Params) -> int | None:
    cursor = conn.execute(sql_text, params)
    try:
        return cursor.lastrowid
    finally:
        cursor.close()


class HandOver:
    """How statements reach the connection (see the module)."""

    _tx: str | None
    _q: dict[str, str]
    _short_waits: bool

    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db
        self._state: dict[str, str] | None = None
        """scheduler_state as read when the current write transaction took
        the lock, kept up to date by this store's own writes of it; None
        outside a write transaction (see :meth:`cached_state`)."""
        self._deferred: list[tuple[str, Any, bool]] = []
        """Writes queued by :meth:`execute_later` for the next hand-over."""
        self._inline = False
        self._inline_small = False
        """The daemon's store: :data:`SMALL_QUERIES`, BEGIN and data_version
        run inline always (:meth:`run_small_statements_inline`)."""
        self._inline_tx = False
        """A statement of the current write transaction ran inline."""
        self._inline_marks = True
        self._threaded = 0
        """Hand-overs to the connection's thread in flight."""

    async def in_connection(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(connection, *args)`` on the connection's own thread with the
        underlying ``sqlite3`` connection, in one hand-over to that thread.

        Each hand-over costs a thread switch each way (a few hundred
        microseconds on a busy machine), which is most of what a short
        statement costs: a statement with its fetch and close, or several
        statements of one phase, go over in one call. ``fn`` runs while the
        event loop goes on; it must not touch anything but the connection.
        """
        db = self._db
        if self._deferred:
            # Statements queued by execute_later go first, in order, in the
            # same hand-over.
            fn, self._deferred = _after(self._deferred, fn), []
        if self._inline and not self._threaded:
            # See statements_inline: no thread switch at all.
            if self._tx == "write" and self._inline_marks:
                self._inline_tx = True
            return fn(db._conn, *args)
        call: Callable[[], T] = lambda: fn(db._conn, *args)  # noqa: E731
        self._threaded += 1
        try:
            result: T = await db._execute(call)  # type: ignore[no-untyped-call]
        finally:
            self._threaded -= 1
        return result

    def run_small_statements_inline(self) -> None:
        """From now on BEGIN, ``PRAGMA data_version`` and the point reads of
        :data:`SMALL_QUERIES` run inline (:meth:`statements_inline`): the
        daemon makes them around every batch, each a thread switch each way
        otherwise. Only for a store one task uses at a time."""
        self._inline_small = True

    def _small(self, small: bool) -> AbstractContextManager[None]:
        if small and self._inline_small and not self._inline:
            return self._inline_only()
        return nullcontext()

    @contextmanager
    def _inline_only(self) -> Iterator[None]:
        # Inline, without making the transaction's COMMIT inline (a small
        # read in a large transaction).
        self._inline, self._inline_marks = True, False
        try:
            yield
        finally:
            self._inline, self._inline_marks = False, True

    @contextmanager
    def statements_inline(self, on: bool = True) -> Iterator[None]:
        """Inside: statements run on the calling (event loop) thread itself,
        without the hand-over to the connection's thread (``on=False``:
        with it again, for a part that should not hold the loop).

        For the daemon's small batches: a hand-over costs two thread
        wake-ups, and on a busy machine each can wait for a core for
        milliseconds to tens of milliseconds, while the statements of a
        one-change batch take tens of microseconds each. The loop is held
        for as long as a statement runs, so this is for short statements
        only (a batch of a few contacts and its incremental rebalance);
        the COMMIT of a transaction whose statements ran inline runs inline
        too. A statement already handed over to the thread (another task's)
        makes the next ones go over as well, so the connection is never used
        by both threads at once.
        """
        before, self._inline = self._inline, on
        try:
            yield
        finally:
            self._inline = before

    def execute_later(self, name: str, params: Params = (), *, many: bool = False) -> None:
        """Queue a named write whose result nobody needs (inside a write
        transaction): it runs in order before the next statement of this
        store, in that statement's hand-over to the connection's thread, at
        the latest with the COMMIT. An error it raises is raised by that next
        statement and rolls the transaction back as any error does; a
        rollback drops what is still queued. ``many``: ``params`` is a list
        of parameter sets (``executemany``)."""
        if self._tx != "write":
            raise StoreError(f"statement {name} deferred outside a write transaction")
        self._deferred.append((self._q[name], list(params) if many else params, many))

    def cached_state(self, key: str) -> tuple[bool, str | None]:
        """(known, value) of a scheduler_state key as of this write
        transaction: within one, nobody else can change the table and this
        store's own writes of it go through :meth:`remember_state`, so the
        copy read with ``BEGIN IMMEDIATE`` saves a statement per read."""
        state = self._state
        if state is None or key == "plan_version":
            # plan_version is counted in SQL (bump_plan_version), never cached.
            return False, None
        return True, state.get(key)

    def remember_state(self, key: str, value: str | None) -> None:
        """This store wrote ``key`` (``None``: deleted it)."""
        if self._state is not None:
            if value is None:
                self._state.pop(key, None)
            else:
                self._state[key] = value

    async def _begin_once(self, statement: str, read_state: bool) -> list[tuple[Any, ...]] | None:
        # With busy_timeout 0 (the daemon) BEGIN returns at once, locked or not.
        with self._small(self._short_waits):
            return await self._begin_now(statement, read_state)

    async def _begin_now(self, statement: str, read_state: bool) -> list[tuple[Any, ...]] | None:
        if read_state:
            return await self.in_connection(_begin_reading, statement, self._q["single_all_state"])
        await self.in_connection(_row_count, statement, ())
        return None
