"""Contact writes from the inbox folder (SPEC 8.2): the store's side.

The inbox validates files against the table's own columns (``contact_columns``)
and hands over plain records; the SQL, its savepoints and the durable commit
live here, like every other statement mailplan runs.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import structlog

from service.errors import RecordRefused
from service.store.base import StoreBase, translate

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class ContactWrite:
    """One record of an inbox file: an upsert of ``values``, or a delete."""

    line: int
    contact_id: int
    values: Mapping[str, object] | None
    """The columns to write (names from ``contact_columns``); ``None``: delete."""


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def upsert_sql(columns: Sequence[str], pk: str) -> str:
    """``INSERT ... ON CONFLICT(pk) DO UPDATE`` for exactly these columns.

    The names come from ``PRAGMA table_info`` (the allow-list), never from a file.
    """
    names = ", ".join(_quote(c) for c in columns)
    marks = ", ".join("?" for _ in columns)
    updates = ", ".join(f"{_quote(c)} = excluded.{_quote(c)}" for c in columns if c != pk)
    action = f"DO UPDATE SET {updates}" if updates else "DO NOTHING"
    return f"INSERT INTO contacts ({names}) VALUES ({marks}) ON CONFLICT ({_quote(pk)}) {action}"


DELETE_SQL = "DELETE FROM contacts WHERE id = ?"


class ContactsInMixin(StoreBase):
    """Writes of contact records that arrive as inbox files."""

    async def contact_columns(self) -> list[tuple[Any, ...]]:
        """``PRAGMA table_info(contacts)`` rows (cid, name, type, notnull, dflt, pk)."""
        return await self._pragma_rows("PRAGMA table_info(contacts)")

    async def _pragma_rows(self, text: str) -> list[tuple[Any, ...]]:
        try:
            return await self._rows(text, ())
        except sqlite3.Error as exc:
            raise translate(exc, self.path, text) from exc

    @asynccontextmanager
    async def durable_transaction(self) -> AsyncIterator[None]:
        """A write transaction whose commit is on disk when it returns
        (``synchronous = FULL``), whatever the connection's usual level: a
        file may leave the inbox only after the record of it is durable."""
        await self.run_sql("PRAGMA synchronous = FULL", what="synchronous FULL")
        try:
            async with self.transaction():
                yield
        finally:
            await self.run_sql("PRAGMA synchronous = NORMAL", what="synchronous NORMAL")

    async def write_contacts(
        self, writes: Sequence[ContactWrite], pk: str
    ) -> tuple[int, int, list[tuple[int, str]]]:
        """Apply the records inside the open transaction; (upserts, deletes,
        (line, reason) of the records the database refused).

        The common case (nothing refused) runs as a few ``executemany`` calls;
        only if the database refuses something (a UNIQUE e-mail, a NOT NULL
        column of an older schema) is each record retried in its own
        savepoint, so exactly the refused records are rejected.
        """
        await self.run_sql("SAVEPOINT inbox_bulk", what="savepoint")
        deletes = [(w.contact_id,) for w in writes if w.values is None]
        try:
            if deletes:
                await self.run_many(DELETE_SQL, deletes, what="inbox delete")
            groups: dict[tuple[str, ...], list[tuple[object, ...]]] = {}
            for w in writes:
                if w.values is not None:
                    groups.setdefault(tuple(w.values), []).append(tuple(w.values.values()))
            for cols, rows in groups.items():
                await self.run_many(upsert_sql(cols, pk), rows, what="inbox upsert")
        except RecordRefused as exc:
            await self.run_sql("ROLLBACK TO inbox_bulk", what="savepoint rollback")
            await self.run_sql("RELEASE inbox_bulk", what="savepoint release")
            log.info("inbox_bulk_refused", reason=str(exc))
            return await self._write_one_by_one(writes, pk)
        await self.run_sql("RELEASE inbox_bulk", what="savepoint release")
        return len(writes) - len(deletes), len(deletes), []

    async def _write_one_by_one(
        self, writes: Sequence[ContactWrite], pk: str
    ) -> tuple[int, int, list[tuple[int, str]]]:
        upserted = deleted = 0
        refused: list[tuple[int, str]] = []
        for w in sorted(writes, key=lambda w: w.line):
            await self.run_sql("SAVEPOINT inbox_record", what="savepoint")
            try:
                if w.values is None:
                    await self.run_sql(DELETE_SQL, (w.contact_id,), what="inbox delete")
                    deleted += 1
                else:
                    sql_text = upsert_sql(tuple(w.values), pk)
                    await self.run_sql(sql_text, tuple(w.values.values()), what="inbox upsert")
                    upserted += 1
            except RecordRefused as exc:
                await self.run_sql("ROLLBACK TO inbox_record", what="savepoint rollback")
                refused.append((w.line, str(exc)))
            await self.run_sql("RELEASE inbox_record", what="savepoint release")
        return upserted, deleted, refused


__all__ = ["DELETE_SQL", "ContactWrite", "ContactsInMixin", "upsert_sql"]
