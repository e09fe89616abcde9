"""Everything SQL: schema and migrations, named queries, the aiosqlite store."""

from __future__ import annotations

from service.store.base import StoreBusy
from service.store.loaders import Loaded
from service.store.store import Store, init_db
from service.store.types import (
    ContactChunk,
    DriftReport,
    Event,
    EventsSummary,
    ExportRow,
    RunRecord,
    RunStats,
    Scope,
    WriteResult,
    WriteStats,
)
from service.store.writer import WriteOptions

__all__ = [
    "ContactChunk",
    "DriftReport",
    "Event",
    "EventsSummary",
    "ExportRow",
    "Loaded",
    "RunRecord",
    "RunStats",
    "Scope",
    "Store",
    "StoreBusy",
    "WriteOptions",
    "WriteResult",
    "WriteStats",
    "init_db",
]
