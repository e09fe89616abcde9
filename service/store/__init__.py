"""Everything SQL: schema and migrations, named queries, the stores.

:mod:`service.store.interface` says what a store offers (typing Protocols);
:mod:`service.store.sqlite` implements it over aiosqlite, and is the only
place besides the schema and query modules of this package that knows the
driver. Open a database with ``async with open_store(path) as store``.
"""

from __future__ import annotations

from service.errors import StoreBusy
from service.store.interface import (
    BalanceStore,
    EventQueue,
    PlanReader,
    PlanSource,
    PlanWriter,
    RunLog,
    StateStore,
    Store,
    Transactions,
)
from service.store.loaders import Loaded
from service.store.sqlite import SqliteStore, init_db
from service.store.types import (
    BalanceDelta,
    ContactChunk,
    DriftReport,
    Event,
    EventsSummary,
    ExportRow,
    PlanBasis,
    RunRecord,
    RunStats,
    Scope,
    StoredRow,
    Update,
    WriteResult,
    WriteStats,
)
from service.store.writer import WriteOptions

open_store = SqliteStore.open
"""Open an organisation database (see :meth:`SqliteStore.open`)."""

__all__ = [
    "BalanceDelta",
    "BalanceStore",
    "ContactChunk",
    "DriftReport",
    "Event",
    "EventQueue",
    "EventsSummary",
    "ExportRow",
    "Loaded",
    "PlanBasis",
    "PlanReader",
    "PlanSource",
    "PlanWriter",
    "RunLog",
    "RunRecord",
    "RunStats",
    "Scope",
    "SqliteStore",
    "StateStore",
    "Store",
    "StoreBusy",
    "StoredRow",
    "Transactions",
    "Update",
    "WriteOptions",
    "WriteResult",
    "WriteStats",
    "init_db",
    "open_store",
]
