"""Reading a chunk's rows on a connection of its own (SPEC 12).

A full recompute's planning processes read the chunks they plan themselves,
each on its own read-only connection: the rows never travel between
processes, and reading runs on both cores. :func:`read_range` reads exactly
what :meth:`~service.store.loaders.LoaderMixin.read_chunk` reads for an id
range, with the same named queries, in one read transaction (a WAL reader
takes no lock an upstream writer waits for).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import date
from typing import Any

from service.store.base import BUSY_TIMEOUT_MS, CATCHUP_THROUGH
from service.store.loaders import _related_queries
from service.store.rows import _TRUE, ChunkRows, RelatedRows
from service.store.sql import queries
from service.store.types import Scope


@dataclass(frozen=True, slots=True)
class ChunkSource:
    """Where a planning process reads chunks: the database file and its
    carrier column (which names the queries' ``{carrier}`` slot)."""

    path: str
    carrier: str | None


class RangeReader:
    """A read-only connection to a :class:`ChunkSource` that reads chunks."""

    def __init__(self, source: ChunkSource) -> None:
        self._q = queries(source.carrier)
        # Autocommit: each read is its own explicit transaction, so no read
        # snapshot stays open between chunks (it would hold back checkpoints).
        conn = sqlite3.connect(source.path, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS:d}")
        conn.execute("PRAGMA query_only = ON")
        conn.execute("PRAGMA cache_size = -32768")
        self._conn = conn

    def close(self) -> None:
        self._conn.close()

    def read_range(
        self, scope: Scope, since: date | None, engagement_since: date | None
    ) -> ChunkRows:
        """The rows of the contacts of the id range ``scope`` and everything
        a plan of them reads, with the event sequence, in one snapshot.
        Raises :class:`sqlite3.Error` as SQLite does (text that is not UTF-8
        included): the caller reads the chunk the store's way then."""
        if scope.ids is not None:
            raise ValueError("read_range takes an id range")
        conn, q = self._conn, self._q
        span = {"lo": scope.lo, "hi": scope.hi}
        conn.execute("BEGIN DEFERRED")
        try:
            rows = _rows(conn, q["contacts_between"], {**span, "true_words": _TRUE})
            seq_rows = _rows(conn, q["event_seq"], ())
            related = [
                _rows(conn, q[name], params)
                for name, params in _related_queries(
                    scope, since, engagement_since or since, plan_rows=False
                )
            ]
            prints = _rows(conn, q["plan_prints"], span)
            untidy = bool(_rows(conn, q["orphan_plan_contacts"], span))
            moved = _rows(conn, q["get_state"], (CATCHUP_THROUGH,))
        finally:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        schedules, targeting, clicks, events = related
        raw = RelatedRows(schedules=schedules, targeting=targeting, clicks=clicks, events=events)
        seq = int(seq_rows[0][0]) if seq_rows else 0
        through = str(moved[0][0]) if moved else None
        return ChunkRows(scope, rows, raw, {r[0]: r[1] for r in prints}, seq, untidy, through)


def _rows(conn: sqlite3.Connection, sql_text: str, params: Any) -> list[tuple[Any, ...]]:
    cursor = conn.execute(sql_text, params)
    try:
        return cursor.fetchall()
    finally:
        cursor.close()
