"""Applying the numbered migrations (SPEC 3).

``PRAGMA user_version`` holds the number of the last migration applied; a
database made by the original system reads 0 and is upgraded in place. Each
migration runs in its own transaction together with the version bump, so a
failure leaves the database at the previous version. Every statement is
written to be re-runnable, which also makes migrating a half-upgraded
database of unknown history safe.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence

import aiosqlite
import structlog

from service.errors import SchemaError, StoreError
from service.store.sql import CARRIER_COLUMNS, Migration, migrations, queries

log = structlog.get_logger(__name__)


def latest_version() -> int:
    return len(migrations())


async def user_version(db: aiosqlite.Connection) -> int:
    rows = await db.execute_fetchall("PRAGMA user_version")
    return int(next(iter(rows))[0])


async def table_columns(db: aiosqlite.Connection, table: str) -> list[str]:
    """Column names of ``table`` (empty when it does not exist)."""
    rows = await db.execute_fetchall("SELECT name FROM pragma_table_info(?)", (table,))
    return [str(r[0]) for r in rows]


async def carrier_column(db: aiosqlite.Connection) -> str | None:
    """The column holding the contact's carrier in this database (SPEC 3)."""
    columns = set(await table_columns(db, "contacts"))
    for name in CARRIER_COLUMNS:
        if name in columns:
            return name
    return None


def read_columns() -> tuple[tuple[str, str, str], ...]:
    """(table, column, definition) of every column mailplan reads from an
    upstream table (the ``@add-column`` lines of all migrations; SPEC 3)."""
    seen: dict[tuple[str, str], str] = {}
    for migration in migrations():
        for add in migration.add_columns:
            seen.setdefault((add.table, add.column), add.definition)
    return tuple((t, c, d) for (t, c), d in seen.items())


async def _add_missing(
    db: aiosqlite.Connection, wanted: Iterable[tuple[str, str, str]]
) -> list[str]:
    """Add the columns of ``wanted`` that an existing table lacks; ``table.column`` of each."""
    added: list[str] = []
    columns: dict[str, set[str]] = {}
    for table, column, definition in wanted:
        if table not in columns:
            columns[table] = set(await table_columns(db, table))
        if columns[table] and column not in columns[table]:
            # Identifiers and definitions come from our own migration files.
            alter = f"ALTER TABLE {table} ADD COLUMN {column} {definition}"
            await db.execute(alter)
            columns[table].add(column)
            added.append(f"{table}.{column}")
            log.info("column_added", table=table, column=column)
    return added


async def missing_columns(db: aiosqlite.Connection) -> list[str]:
    """``table.column`` of every column mailplan reads that an existing table lacks."""
    missing: list[str] = []
    columns: dict[str, set[str]] = {}
    for table, column, _ in read_columns():
        if table not in columns:
            columns[table] = set(await table_columns(db, table))
        if columns[table] and column not in columns[table]:
            missing.append(f"{table}.{column}")
    return missing


async def _apply(db: aiosqlite.Connection, pending: Sequence[Migration], added: list[str]) -> None:
    """Every pending migration in one transaction: other connections (a
    daemon waiting for the database) see the old version or the latest,
    never one in between."""
    await db.execute("BEGIN IMMEDIATE")
    try:
        for migration in pending:
            wanted = ((a.table, a.column, a.definition) for a in migration.add_columns)
            added.extend(await _add_missing(db, wanted))
            for statement in migration.statements:
                await db.execute(statement)
            await db.execute(f"PRAGMA user_version = {migration.version:d}")
        await db.execute("COMMIT")
    except BaseException:
        await db.execute("ROLLBACK")
        raise


async def migrate(db: aiosqlite.Connection, path: object, added: list[str] | None = None) -> int:
    """Bring the schema to the latest version; the version reached.

    Idempotent: running it on an up-to-date database changes nothing. Every
    run also adds any column mailplan reads that an upstream table lacks
    (a table recreated by upstream, say); ``added`` receives ``table.column``
    of each column added.
    """
    added = [] if added is None else added
    current = await user_version(db)
    target = latest_version()
    _refuse_newer(current, target, path, StoreError)
    pending = migrations()[current:]
    if pending:
        try:
            await _apply(db, pending, added)
        except sqlite3.Error as exc:
            raise StoreError(
                f"migrating {path} to schema version {target} failed: {exc}; the database "
                f"is left at schema version {current}"
            ) from exc
        for migration in pending:
            log.info("migration_applied", version=migration.version, name=migration.name)
    try:
        await db.execute("BEGIN IMMEDIATE")
        try:
            added.extend(await _add_missing(db, read_columns()))
            await db.execute("COMMIT")
        except BaseException:
            await db.execute("ROLLBACK")
            raise
    except sqlite3.Error as exc:
        raise StoreError(f"cannot add the columns mailplan reads to {path}: {exc}") from exc
    await ensure_defaults(db)
    return target


def _refuse_newer(version: int, target: int, path: object, error: type[StoreError]) -> None:
    if version > target:
        raise error(
            f"database {path} has schema version {version}, newer than this mailplan "
            f"knows ({target}); upgrade mailplan"
        )


async def check_schema(db: aiosqlite.Connection, path: object) -> None:
    """Refuse a database that ``init-db`` has not brought up to date (SPEC 3):
    an older schema version, or an upstream table lacking a column mailplan
    reads. :class:`SchemaError` (exit code 2) says to run ``mailplan init-db``."""
    version = await user_version(db)
    target = latest_version()
    _refuse_newer(version, target, path, SchemaError)
    if version != target:
        raise SchemaError(
            f"database {path} has schema version {version}, this mailplan needs {target}; "
            f"run `mailplan init-db --db {path}` to upgrade it"
        )
    missing = await missing_columns(db)
    if missing:
        raise SchemaError(
            f"database {path} lacks columns mailplan reads ({', '.join(missing)}); "
            f"run `mailplan init-db --db {path}` to add them"
        )


async def ensure_defaults(db: aiosqlite.Connection) -> None:
    """What ``init-db`` guarantees on every run: the ``aep`` campaign type (SPEC 3)."""
    await db.execute(queries(None)["ensure_aep"])
