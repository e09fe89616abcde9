"""Bulk loading of an empty database in one transaction (``mailplan generate``).

The loader plays an upstream system's part: it writes contacts, campaigns,
targeting, sender history and engagement. Instead of the millions of
single-contact events the capture triggers would raise, it suspends them
inside its transaction and queues one ``recompute_all`` event: a daemon
started on the new database plans everything in chunks.

It uses the synchronous driver on purpose: the load is one long transaction
of ``executemany`` batches on one thread, and SQLite releases the GIL for
every row it steps, so an event loop or a second thread would only add
waits.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from functools import cache
from pathlib import Path

from service.errors import InputError, StoreError
from service.store.sql import parse_named, read_text

CAPTURED_TABLES = (
    "contacts",
    "email_schedules",
    "tracking_clicks",
    "contact_events",
    "campaign_types",
    "campaign_instances",
    "contact_campaigns",
)
"""The tables the loader fills whose triggers raise events (SPEC 8.1)."""

Row = Sequence[object]


@cache
def _queries() -> dict[str, str]:
    return parse_named(read_text("bulk.sql"))


def _quoted(identifier: str) -> str:
    # A trigger name read back from sqlite_master, never a value from data: DROP
    # TRIGGER takes no parameters, so the identifier is quoted as SQL quotes it.
    return '"' + identifier.replace('"', '""') + '"'


class BulkLoader:
    """One open load transaction; see :func:`bulk_load`."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def _run(self, name: str, params: Row | dict[str, object] = ()) -> sqlite3.Cursor:
        return self._conn.execute(_queries()[name], params)

    def _many(self, name: str, rows: Iterable[Row]) -> None:
        self._conn.executemany(_queries()[name], rows)

    def next_schedule_id(self) -> int:
        """The first free ``email_schedules`` id (history rows get explicit ids)."""
        return int(self._run("bulk_next_schedule_id").fetchone()[0])

    def contacts(self, rows: Iterable[Row]) -> None:
        """Insert contacts: (id, first_name, last_name, email, current_carrier,
        plan_type, effective_date, birth_date, tobacco_user, gender, state,
        zip_code, agent_id, phone_number, failed_underwriting, created_at,
        updated_at)."""
        self._many("bulk_insert_contact", rows)

    def history(self, rows: Iterable[Row]) -> None:
        """Insert sender history rows of ``email_schedules`` (see ``bulk.sql``)."""
        self._many("bulk_insert_history", rows)

    def clicks(self, rows: Iterable[Row]) -> None:
        """Insert ``tracking_clicks``: (contact_id, email_schedule_id, clicked_at)."""
        self._many("bulk_insert_click", rows)

    def contact_events(self, rows: Iterable[Row]) -> None:
        """Insert ``contact_events``: (contact_id, event_type, metadata, created_at)."""
        self._many("bulk_insert_contact_event", rows)

    def campaign_types(self, rows: Iterable[Row]) -> None:
        """Insert campaign types that do not exist yet."""
        self._many("bulk_insert_campaign_type", rows)

    def campaign_instance(self, row: Row) -> int:
        """Insert one campaign instance; its id."""
        rowid = self._run("bulk_insert_campaign_instance", row).lastrowid
        if rowid is None:
            raise StoreError("inserting a campaign instance returned no row id")
        return rowid

    def contact_campaigns(self, rows: Iterable[Row]) -> None:
        """Insert targeting rows: (contact_id, campaign_instance_id,
        trigger_date, status, metadata, created_at, updated_at)."""
        self._many("bulk_insert_contact_campaign", rows)

    def _suspend_triggers(self) -> list[str]:
        """Drop the capture triggers inside the open transaction; their SQL.

        The load holds the write lock from start to commit, so no upstream
        change can slip through unseen while they are gone; they are created
        again from their own stored text before the same commit, and a
        rollback brings them back as well.
        """
        found = self._run(
            "bulk_capture_triggers", {"tables": json.dumps(CAPTURED_TABLES)}
        ).fetchall()
        for name, _ in found:
            self._conn.execute(f"DROP TRIGGER {_quoted(str(name))}")
        return [str(sql) for _, sql in found]

    def _journal(self, name: str, mode: str) -> bool:
        """Switch the journal mode; False when another connection holds the database."""
        try:
            got = self._run(name).fetchone()
        except sqlite3.OperationalError:
            return False
        return bool(got) and str(got[0]).lower() == mode


@contextmanager
def bulk_load(db_path: Path) -> Iterator[BulkLoader]:
    """Fill the empty, migrated database at ``db_path`` in one transaction.

    Refuses a database that already holds contacts. The body's inserts are
    committed together with one queued ``recompute_all`` event, or rolled
    back together on any error. Driver errors are raised as
    :class:`~service.errors.StoreError`.
    """
    try:
        conn = sqlite3.connect(db_path, isolation_level=None)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open database {db_path}: {exc}; check the path") from exc
    loader = BulkLoader(conn)
    try:
        conn.execute("PRAGMA busy_timeout = 5000")
        conn.execute("PRAGMA cache_size = -262144")  # 256 MiB keeps the indexes in memory
        existing = int(loader._run("bulk_contact_count").fetchone()[0])
        if existing:
            raise InputError(
                f"{db_path} already holds {existing} contacts; generate writes contacts "
                "1..N into an empty database: use a new --db path"
            )
        # A rollback journal writes the new pages once; WAL would write them twice.
        switched = loader._journal("bulk_journal_truncate", "truncate")
        conn.execute("BEGIN IMMEDIATE")
        triggers = loader._suspend_triggers()
        yield loader
        for sql in triggers:
            conn.execute(sql)
        loader._run("bulk_recompute_all")
        conn.execute("COMMIT")
        if switched:
            loader._journal("bulk_journal_wal", "wal")
    except sqlite3.Error as exc:
        raise StoreError(
            f"database {db_path}: {exc}; nothing was written (the load is one transaction)"
        ) from exc
    finally:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        conn.close()
