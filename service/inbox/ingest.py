"""Spool-folder ingestion of contact files (SPEC 8.2).

Upstream writes a file under a temporary name (a dotfile, ``*.tmp``,
``*.part``) and renames it into the inbox folder. Each finished ``*.ndjson`` or
``*.csv`` file is validated (``service.inbox.records``), its valid records are
applied to ``contacts`` in one transaction (the capture triggers turn them into
events like any upstream write), its invalid records are listed in
``rejected/<file>.ndjson`` with line number and reason, and the file moves to
``done/``.

No record is lost or applied twice across a crash:

1. the rejection list is written to a temporary file and synced;
2. in the transaction that writes the contacts, the file's name and SHA-256 are
   recorded in ``scheduler_state`` (committed with ``synchronous=FULL``, so the
   record is on disk before the file moves);
3. the rejection list is renamed into place, the file moves to ``done/``, and
   the record is dropped.

After a crash, a file whose name and digest are recorded is not applied again;
only steps 3 are finished. A crash before the commit applied nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite
import anyio
import anyio.to_thread
import structlog

from service.inbox.records import (
    ContactColumns,
    Delete,
    InboxLimits,
    Operation,
    Parsed,
    Rejection,
    Upsert,
    parse_bytes,
    pending_files,
    sha256_of,
    too_large,
)
from service.store import SqliteStore

log = structlog.get_logger(__name__)

APPLIED_KEY = "inbox_applied"
"""scheduler_state key: JSON object, file name -> SHA-256, of files applied but not yet moved."""


@dataclass(frozen=True, slots=True)
class FileOutcome:
    """What happened to one inbox file."""

    name: str
    applied: int
    deleted: int
    rejected: int
    already_applied: bool = False


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


def _unique(path: Path) -> Path:
    """``path``, or ``stem.N.suffix`` for the first N that is free."""
    if not path.exists():
        return path
    n = 1
    while True:
        candidate = path.with_name(f"{path.stem}.{n}{path.suffix}")
        if not candidate.exists():
            return candidate
        n += 1


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_rejections(path: Path, name: str, rejected: Sequence[Rejection]) -> None:
    with path.open("w", encoding="utf-8") as fh:
        for rejection in rejected:
            fh.write(rejection.as_json(name) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


class Inbox:
    """One inbox folder feeding one store.

    The caller serialises calls with its other database work: the store has a
    single connection and one transaction at a time.
    """

    def __init__(
        self, directory: Path, store: SqliteStore, limits: InboxLimits | None = None
    ) -> None:
        self.directory = directory
        self.done = directory / "done"
        self.rejected = directory / "rejected"
        self.store = store
        self.limits = limits or InboxLimits()

    # The inbox needs SQL that only it can build (columns from the table
    # itself) and savepoints, so it talks to the store's connection directly.
    @property
    def _db(self) -> aiosqlite.Connection:
        return self.store._db

    def prepare(self) -> None:
        """Create the folder and its ``done/`` and ``rejected/`` subfolders."""
        for folder in (self.directory, self.done, self.rejected):
            folder.mkdir(parents=True, exist_ok=True)

    async def _columns(self) -> ContactColumns:
        rows = await self._db.execute_fetchall("PRAGMA table_info(contacts)")
        return ContactColumns.from_table_info([tuple(r) for r in rows])

    async def _applied(self) -> dict[str, str]:
        raw = await self.store.get_state(APPLIED_KEY)
        if not raw:
            return {}
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            log.warning("inbox_state_unreadable", key=APPLIED_KEY)
            return {}
        return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}

    async def _set_applied(self, applied: dict[str, str]) -> None:
        if applied:
            await self.store.set_state(APPLIED_KEY, json.dumps(applied, sort_keys=True))
        else:
            await self.store.delete_state(APPLIED_KEY)

    def _pending_rejections(self, name: str) -> Path:
        return self.rejected / f".{name}.ndjson.tmp"

    async def recover(self) -> None:
        """Finish files that were applied before a crash; forget stale records."""
        applied = await self._applied()
        for name, digest in sorted(applied.items()):
            path = self.directory / name
            if path.is_file() and await anyio.to_thread.run_sync(sha256_of, path) == digest:
                log.info("inbox_file_recovered", file=name)
                await self._finish(name)
            else:
                await self._forget(name)

    async def process_pending(self) -> list[FileOutcome]:
        """Ingest every finished file in the folder, in name order."""
        outcomes: list[FileOutcome] = []
        for path in await anyio.to_thread.run_sync(pending_files, self.directory):
            outcome = await self.ingest(path)
            if outcome is not None:
                outcomes.append(outcome)
        return outcomes

    async def ingest(self, path: Path) -> FileOutcome | None:
        """Apply one file; ``None`` if it vanished before it could be read."""
        name = path.name
        loaded = await anyio.to_thread.run_sync(self._read, path)
        if loaded is None:
            return None
        digest, data, size = loaded
        if (await self._applied()).get(name) == digest:
            await self._finish(name)
            return FileOutcome(name, 0, 0, 0, already_applied=True)
        columns = await self._columns()
        parsed = (
            too_large(size, self.limits)
            if data is None
            else await anyio.to_thread.run_sync(parse_bytes, name, data, columns, self.limits)
        )
        outcome = await self._apply_file(name, digest, parsed, columns)
        await self._finish(name)
        log.info(
            "inbox_file_applied",
            file=name,
            upserted=outcome.applied,
            deleted=outcome.deleted,
            rejected=outcome.rejected,
        )
        return outcome

    def _read(self, path: Path) -> tuple[str, bytes | None, int] | None:
        try:
            size = path.stat().st_size
            if size > self.limits.max_file_bytes:
                return sha256_of(path), None, size
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        return hashlib.sha256(data).hexdigest(), data, len(data)

    async def _apply_file(
        self, name: str, digest: str, parsed: Parsed, columns: ContactColumns
    ) -> FileOutcome:
        tmp = self._pending_rejections(name)
        # The record of this file must be on disk before the file leaves the
        # inbox, whatever the connection's usual synchronous level.
        await self._db.execute("PRAGMA synchronous = FULL")
        try:
            async with self.store.transaction():
                if (await self._applied()).get(name) == digest:
                    return FileOutcome(name, 0, 0, 0, already_applied=True)
                upserted, deleted, refused = await self._apply(parsed.operations, columns)
                rejected = sorted([*parsed.rejected, *refused], key=lambda r: r.line)
                if rejected:
                    await anyio.to_thread.run_sync(_write_rejections, tmp, name, rejected)
                else:
                    tmp.unlink(missing_ok=True)
                applied = await self._applied()
                applied[name] = digest
                await self._set_applied(applied)
        finally:
            with anyio.CancelScope(shield=True):
                await self._db.execute("PRAGMA synchronous = NORMAL")
        return FileOutcome(name, upserted, deleted, len(rejected))

    async def _apply(
        self, operations: Sequence[Operation], columns: ContactColumns
    ) -> tuple[int, int, list[Rejection]]:
        """Write the operations; (upserts, deletes, records the database refused).

        The common case (nothing refused) runs as a few ``executemany`` calls;
        only if the database refuses something (a UNIQUE e-mail, a NOT NULL
        column of an older schema) is each record retried in its own
        savepoint, so exactly the refused records are rejected.
        """
        pk = next((c.name for c in columns.columns if c.pk), "id")
        db = self._db
        await db.execute("SAVEPOINT inbox_bulk")
        try:
            deletes = [(op.contact_id,) for op in operations if isinstance(op, Delete)]
            if deletes:
                await db.executemany(DELETE_SQL, deletes)
            groups: dict[tuple[str, ...], list[tuple[Any, ...]]] = {}
            for op in operations:
                if isinstance(op, Upsert):
                    groups.setdefault(tuple(op.values), []).append(tuple(op.values.values()))
            for cols, rows in groups.items():
                await db.executemany(upsert_sql(cols, pk), rows)
        except (sqlite3.IntegrityError, sqlite3.DataError) as exc:
            await db.execute("ROLLBACK TO inbox_bulk")
            await db.execute("RELEASE inbox_bulk")
            log.info("inbox_bulk_refused", reason=str(exc))
            return await self._apply_one_by_one(operations, pk)
        await db.execute("RELEASE inbox_bulk")
        return len(operations) - len(deletes), len(deletes), []

    async def _apply_one_by_one(
        self, operations: Sequence[Operation], pk: str
    ) -> tuple[int, int, list[Rejection]]:
        db = self._db
        upserted = deleted = 0
        refused: list[Rejection] = []
        for op in sorted(operations, key=lambda o: o.line):
            await db.execute("SAVEPOINT inbox_record")
            try:
                if isinstance(op, Delete):
                    await db.execute(DELETE_SQL, (op.contact_id,))
                    deleted += 1
                else:
                    await db.execute(upsert_sql(tuple(op.values), pk), tuple(op.values.values()))
                    upserted += 1
            except (sqlite3.IntegrityError, sqlite3.DataError) as exc:
                await db.execute("ROLLBACK TO inbox_record")
                refused.append(Rejection(op.line, f"the database refused the record: {exc}"))
            await db.execute("RELEASE inbox_record")
        return upserted, deleted, refused

    async def _finish(self, name: str) -> None:
        """Steps 3: rejection list into place, file to ``done/``, record dropped."""

        def move() -> None:
            tmp = self._pending_rejections(name)
            if tmp.exists():
                os.replace(tmp, _unique(self.rejected / f"{name}.ndjson"))
                _fsync_dir(self.rejected)
            source = self.directory / name
            if source.exists():
                os.replace(source, _unique(self.done / name))
                _fsync_dir(self.done)
                _fsync_dir(self.directory)

        await anyio.to_thread.run_sync(move)
        await self._forget(name)

    async def _forget(self, name: str) -> None:
        async with self.store.transaction():
            applied = await self._applied()
            if applied.pop(name, None) is not None:
                await self._set_applied(applied)


def is_inbox_change(directory: Path, path: str) -> bool:
    """watchfiles filter: a change directly inside the inbox (not done/, rejected/)."""
    return Path(path).parent == directory


__all__ = ["APPLIED_KEY", "FileOutcome", "Inbox", "InboxLimits", "is_inbox_change", "upsert_sql"]
