"""The SQLite store: one owned aiosqlite connection and every query mailplan runs.

It implements :class:`service.store.interface.Store`. Open it with
``async with open_store(path) as store``; ``init_db`` creates or upgrades a
database first. Writes happen inside ``async with store.transaction():``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from datetime import date
from pathlib import Path
from typing import Any

from service.planning.dates import parse_date
from service.store import schema
from service.store.balancing import BalanceMixin
from service.store.base import StoreBase, ids_param
from service.store.catchup import CatchUpMixin
from service.store.contacts_in import ContactsInMixin
from service.store.journal import Clock
from service.store.loaders import text
from service.store.types import DriftReport, ExportRow
from service.store.writer import WriterMixin


def _sort_key(row: ExportRow) -> tuple[int, str, date]:
    return (row.contact_id, row.email_type, row.event_date)


class _Days(dict[object, date | None]):
    """Date column text -> date, memoised (an export has few distinct dates)."""

    def __missing__(self, key: object) -> date | None:
        value = parse_date(text(key))
        if len(self) < 50_000:
            self[key] = value
        return value


_DAYS = _Days()


def _export_rows(rows: Iterable[tuple[Any, ...]]) -> list[ExportRow]:
    # Columns as in the export queries. Rows written by the original system
    # may carry placeholder event fields and no desired date until the first
    # recompute replaces them: those fall back to the scheduled date.
    new, days, none = tuple.__new__, _DAYS, date.min
    out = []
    for cid, etype, event, desired, sched, status, reason in rows:
        scheduled = days[sched] or none
        out.append(new(ExportRow, (
            cid, etype if isinstance(etype, str) else text(etype) or "",
            days[event] or scheduled, days[desired] or scheduled, scheduled,
            status, reason or "",
        )))  # fmt: skip
    return out


class SqliteStore(WriterMixin, BalanceMixin, CatchUpMixin, ContactsInMixin):
    """mailplan's access to one organisation's SQLite database."""

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        path: str | Path,
        *,
        create: bool = False,
        migrate: bool = False,
        readonly: bool = False,
        clock: Clock | None = None,
        added: list[str] | None = None,
    ) -> AsyncIterator[SqliteStore]:
        """Open ``path``; refuse a database whose schema is not current.

        ``create`` allows a new file; ``migrate`` upgrades the schema first
        (what ``init-db`` does; ``added`` receives the columns it added);
        ``readonly`` opens without write access; ``clock`` gives the times the
        plan journal writes. A schema that is not up to date raises
        :class:`~service.errors.SchemaError` (exit code 2).
        """
        path = Path(path)
        db = await StoreBase.connect(path, create=create, readonly=readonly)
        try:
            if migrate:
                await schema.migrate(db, path, added)
            await schema.check_schema(db, path)
            store = cls(db, path, await schema.carrier_column(db))
            store.journal_clock = clock
        except BaseException:
            await db.close()
            raise
        try:
            yield store
        finally:
            await store.close()

    # -- export (SPEC 10) --------------------------------------------------

    async def export_rows(self, contact_ids: Iterable[int] | None = None) -> list[ExportRow]:
        """Stored plan rows sorted by (contact_id, email_type, event date)."""
        if contact_ids is None:
            return [row async for row in self.iter_export_rows()]
        rows = await self.fetchall("export_rows_of@ids", {"ids": ids_param(contact_ids)})
        return _export_rows(rows)

    async def iter_export_rows(self, batch: int = 20_000) -> AsyncIterator[ExportRow]:
        """Like :meth:`export_rows`, streamed (a million-contact book)."""
        cursor = await self._db.execute(self.query("export_rows"))
        try:
            while rows := await cursor.fetchmany(batch):
                for row in _export_rows(rows):  # type: ignore[arg-type]
                    yield row
        finally:
            await cursor.close()

    async def compare_plan(self, expected: Sequence[ExportRow]) -> DriftReport:
        """The differences between the stored plan rows and ``expected`` (sorted
        as :meth:`export_rows` sorts). The stored rows are streamed and merged,
        never held in memory all at once."""
        report = DriftReport()
        i, n = 0, len(expected)
        async for stored in self.iter_export_rows():
            key = _sort_key(stored)
            while i < n and _sort_key(expected[i]) < key:
                report.note("missing", expected[i])
                i += 1
            if i < n and _sort_key(expected[i]) == key:
                if expected[i] != stored:
                    report.note("changed", stored, expected[i])
                i += 1
            else:
                report.note("extra", stored)
        for row in expected[i:]:
            report.note("missing", row)
        return report

    async def daily_load(self, start: date, end: date) -> list[tuple[date, str, int]]:
        """Planned (non-skipped) e-mails per scheduled day and type, ``start..end``."""
        rows = await self.fetchall(
            "daily_load", {"start": start.isoformat(), "end": end.isoformat()}
        )
        return [(date.fromisoformat(r[0][:10]), r[1], int(r[2])) for r in rows]

    # -- campaign targeting, for the event handlers (SPEC 8.3) ------------

    async def campaign_type_targets_all(self, name: str) -> bool | None:
        """The type's ``target_all_contacts`` flag; ``None`` if no such type."""
        row = await self.fetchone("campaign_type_targets_all", {"name": name})
        return None if row is None else bool(row[0])

    async def contacts_of_campaign_instance(self, instance_id: int) -> set[int]:
        """Contacts named by the instance's targeting rows or holding any
        ``email_schedules`` row of it."""
        rows = await self.fetchall("contacts_of_campaign_instance", {"id": instance_id})
        return {r[0] for r in rows if isinstance(r[0], int)}

    async def contacts_of_campaign_type(self, name: str) -> set[int]:
        """Contacts of every instance of the type, plus contacts with an
        ``email_schedules`` row whose type starts with ``campaign_<name>_``."""
        rows = await self.fetchall(
            "contacts_of_campaign_type", {"name": name, "prefix": f"campaign_{name}_"}
        )
        return {r[0] for r in rows if isinstance(r[0], int)}


async def init_db(path: str | Path, added: list[str] | None = None) -> int:
    """Create or upgrade the database at ``path`` (``mailplan init-db``); its schema version.

    ``added`` receives ``table.column`` of every column added to an upstream table.
    """
    async with SqliteStore.open(path, create=True, migrate=True, added=added):
        return schema.latest_version()
