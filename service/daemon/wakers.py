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
from inotify_simple import INotify
from inotify_simple import flags as inotify_flags
from watchfiles import Change
from watchfiles._rust_notify import RustNotify

from service.daemon.clock import Clock
from service.daemon.notify import Notifier
from service.inbox.records import is_candidate

log = structlog.get_logger(__name__)

DB_STEP_MS = 10
"""watchfiles' ``step`` while the database has been quiet: it polls its
change buffer this often (about 0.6 % of one core while idle), and reports a
change after one more step without another."""
DB_HOT_STEP_MS = 1
"""The step for ``DB_HOT_S`` after a change: a commit that follows others is
seen within about 1.5 ms instead of 15 ms (about 2 % of a core while it lasts)."""
DB_HOT_S = 2.0
"""How long the watcher stays on its short step after the last change."""
INBOX_STEP_MS = 100
"""Files are not latency-critical: a slower, cheaper watcher."""
WATCH_DEBOUNCE_MS = 50
"""Longest a stream of changes is grouped before the callback runs."""
WATCH_TIMEOUT_MS = 1000
"""Longest one wait in watchfiles' thread without a change (it also returns
as soon as the stop event is set, within a step)."""
SETTLE_MS = 3
"""After a quiet watcher is woken by the kernel: how long watchfiles is given
to report the change before it is reported anyway."""
QUIET_MASK = (
    inotify_flags.MODIFY | inotify_flags.CREATE | inotify_flags.CLOSE_WRITE
    | inotify_flags.MOVED_TO | inotify_flags.MOVED_FROM | inotify_flags.DELETE
)  # fmt: skip
"""The folder events a quiet watcher waits for (what watchfiles reports)."""

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
    hot_step_ms: int | None = None,
) -> None:
    """Call ``on_change`` after changes in ``folder`` (not its subfolders) until ``stop``.

    watchfiles' watcher (:class:`watchfiles._rust_notify.RustNotify`, what
    ``awatch`` runs) looks at the changes it has collected once per step and
    reports them one step after the last one, so the step is most of the
    latency of a wake-up. With ``hot_step_ms`` the watcher uses that shorter
    step for ``DB_HOT_S`` after each change, and ``step_ms`` when quiet; one
    watcher is kept throughout, so no change falls between two.

    While quiet, nothing polls: the task waits on a kernel inotify descriptor
    of its own (:func:`_quiet_wait`) and only then lets watchfiles report
    what it has collected meanwhile, with the short step; a change that it
    does not report within ``SETTLE_MS`` is reported anyway. Where inotify
    cannot be had, watchfiles polls with ``step_ms`` as before.

    If the folder cannot be watched (inotify limits, a network file system),
    the failure is logged and the periodic poll is the only safety net left.
    """
    try:
        with RustNotify([str(folder)], False, False, 300, False, False) as watcher:
            quiet = _kernel_watch(folder)
            try:
                await _watch_loop(watcher, quiet, folder, keep, on_change, stop,
                                  step_ms, hot_step_ms)  # fmt: skip
            finally:
                if quiet is not None:
                    quiet.close()
    except (OSError, RuntimeError) as exc:
        log.warning("watch_failed", folder=str(folder), error=str(exc), fallback="poll")


async def _watch_loop(
    watcher: RustNotify,
    quiet: INotify | None,
    folder: Path,
    keep: Filter,
    on_change: Callable[[], None],
    stop: anyio.Event,
    step_ms: int,
    hot_step_ms: int | None,
) -> None:
    hot_until = 0.0
    flush = False
    while not stop.is_set():
        now = time.monotonic()
        hot = hot_step_ms is not None and now < hot_until
        woken = False
        if hot and hot_step_ms is not None:
            step, timeout = hot_step_ms, max(1, int((hot_until - now) * 1000))
            flush = quiet is not None
        elif flush and quiet is not None:
            # Leaving the short step: the descriptor holds the changes already
            # reported; drop them, then take once more what watchfiles holds
            # (a change after its last call is in its buffer, maybe not ours).
            quiet.read(timeout=0)
            flush = False
            step, timeout = 1, 1
        elif quiet is not None:
            if not await _quiet_wait(quiet, folder, keep, stop):
                continue
            woken = True
            step, timeout = hot_step_ms or 1, SETTLE_MS
        else:
            step, timeout = step_ms, WATCH_TIMEOUT_MS
        raw = await anyio.to_thread.run_sync(watcher.watch, WATCH_DEBOUNCE_MS, step, timeout, stop)
        if raw == "stop":
            return
        if raw == "signal":
            raise RuntimeError("the watch thread received a signal")
        changed = raw != "timeout" and any(keep(Change(change), path) for change, path in raw)
        if changed or woken:
            # Woken by the kernel for a change watchfiles did not report in
            # time (it came as its last call ended): report it all the same.
            hot_until = time.monotonic() + DB_HOT_S
            on_change()


def _kernel_watch(folder: Path) -> INotify | None:
    """An inotify descriptor on ``folder`` for waiting without polling, or None."""
    try:
        quiet = INotify()
    except OSError as exc:
        log.info("quiet_watch_unavailable", folder=str(folder), error=str(exc))
        return None
    try:
        quiet.add_watch(str(folder), QUIET_MASK)
    except OSError as exc:
        quiet.close()
        log.info("quiet_watch_unavailable", folder=str(folder), error=str(exc))
        return None
    return quiet


async def _quiet_wait(quiet: INotify, folder: Path, keep: Filter, stop: anyio.Event) -> bool:
    """Wait (without polling) until a change ``keep`` accepts is in ``quiet``,
    ``stop`` is set, or ``WATCH_TIMEOUT_MS`` passes; whether such a change came."""
    async with anyio.create_task_group() as tg:

        async def on_stop() -> None:
            await stop.wait()
            tg.cancel_scope.cancel()

        tg.start_soon(on_stop)
        with anyio.move_on_after(WATCH_TIMEOUT_MS / 1000):
            await anyio.wait_readable(quiet.fd)
        tg.cancel_scope.cancel()
    events = quiet.read(timeout=0)
    return any(keep(_change(event.mask), str(folder / event.name)) for event in events)


def _change(mask: int) -> Change:
    if mask & (inotify_flags.DELETE | inotify_flags.MOVED_FROM):
        return Change.deleted
    if mask & (inotify_flags.CREATE | inotify_flags.MOVED_TO):
        return Change.added
    return Change.modified


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
