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

import os
import signal
import sqlite3
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import TypeVar

import anyio
import structlog
from anyio.abc import TaskStatus
from watchfiles import Change, awatch

from service.clock import Clock
from service.config import Settings
from service.engine import PlanContext
from service.errors import MailplanError, StoreError
from service.inbox import Inbox
from service.inbox_records import InboxLimits, is_candidate
from service.notify import Notifier
from service.processing import BatchLimits, Processor, StepReport
from service.store import Store
from service.tick import TickReport, tick_if_due

log = structlog.get_logger(__name__)

WATCH_STEP_MS = 2
"""How long the file watcher waits for more changes before reporting (latency)."""
WATCH_DEBOUNCE_MS = 50
"""Longest a stream of changes is grouped before the worker is woken."""
STATUS_EVERY_S = 1.0
ONCE_ATTEMPTS = 3
"""With ``--once``, a batch that fails this often ends the run with exit code 1."""

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class DaemonOptions:
    """How the daemon runs (not planning parameters)."""

    inbox: Path | None = None
    once: bool = False
    poll_interval: float = 5.0
    handle_signals: bool = True
    stop_timeout: float = 4.0
    watch: bool = True
    limits: BatchLimits = field(default_factory=BatchLimits)
    inbox_limits: InboxLimits = field(default_factory=InboxLimits)
    max_backoff: float = 30.0


@dataclass(slots=True)
class DaemonStatus:
    """Counters for STATUS lines and tests."""

    pending: int = 0
    steps: int = 0
    events: int = 0
    failures: int = 0
    last_step: StepReport | None = None
    last_tick: TickReport | None = None

    def line(self) -> str:
        last = self.last_step
        batch = (
            f"last batch {last.events} events, {last.contacts} contacts, {last.ms:.0f} ms"
            if last
            else "no batch yet"
        )
        return f"{self.pending} pending events; {batch}"


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
        self.settings = settings
        self.db_path = db_path
        self.options = options or DaemonOptions()
        self.clock = clock or Clock(settings.tz)
        self.notifier = notifier or Notifier()
        self.reload_settings = reload_settings
        self.ctx = PlanContext.from_settings(settings)
        self.status = DaemonStatus()
        self._wake = anyio.Event()
        self._reasons: set[str] = set()
        self._leave = anyio.Event()
        self._stopping = False
        self._watch_stops: list[anyio.Event] = []
        self._passes_started = 0
        self._passes_done = 0
        self._pass_done = anyio.Event()
        self._busy_since: float | None = None
        self._ticked_for: date | None = None
        self._tick_failures = 0
        self._tick_retry_at = 0.0
        self._seen_version = -1
        self._db_identity: tuple[int, int] | None = None
        self._last_status = 0.0
        self._quarantined: set[int] = set()
        self._store: Store | None = None
        self.exit_code = 0
        self._processor: Processor | None = None
        self._inbox: Inbox | None = None

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

    @property
    def store(self) -> Store:
        if self._store is None:
            raise RuntimeError("the daemon has no open store")
        return self._store

    # -- lifecycle --------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[Daemon] = anyio.TASK_STATUS_IGNORED) -> int:
        """Serve until stopped; the exit code. Re-opens the database if it goes away."""
        reported: TaskStatus[Daemon] | None = task_status
        delay = 0.5
        async with anyio.create_task_group() as outer:
            if self.options.handle_signals:
                outer.start_soon(self._signals)
            while not self._stopping:
                try:
                    async with Store.open(self.db_path) as store:
                        delay = 0.5
                        await self._serve(store, reported)
                        reported = None
                except StoreError as exc:
                    if self.options.once:
                        raise
                    log.error("database_unavailable", path=str(self.db_path), error=str(exc),
                              retry_s=delay)  # fmt: skip
                    self.notifier.status(f"database unavailable, retrying: {exc}")
                    await self._pause(delay)
                    delay = min(delay * 2, self.options.max_backoff)
                finally:
                    self._store = None
            outer.cancel_scope.cancel()
        self.notifier.close()
        log.info("daemon_stopped", exit_code=self.exit_code)
        return self.exit_code

    async def _serve(self, store: Store, task_status: TaskStatus[Daemon] | None) -> None:
        self._store = store
        self._processor = Processor(store, self.ctx, self.options.limits)
        self._leave = anyio.Event()
        if self._stopping:
            self._leave.set()
        self._seen_version = await store.data_version()
        self._db_identity = _identity(self.db_path)
        if self.options.inbox is not None:
            self._inbox = Inbox(self.options.inbox, store, self.options.inbox_limits)
            await anyio.to_thread.run_sync(self._inbox.prepare)
        log.info("daemon_started", db=str(self.db_path), today=self.clock.today().isoformat(),
                 inbox=str(self.options.inbox) if self.options.inbox else None)  # fmt: skip
        async with anyio.create_task_group() as tg:
            worker_done = anyio.Event()
            tg.start_soon(self._stopper, tg.cancel_scope, worker_done)
            await self._startup()
            self.notifier.ready(self.status.line())
            if task_status is not None:
                task_status.started(self)
            tg.start_soon(self._worker, worker_done)
            if not self.options.once:
                tg.start_soon(self._poll)
                tg.start_soon(self._midnight)
                if self.options.watch:
                    tg.start_soon(self._watch_db)
                    if self._inbox is not None:
                        tg.start_soon(self._watch_inbox)
                if self.notifier.watchdog_interval:
                    tg.start_soon(self._watchdog, self.notifier.watchdog_interval)

    async def _startup(self) -> None:
        """Before READY: finish inbox files a crash interrupted, run a due tick."""
        # Failures are logged; the worker retries both, start-up goes on.
        if self._inbox is not None:
            await self._guarded("inbox_recovery", self._inbox.recover)
        await self._try_tick()

    async def _stopper(self, scope: anyio.CancelScope, worker_done: anyio.Event) -> None:
        await self._leave.wait()
        for stop in self._watch_stops:
            stop.set()
        with anyio.move_on_after(self.options.stop_timeout):
            await worker_done.wait()
        if not worker_done.is_set():
            log.warning("stop_timeout", seconds=self.options.stop_timeout)
        scope.cancel()

    async def _pause(self, seconds: float) -> None:
        with anyio.move_on_after(seconds):
            await self._leave.wait()

    # -- the worker ---------------------------------------------------------------

    async def _worker(self, done: anyio.Event) -> None:
        reasons = {"start"}
        try:
            while not self._leave.is_set():
                self._passes_started += 1
                await self._pass(reasons)
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
        finally:
            done.set()

    async def _pass(self, reasons: set[str]) -> None:
        if "reload" in reasons:
            await self._guarded("reload", self._reload)
        await self._try_tick()
        drain = bool(reasons & {"start", "tick", "reload", "check"})
        if self._inbox is not None and reasons & {"start", "inbox", "poll", "check"}:
            # Our own writes do not move data_version: drain what the files caused.
            drain = bool(await self._guarded("inbox", self._ingest)) or drain
        if await self._guarded("db_check", self._db_changed) or drain:
            await self._drain()
            await self._guarded("status", self._report_status)

    async def _guarded(self, what: str, work: Callable[[], Awaitable[T]]) -> T | None:
        """Run one piece of work; a failure is logged, never fatal (SPEC 13)."""
        self._busy_since = time.monotonic()
        try:
            return await work()
        except (MailplanError, sqlite3.Error, OSError) as exc:
            self.status.failures += 1
            log.error(f"{what}_failed", error=str(exc), kind=type(exc).__name__)
            return None
        except Exception as exc:  # a bug: keep serving, with the traceback in the log
            self.status.failures += 1
            log.exception(f"{what}_crashed", error=str(exc), kind=type(exc).__name__)
            return None
        finally:
            self._busy_since = None

    async def _db_changed(self) -> bool:
        version = await self.store.data_version()
        changed = version != self._seen_version
        self._seen_version = version
        return changed

    async def _try_tick(self) -> None:
        """The tick, if the date changed; after a failure, retried with backoff."""
        if self.clock.today() == self._ticked_for or time.monotonic() < self._tick_retry_at:
            return
        if await self._guarded("tick", self._maybe_tick):
            self._tick_failures = 0
            return
        self._tick_failures += 1
        delay = min(2.0**self._tick_failures, self.options.max_backoff)
        self._tick_retry_at = time.monotonic() + delay

    async def _maybe_tick(self) -> bool:
        today = self.clock.today()
        if today == self._ticked_for:
            return True
        report = await tick_if_due(
            self.store, self.ctx, today, chunk=self.options.limits.chunk_contacts,
            should_stop=lambda: self._leave.is_set(),
        )  # fmt: skip
        if report is None or report.finished:
            self._ticked_for = today
        if report is not None:
            self.status.last_tick = report
        return True

    async def _ingest(self) -> bool:
        assert self._inbox is not None
        outcomes = await self._inbox.process_pending()
        return any(o.applied or o.deleted for o in outcomes)

    async def _drain(self) -> None:
        processor = self._processor
        assert processor is not None
        failures = 0
        while not self._leave.is_set():
            if self.options.once and failures >= ONCE_ATTEMPTS:
                # A one-shot run reports the failure instead of retrying forever.
                log.error("once_gave_up", attempts=failures)
                self.exit_code = 1
                return
            if self.clock.today() != self._ticked_for:
                await self._try_tick()
            self._busy_since = time.monotonic()
            try:
                report = await processor.step(self.clock.today())
            except (MailplanError, sqlite3.Error, OSError) as exc:
                failures += 1
                self.status.failures += 1
                delay = min(0.1 * 2 ** (failures - 1), self.options.max_backoff)
                log.error("batch_failed", error=str(exc), kind=type(exc).__name__,
                          attempt=failures, retry_s=delay)  # fmt: skip
                self.notifier.status(f"error, retrying in {delay:.1f}s: {exc}")
                await self._pause(delay)
                continue
            except Exception as exc:  # the per-batch boundary (STYLE 5)
                failures += 1
                self.status.failures += 1
                await self._on_bug(processor, exc, failures)
                continue
            finally:
                self._busy_since = None
            if report is None:
                processor.isolate = False
                return
            failures = 0
            self._on_step(report)
            await self._report_status(every=STATUS_EVERY_S)

    async def _on_bug(self, processor: Processor, exc: Exception, failures: int) -> None:
        """An unexpected error in one batch: find the event that causes it.

        Batches shrink to one event; an event that keeps failing on its own is
        set aside until the next start (it stays in the inbox, nothing is
        lost) so the events behind it are not held up.
        """
        delay = min(0.1 * 2 ** (failures - 1), self.options.max_backoff)
        log.exception("batch_crashed", error=str(exc), kind=type(exc).__name__, attempt=failures)
        if processor.isolate and failures >= 3 and processor.attempted:
            self._quarantined.update(processor.attempted)
            processor.skip = set(self._quarantined)
            log.error("event_set_aside", event_ids=sorted(processor.attempted))
        processor.isolate = True
        await self._pause(delay)

    def _on_step(self, report: StepReport) -> None:
        self.status.steps += 1
        self.status.events += report.events
        self.status.last_step = report
        stats = report.stats
        log.info(
            "batch_applied" if report.kind == "batch" else "fanout_chunk_applied",
            run_id=report.run_id, events=report.events, rejected=report.rejected,
            contacts=report.contacts, inserted=stats.inserted, updated=stats.updated,
            deleted=stats.deleted, unchanged=stats.unchanged, moved=stats.rows_moved,
            ms=round(report.ms, 1),
        )  # fmt: skip

    async def _report_status(self, every: float = 0.0) -> None:
        now = time.monotonic()
        if now - self._last_status < every:
            return
        self._last_status = now
        self.status.pending = await self.store.pending_event_count()
        self.notifier.status(self.status.line())

    async def _reload(self) -> None:
        if self.reload_settings is None:
            log.info("reload_ignored", reason="no configuration source")
            return
        self.notifier.reloading()
        try:
            new = self.reload_settings()
            old_fingerprint, new_fingerprint = self.settings.fingerprint(), new.fingerprint()
        except MailplanError as exc:
            log.error("reload_failed", error=str(exc))
            self.notifier.ready(self.status.line())
            return
        self.settings = new
        self.ctx = PlanContext.from_settings(new)
        if self._processor is not None:
            self._processor.ctx = self.ctx
        self.clock.tz = new.tz
        changed = new_fingerprint != old_fingerprint
        if changed:
            async with self.store.transaction():
                await self.store.enqueue_event("recompute_all")
        log.info("reload_applied", planning_changed=changed)
        self.notifier.ready(self.status.line())

    # -- wakers -------------------------------------------------------------------

    async def _signals(self) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            async for signum in signals:
                if signum == signal.SIGHUP:
                    log.info("reload_requested")
                    self.wake("reload")
                else:
                    log.info("stop_requested", signal=signal.Signals(signum).name)
                    self.request_stop()

    async def _poll(self) -> None:
        while True:
            await anyio.sleep(self.options.poll_interval)
            identity = _identity(self.db_path)
            if identity != self._db_identity:
                # Deleted or replaced under us: writing on would go to a file
                # nobody reads. Leave and re-open it.
                log.error("database_gone", path=str(self.db_path))
                self._leave.set()
                return
            self.wake("poll")

    async def _midnight(self) -> None:
        while True:
            await self.clock.sleep_until_next_day()
            self.wake("tick")

    async def _watchdog(self, interval: float) -> None:
        while True:
            busy = self._busy_since
            # A worker stuck in one step for a whole watchdog period is not
            # healthy: stop pinging and let systemd restart the service.
            if busy is None or time.monotonic() - busy < 2 * interval:
                self.notifier.watchdog()
            else:
                log.error("watchdog_withheld", busy_s=round(time.monotonic() - busy, 1))
            await anyio.sleep(interval)

    async def _watch(
        self, directory: Path, keep: Callable[[Change, str], bool], reason: str
    ) -> None:
        stop = anyio.Event()
        self._watch_stops.append(stop)
        try:
            async for _ in awatch(
                directory, watch_filter=keep, stop_event=stop, recursive=False,
                step=WATCH_STEP_MS, debounce=WATCH_DEBOUNCE_MS,
            ):  # fmt: skip
                self.wake(reason)
        except (OSError, RuntimeError) as exc:
            log.warning("watch_failed", folder=str(directory), error=str(exc),
                        fallback="poll")  # fmt: skip
        finally:
            self._watch_stops.remove(stop)

    async def _watch_db(self) -> None:
        names = {self.db_path.name, self.db_path.name + "-wal"}

        def keep(change: Change, path: str) -> bool:
            return os.path.basename(path) in names

        await self._watch(self.db_path.parent, keep, "db")

    async def _watch_inbox(self) -> None:
        assert self.options.inbox is not None
        folder = self.options.inbox

        def keep(change: Change, path: str) -> bool:
            candidate = Path(path)
            return change != Change.deleted and candidate.parent == folder and is_candidate(
                candidate
            )

        await self._watch(folder, keep, "inbox")


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


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
