"""The daemon's heartbeat: a small JSON file next to the database that
``mailplan status`` reads to tell whether a daemon is running (SPEC 10).

A file, not a database row: it is written while the database is missing or
read-only (the daemon then says so in it), and it never takes the write
lock. Written every :data:`INTERVAL` seconds by rename (readers never see
half a file); a heartbeat older than :data:`STALE_AFTER` means no daemon.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path

import anyio
import structlog

log = structlog.get_logger(__name__)

INTERVAL = 30.0
STALE_AFTER = 3 * INTERVAL


def heartbeat_path(db: Path) -> Path:
    """Where the daemon of database ``db`` writes its heartbeat."""
    return db.with_name(db.name + ".heartbeat")


def write(path: Path, facts: Mapping[str, object]) -> str | None:
    """Write the heartbeat by rename; the error, if it could not be written."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(json.dumps(dict(facts), sort_keys=True, default=str), encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        return str(exc)
    return None


def read(path: Path) -> dict[str, object] | None:
    """The last heartbeat, or None when there is none (or it is unreadable)."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


async def beat(
    db: Path,
    now: Callable[[], datetime],
    facts: Callable[[], Mapping[str, object]],
    interval: float = INTERVAL,
) -> None:
    """Write the heartbeat every ``interval`` seconds until cancelled; then
    a last one that says the daemon stopped."""
    path = heartbeat_path(db)
    reported: str | None = None
    try:
        while True:
            error = write(path, {**facts(), "pid": os.getpid(), "at": now().isoformat(),
                                 "running": True})  # fmt: skip
            if error != reported:
                # Once per change, not every beat: a read-only folder is one problem.
                if error is None:
                    log.info("heartbeat_written_again", path=str(path))
                else:
                    log.warning("heartbeat_not_written", path=str(path), error=error)
                reported = error
            await anyio.sleep(interval)
    finally:
        write(path, {**facts(), "pid": os.getpid(), "at": now().isoformat(), "running": False})
