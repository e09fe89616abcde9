"""The daemon (SPEC 8.3, 8.4, 9): one worker, woken by whatever may need work.

A single worker task does all database work, one short transaction at a time:
the calendar tick when the local date has changed, ingestion of inbox files,
then draining the events inbox. Everything else only wakes it:

- a watcher on the database folder (changes to the db file or its ``-wal``,
  never ``-shm``); ``PRAGMA data_version`` then tells a real upstream commit
  from noise and from the daemon's own writes;
- a periodic poll, the safety net for missed notifications;
- a watcher on the inbox folder;
- the clock, at each local midnight;
- SIGHUP (reload the configuration).

Nothing polls busily: between wake-ups every task is blocked. SIGTERM/SIGINT
let the current transaction finish, then stop everything within the grace
period (a transaction still running then is rolled back). systemd is told
READY, STATUS, WATCHDOG and STOPPING through ``NOTIFY_SOCKET``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from pathlib import Path

import anyio
import structlog
from anyio.abc import TaskGroup, TaskStatus

from service.config import Settings
from service.daemon import checkpoints, heartbeat, wakers
from service.daemon.backoff import Backoff, Leave
from service.daemon.clock import Clock
from service.daemon.early import stop_requested_early
from service.daemon.notify import Notifier
from service.daemon.worker import DaemonOptions, DaemonStatus, Worker
from service.errors import SchemaError, StoreBusy, StoreError, StoreUnavailable
from service.inbox.ingest import check_inbox_path
from service.store import Store, open_store

__all__ = ["Daemon", "DaemonOptions", "DaemonStatus", "run_daemon"]

log = structlog.get_logger(__name__)


class Daemon:
    """The long-running planner for one organisation database."""

    def __init__(
        self,
        settings: Settings,
        db_path: Path,
        *,
        options: DaemonOptions | None = None,
        clock: Clock | None = None,
        notifier: Notifier | None = None,
        reload_settings: Callable[[], Settings] | None = None,
    ) -> None:
        self.db_path = db_path
        self.options = options or DaemonOptions()
        self.clock = clock or Clock(settings.tz)
        self.notifier = notifier or Notifier()
        self.worker = Worker(settings, self.clock, self.notifier, self.options, reload_settings)
        self._wake = anyio.Event()
        self._reasons: set[str] = set()
        self._stop = Leave()
        """Set once, when the process is asked to stop."""
        self._leave = Leave()
        """Set to leave the open database (stop, or the file is gone); one per open."""
        self._stopping = False
        self._store: Store | None = None
        self._unreported: TaskStatus[Daemon] | None = None
        self._reopen = Backoff(first=min(0.5, self.options.max_backoff),
                               ceiling=self.options.max_backoff)  # fmt: skip
        self._watch_stops: list[anyio.Event] = []
        self._passes_started = 0
        self._passes_done = 0
        self._pass_done = anyio.Event()
        self._db_identity: tuple[int, int] | None = None

    @property
    def settings(self) -> Settings:
        return self.worker.settings

    @property
    def status(self) -> DaemonStatus:
        return self.worker.status

    # -- control ----------------------------------------------------------------

    def wake(self, reason: str) -> None:
        """Ask the worker for a pass: ``db``, ``poll``, ``inbox``, ``tick``, ``reload``
        or ``check`` (drain whatever is pending)."""
        self._reasons.add(reason)
        self._wake.set()

    def request_stop(self) -> None:
        """Stop after the current transaction (SIGTERM/SIGINT)."""
        if self._stopping:
            return
        self._stopping = True
        self.notifier.stopping()
        self._stop.set()
        self._leave.set()
        self._wake.set()

    async def wait_idle(self) -> None:
        """Return after a complete worker pass that started after this call.

        Such a pass drains every event committed before the call.
        """
        target = self._passes_started + 1
        self.wake("check")
        while self._passes_done < target:
            await self._pass_done.wait()

    # -- lifecycle --------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[Daemon] = anyio.TASK_STATUS_IGNORED) -> int:
        """Serve until stopped; the exit code.

        A database that is missing, read-only, locked or otherwise not usable
        (at start or later) is reported in the log and the STATUS line and
        opened again with backoff until it is back (SPEC 13); the daemon tells
        systemd it is ready meanwhile, so the unit does not fail. With
        ``once`` it is an error instead (raised, the process exits 1), as is a
        database with another schema.
        """
        self._unreported = task_status
        failure: StoreError | None = None
        async with anyio.create_task_group() as outer:
            if self.options.handle_signals:
                await outer.start(wakers.handle_signals, lambda: self.wake("reload"),
                                  self.request_stop)  # fmt: skip
                if stop_requested_early():
                    self.request_stop()
            outer.start_soon(heartbeat.beat, self.db_path, self.clock.now, self._heartbeat_facts)
            if self.notifier.watchdog_interval:
                outer.start_soon(wakers.watchdog_pings, self.notifier,
                                 self.notifier.watchdog_interval,
                                 lambda: self.worker.busy_since)  # fmt: skip
            while not self._stopping:
                try:
                    async with open_store(self.db_path, clock=self.clock.now) as store:
                        self._store = store
                        await self._serve(store)
                except (StoreUnavailable, StoreBusy) as exc:
                    if self.options.once:
                        log.error("database_unavailable", path=str(self.db_path), error=str(exc))
                        failure = exc
                        break
                    await self._wait_for_database(exc)
                except SchemaError as exc:
                    if self.options.once or not self._reopen.failures:
                        failure = exc
                        break
                    # The database came back while init-db is still creating
                    # it (the daemon was waiting for it): wait on.
                    await self._wait_for_database(exc)
                except StoreError as exc:
                    failure = exc
                    break
                finally:
                    self._store = None
                    self.worker.detach()
            outer.cancel_scope.cancel()
        self.notifier.close()
        if failure is not None:
            raise failure
        log.info("daemon_stopped", exit_code=self.worker.exit_code)
        return self.worker.exit_code

    def _heartbeat_facts(self) -> dict[str, object]:
        """What ``mailplan status`` shows of this daemon (its heartbeat)."""
        return {
            "today": self.clock.today().isoformat(),
            "status": self.status.line(),
            "set_aside": sorted(self.worker.set_aside),
            "malformed_events": self.status.malformed,
        }

    def _report_started(self) -> None:
        if self._unreported is not None:
            self._unreported.started(self)
            self._unreported = None

    async def _wait_for_database(self, exc: StoreError) -> None:
        """One wait of the backoff before the database is opened again."""
        delay = self._reopen.next_delay()
        log.error("database_unavailable", path=str(self.db_path), error=str(exc),
                  attempt=self._reopen.failures, retry_s=delay)  # fmt: skip
        status = f"waiting for database {self.db_path} (retry in {delay:.0f}s): {exc}"
        # Started, though not planning: systemd must not fail the unit.
        self.notifier.ready(status)
        self._report_started()
        await self._stop.pause(delay)

    async def _serve(self, store: Store) -> None:
        """Work on one open database until leaving it (stop, or it is gone)."""
        self._leave = Leave()
        self._watch_stops = []
        if self._stopping:
            self._leave.set()
        await self.worker.attach(store, self._leave)
        lost: list[StoreUnavailable] = []
        self._db_identity = wakers.file_identity(self.db_path)
        log.info("daemon_started", db=str(self.db_path), today=self.clock.today().isoformat(),
                 inbox=str(self.options.inbox) if self.options.inbox else None)  # fmt: skip
        async with anyio.create_task_group() as tg:
            worker_done = anyio.Event()
            tg.start_soon(self._stopper, tg.cancel_scope, worker_done)
            try:
                await self.worker.startup()
            except StoreUnavailable as exc:
                lost.append(exc)
                worker_done.set()
                self._leave.set()
            else:
                self._reopen.reset()
                self.notifier.ready(self.status.line())
                self._report_started()
                if not self.options.once:
                    # Before the worker's first statement: a pragma is refused
                    # inside the read snapshots the worker opens.
                    await store.set_wal_autocheckpoint(0)
                tg.start_soon(self._work, worker_done, lost)
                if not self.options.once:
                    self._start_wakers(tg)
                    self._keep_wal_short(tg, store)
        if lost:
            raise lost[0]

    async def _stopper(self, scope: anyio.CancelScope, worker_done: anyio.Event) -> None:
        await self._leave.wait()
        for stop in self._watch_stops:
            stop.set()
        # The current transaction may finish; a wait for another writer's
        # lock is given up at once (nothing of ours is in flight then).
        with anyio.move_on_after(self.options.stop_timeout):
            while not worker_done.is_set():
                store = self._store
                if store is not None and store.waiting_for_lock:
                    log.info("stop_while_waiting_for_lock")
                    break
                with anyio.move_on_after(0.05):
                    await worker_done.wait()
        if not worker_done.is_set():
            log.warning("stop_timeout", seconds=self.options.stop_timeout)
        scope.cancel()

    async def _work(self, done: anyio.Event, lost: list[StoreUnavailable]) -> None:
        """The worker task: a pass, then sleep until woken."""
        reasons = {"start"}
        try:
            while not self._leave.is_set():
                self._passes_started += 1
                await self.worker.run_pass(reasons)
                self._passes_done += 1
                self._pass_done.set()
                self._pass_done = anyio.Event()
                if self.options.once:
                    self._stopping = True
                    self._leave.set()
                    break
                await self._wake.wait()
                self._wake = anyio.Event()
                reasons, self._reasons = self._reasons, set()
        except StoreUnavailable as exc:
            # Read-only, deleted, disk full...: this connection cannot go on;
            # the database is opened again (with backoff) by ``run``.
            lost.append(exc)
            self._leave.set()
        finally:
            done.set()

    # -- wakers -------------------------------------------------------------------

    def _start_wakers(self, tg: TaskGroup) -> None:
        tg.start_soon(wakers.every, self.options.poll_interval, self._poll)
        tg.start_soon(wakers.each_local_midnight, self.clock, lambda: self.wake("tick"))
        if self.options.watch:
            self._watch(tg, self.db_path.parent, wakers.database_filter(self.db_path), "db",
                        wakers.DB_STEP_MS, wakers.DB_HOT_STEP_MS)  # fmt: skip
            if self.options.inbox is not None:
                folder = self.options.inbox
                self._watch(tg, folder, wakers.inbox_filter(folder), "inbox",
                            wakers.INBOX_STEP_MS)  # fmt: skip

    def _keep_wal_short(self, tg: TaskGroup, store: Store) -> None:
        stop = anyio.Event()
        self._watch_stops.append(stop)
        tg.start_soon(checkpoints.keep_wal_short, store, self.db_path, stop)

    def _watch(
        self,
        tg: TaskGroup,
        folder: Path,
        keep: wakers.Filter,
        reason: str,
        step_ms: int,
        hot_step_ms: int | None = None,
    ) -> None:
        stop = anyio.Event()
        self._watch_stops.append(stop)
        tg.start_soon(wakers.watch_folder, folder, keep, lambda: self.wake(reason), stop,
                      step_ms, hot_step_ms)  # fmt: skip

    def _poll(self) -> bool:
        if wakers.file_identity(self.db_path) != self._db_identity:
            # Deleted or replaced under us: writing on would go to a file
            # nobody reads. Leave and open it again.
            log.error("database_gone", path=str(self.db_path))
            self._leave.set()
            self._wake.set()
            return False
        self.wake("poll")
        return True


async def run_daemon(
    settings: Settings,
    db_path: Path,
    *,
    inbox: Path | None = None,
    today: date | None = None,
    once: bool = False,
    reload_settings: Callable[[], Settings] | None = None,
    clock: Clock | None = None,
    notifier: Notifier | None = None,
    handle_signals: bool = True,
    poll_interval: float = 5.0,
) -> int:
    """``mailplan run``: serve until SIGTERM/SIGINT (or one pass with ``once``).

    ``today`` pins the clock's date (tests, what-if runs); ``reload_settings``
    is called on SIGHUP to re-read the configuration.
    """
    if inbox is not None:
        # An inbox the daemon cannot use is a configuration error (exit 2).
        await anyio.to_thread.run_sync(check_inbox_path, inbox)
    if clock is None:
        clock = Clock(settings.tz, pinned=today)
    elif today is not None:
        clock.pinned = today
    options = DaemonOptions(
        inbox=inbox, once=once, handle_signals=handle_signals, poll_interval=poll_interval
    )
    daemon = Daemon(
        settings, db_path, options=options, clock=clock, notifier=notifier,
        reload_settings=reload_settings,
    )  # fmt: skip
    return await daemon.run()
