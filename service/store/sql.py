"""The SQL text of the store: named queries and numbered migrations.

Everything SQL lives in ``queries.sql`` and ``migrations/NNNN_*.sql`` next to
this module; Python code refers to queries by name.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from functools import cache
from importlib import resources

_NAME = re.compile(r"^--\s*name:\s*(\S+)\s*$")
_ADD_COLUMN = re.compile(r"^--\s*@add-column\s+(\w+)\s+(\w+)\s+(.+?)\s*$")
_MIGRATION_FILE = re.compile(r"^(\d{4})_\w+\.sql$")

CARRIER_COLUMNS = ("current_carrier", "carrier")
"""Where a database keeps the carrier, in order of preference (SPEC 3)."""

SCHEDULE_COLUMNS = (
    "id", "contact_id", "email_type", "status", "event_year", "event_month", "event_day",
    "scheduled_send_date", "scheduled_send_time", "skip_reason", "priority",
    "email_template", "campaign_instance_id", "catchup_note", "desired_date",
    "balance_date", "allowed_from", "allowed_to", "send_timezone",
    "actual_send_datetime", "sent_at",
)  # fmt: skip
"""The ``email_schedules`` columns the loaders read, in this order (the
``{schedule_columns}`` slot of the queries); loaders index rows by
:func:`column`."""


EVENT_DATE = "printf('%04d-%02d-%02d', event_year, event_month, event_day)"
"""A plan row's event date as ISO text, from its three identity columns."""

BALANCE_COLUMNS = (
    "contact_id", "email_type", EVENT_DATE, "COALESCE(priority, 10)", "desired_date",
    "allowed_from", "allowed_to", "balance_date", "scheduled_send_date",
)  # fmt: skip
"""What the balancer reads of a row (the ``{balance_columns}`` slot), in this order."""

EXPORT_COLUMNS = (
    "contact_id", "email_type", EVENT_DATE, "desired_date", "scheduled_send_date", "status",
    "skip_reason",
)  # fmt: skip
"""What the export reads of a row (the ``{export_columns}`` slot), in this order."""

_COLUMN_SLOTS = {
    "{schedule_columns}": ", ".join(SCHEDULE_COLUMNS),
    "{balance_columns}": ", ".join(BALANCE_COLUMNS),
    "{export_columns}": ", ".join(EXPORT_COLUMNS),
}


def column(name: str) -> int:
    """The position of ``name`` in :data:`SCHEDULE_COLUMNS`."""
    return SCHEDULE_COLUMNS.index(name)


_SCOPES = {
    "range": "contact_id BETWEEN :lo AND :hi",
    "ids": "contact_id IN (SELECT value FROM json_each(:ids))",
}


def read_text(name: str) -> str:
    """A SQL file shipped next to this module."""
    return resources.files("service.store").joinpath(name).read_text(encoding="utf-8")


def parse_named(text: str) -> dict[str, str]:
    """Split a file of ``-- name: X`` blocks into ``{X: sql}``."""
    queries: dict[str, str] = {}
    current: str | None = None
    lines: list[str] = []
    for line in text.splitlines():
        match = _NAME.match(line)
        if match:
            if current is not None:
                queries[current] = "\n".join(lines).strip()
            current, lines = match.group(1), []
        elif current is not None:
            lines.append(line)
    if current is not None:
        queries[current] = "\n".join(lines).strip()
    return queries


@cache
def _raw_queries() -> dict[str, str]:
    # queries.sql: planning and balancing; reports.sql: the journal and reports.
    return {**parse_named(read_text("queries.sql")), **parse_named(read_text("reports.sql"))}


@cache
def queries(carrier: str | None) -> dict[str, str]:
    """The named queries for a database whose carrier column is ``carrier``.

    Queries with a ``{scope}`` slot appear as ``NAME@range`` and ``NAME@ids``.
    """
    if carrier is not None and carrier not in CARRIER_COLUMNS:
        raise ValueError(f"unknown carrier column {carrier!r}")
    result: dict[str, str] = {}
    for name, sql in _raw_queries().items():
        text = sql.replace("{carrier}", carrier or "NULL")
        for slot, columns in _COLUMN_SLOTS.items():
            text = text.replace(slot, columns)
        if "{scope}" in text:
            for scope, clause in _SCOPES.items():
                result[f"{name}@{scope}"] = text.replace("{scope}", clause)
        else:
            result[name] = text
    return result


@dataclass(frozen=True, slots=True)
class AddColumn:
    table: str
    column: str
    definition: str


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    add_columns: tuple[AddColumn, ...]
    statements: tuple[str, ...]


def split_statements(text: str) -> list[str]:
    """Split a script into complete statements (trigger bodies stay whole)."""
    statements: list[str] = []
    buffer: list[str] = []
    for line in text.splitlines():
        if not buffer and (not line.strip() or line.lstrip().startswith("--")):
            continue
        buffer.append(line)
        candidate = "\n".join(buffer)
        if sqlite3.complete_statement(candidate):
            statements.append(candidate.strip())
            buffer = []
    if buffer and "\n".join(buffer).strip():
        raise ValueError(f"incomplete SQL statement at the end: {buffer[0]!r}")
    return statements


@cache
def migrations() -> tuple[Migration, ...]:
    """Every migration shipped with the package, in version order."""
    folder = resources.files("service.store").joinpath("migrations")
    found: list[Migration] = []
    for entry in folder.iterdir():
        match = _MIGRATION_FILE.match(entry.name)
        if not match:
            continue
        text = entry.read_text(encoding="utf-8")
        adds = tuple(
            AddColumn(m.group(1), m.group(2), m.group(3))
            for m in map(_ADD_COLUMN.match, text.splitlines())
            if m
        )
        statements = tuple(split_statements(text))
        found.append(Migration(int(match.group(1)), entry.name, adds, statements))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise ValueError(f"migration versions must be 1..n without gaps, got {versions}")
    return tuple(found)
