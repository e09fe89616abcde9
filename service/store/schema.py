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

import aiosqlite
import structlog

from service.errors import StoreError
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


async def _apply(db: aiosqlite.Connection, migration: Migration) -> None:
    await db.execute("BEGIN IMMEDIATE")
    try:
        for add in migration.add_columns:
            columns = await table_columns(db, add.table)
            if columns and add.column not in columns:
                # Identifiers and definitions come from our own migration files.
                alter = f"ALTER TABLE {add.table} ADD COLUMN {add.column} {add.definition}"
                await db.execute(alter)
                log.info("column_added", table=add.table, column=add.column)
        for statement in migration.statements:
            await db.execute(statement)
        await db.execute(f"PRAGMA user_version = {migration.version:d}")
        await db.execute("COMMIT")
    except BaseException:
        await db.execute("ROLLBACK")
        raise


async def migrate(db: aiosqlite.Connection, path: object) -> int:
    """Bring the schema to the latest version; the version reached.

    Idempotent: running it on an up-to-date database changes nothing.
    """
    current = await user_version(db)
    target = latest_version()
    if current > target:
        raise StoreError(
            f"database {path} has schema version {current}, newer than this mailplan "
            f"knows ({target}); upgrade mailplan"
        )
    for migration in migrations()[current:]:
        try:
            await _apply(db, migration)
        except sqlite3.Error as exc:
            raise StoreError(
                f"migration {migration.name} failed on {path}: {exc}; the database is "
                f"left at schema version {migration.version - 1}"
            ) from exc
        log.info("migration_applied", version=migration.version, name=migration.name)
    await ensure_defaults(db)
    return target


async def ensure_defaults(db: aiosqlite.Connection) -> None:
    """What ``init-db`` guarantees on every run: the ``aep`` campaign type (SPEC 3)."""
    await db.execute(queries(None)["ensure_aep"])
