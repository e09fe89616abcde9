"""The daemon's wake-up sources (SPEC 8.3, 8.4, 9): each blocks until something
may need work and then calls back. None of them touches the database.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import anyio
import structlog
from anyio.abc import TaskStatus
from watchfiles import Change, awatch

from service.daemon.clock import Clock
from service.daemon.notify import Notifier
from service.inbox.records import is_candidate

log = structlog.get_logger(__name__)

DB_STEP_MS = 10
"""watchfiles' ``step``: it reports changes after this long without more, and
also wakes this often while idle to check for its stop event. 10 ms keeps the
latency of an upstream commit low for about 0.4 % of one core while idle."""
INBOX_STEP_MS = 100
"""Files are not latency-critical: a slower, cheaper watcher."""
WATCH_DEBOUNCE_MS = 50
"""Longest a stream of changes is grouped before the callback runs."""

Filter = Callable[[Change, str], bool]


def database_filter(db_path: Path) -> Filter:
    """Changes of the database file or its ``-wal`` (``-shm`` changes on every read)."""
    names = {db_path.name, db_path.name + "-wal"}

    def keep(change: Change, path: str) -> bool:
        return os.path.basename(path) in names

    return keep


def inbox_filter(folder: Path) -> Filter:
    """Finished files arriving directly in the inbox folder."""

    def keep(change: Change, path: str) -> bool:
        candidate = Path(path)
        return change != Change.deleted and candidate.parent == folder and is_candidate(candidate)

    return keep


async def watch_folder(
    folder: Path,
    keep: Filter,
    on_change: Callable[[], None],
    stop: anyio.Event,
    step_ms: int = DB_STEP_MS,
) -> None:
    """Call ``on_change`` after changes in ``folder`` (not its subfolders) until ``stop``.

    If the folder cannot be watched (inotify limits, a network file system),
    the failure is logged and the periodic poll is the only safety net left.
    """
    try:
        async for _ in awatch(
            folder, watch_filter=keep, stop_event=stop, recursive=False,
            step=step_ms, debounce=WATCH_DEBOUNCE_MS,
        ):  # fmt: skip
            on_change()
    except (OSError, RuntimeError) as exc:
        log.warning("watch_failed", folder=str(folder), error=str(exc), fallback="poll")


async def each_local_midnight(clock: Clock, on_new_day: Callable[[], None]) -> None:
    """Call ``on_new_day`` whenever the clock's local date changes."""
    while True:
        await clock.sleep_until_next_day()
        on_new_day()


async def every(seconds: float, action: Callable[[], bool]) -> None:
    """Call ``action`` every ``seconds`` until it returns False."""
    while True:
        await anyio.sleep(seconds)
        if not action():
            return


async def watchdog_pings(
    notifier: Notifier, interval: float, busy_since: Callable[[], float | None]
) -> None:
    """``WATCHDOG=1`` every ``interval`` while the worker is not stuck.

    A worker busy with one step for a whole watchdog period is not healthy:
    the pings stop and systemd restarts the service.
    """
    while True:
        busy = busy_since()
        if busy is None or time.monotonic() - busy < 2 * interval:
            notifier.watchdog()
        else:
            log.error("watchdog_withheld", busy_s=round(time.monotonic() - busy, 1))
        await anyio.sleep(interval)


async def handle_signals(
    on_reload: Callable[[], None],
    on_stop: Callable[[], None],
    *,
    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """SIGHUP reloads; SIGTERM and SIGINT stop."""
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        task_status.started()
        async for signum in signals:
            if signum == signal.SIGHUP:
                log.info("reload_requested")
                on_reload()
            else:
                log.info("stop_requested", signal=signal.Signals(signum).name)
                on_stop()


def file_identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of a file, ``None`` if it is missing."""
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_dev, st.st_ino)
