"""Shared database fixtures: a migrated SQLite file in tmp_path and a Store on it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from service.store import SqliteStore, init_db, open_store


@pytest.fixture
async def db_path(tmp_path: Path) -> Path:
    """A freshly initialised mailplan database (schema and triggers installed)."""
    path = tmp_path / "org.sqlite3"
    await init_db(path)
    return path


@pytest.fixture
async def store(db_path: Path) -> AsyncIterator[SqliteStore]:
    """An open Store on :func:`db_path`."""
    async with open_store(db_path) as opened:
        yield opened
