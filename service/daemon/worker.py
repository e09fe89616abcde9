"""The daemon's worker (SPEC 8.3, 8.4, 13): everything that touches the database.

One pass does, in order: a configuration reload if asked, the calendar tick if
the local date changed, the inbox files, then draining the events inbox. Each
piece is guarded: a failure is logged with its reason and retried later (with
backoff), never fatal, and never loses an event, because every unit of work is
one transaction that commits or rolls back as a whole.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import TypeVar

import anyio
import structlog

from service.config import Settings
from service.daemon.backoff import Backoff, Leave
from service.daemon.basis import follow_settings
from service.daemon.clock import Clock
from service.daemon.notify import Notifier
from service.daemon.processing import BatchLimits, Processor, StepReport
from service.daemon.tick import TickReport, tick_if_due
from service.engine import PlanContext
from service.errors import ConfigError, MailplanError, StoreUnavailable
from service.inbox.ingest import Inbox
from service.inbox.records import InboxLimits
from service.planning.contacts import zip_lookup
from service.store import SqliteStore, Store

log = structlog.get_logger(__name__)

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
    writer_gap_every: float = 0.14
    """Seconds of back-to-back write transactions after which the daemon pauses."""
    writer_gap: float = 0.06
    """The pause: long enough for an upstream writer waiting in SQLite's busy
    handler (which retries at most every 50 ms during its first ~230 ms of
    waiting) to get the write lock, so upstream never waits much over 200 ms."""


@dataclass(slots=True)
class DaemonStatus:
    """Counters for STATUS lines and tests."""

    pending: int = 0
    steps: int = 0
    events: int = 0
    failures: int = 0
    malformed: int = 0
    """Malformed events consumed (and logged) since start, for ``status``."""
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


class Worker:
    """Does the daemon's database work, one guarded piece at a time.

    Created once per daemon; :meth:`attach` gives it the store of each
    (re)opened database and the :class:`Leave` token that tells its long work
    to stop at the next transaction boundary. A database that is not usable
    (:class:`StoreUnavailable`: read-only, deleted, disk full) is not retried
    here: it is raised, for the daemon to open the database again.
    """

    def __init__(
        self,
        settings: Settings,
        clock: Clock,
        notifier: Notifier,
        options: DaemonOptions,
        reload_settings: Callable[[], Settings] | None,
    ) -> None:
        self.settings = settings
        self.ctx = PlanContext.from_settings(settings)
        self.clock = clock
        self.notifier = notifier
        self.options = options
        self.reload_settings = reload_settings
        self.status = DaemonStatus()
        self.exit_code = 0
        self.busy_since: float | None = None
        self._leave = Leave()
        self._ticked_for: date | None = None
        self._tick_backoff = Backoff(first=1.0, ceiling=options.max_backoff)
        self._tick_retry_at = 0.0
        self._batch_backoff = Backoff(first=0.1, ceiling=options.max_backoff)
        self._seen_version = -1
        self._last_status = 0.0
        self._quarantined: set[int] = set()
        self._store: Store | None = None
        self._processor: Processor | None = None
        self._inbox: Inbox | None = None

    @property
    def store(self) -> Store:
        if self._store is None:
            raise RuntimeError("the worker has no open store")
        return self._store

    async def attach(self, store: Store, leave: Leave) -> None:
        """Work on ``store`` from now on (a database opened or re-opened),
        until ``leave`` is set."""
        await store.use_short_lock_waits()
        store.run_small_statements_inline()
        await store.check_writable()
        self._store = store
        self._leave = leave
        self._processor = Processor(store, self.ctx, self.options.limits)
        self._processor.skip = set(self._quarantined)
        self._seen_version = await store.data_version()
        self._ticked_for = None
        if self.options.inbox is not None:
            if not isinstance(store, SqliteStore):
                # The inbox applies records through the SQLite connection's
                # savepoints; another backend needs its own inbox writer.
                raise ConfigError(f"the inbox needs an SQLite database, not {type(store).__name__}")
            self._inbox = Inbox(self.options.inbox, store, self.options.inbox_limits)
            await anyio.to_thread.run_sync(self._inbox.prepare)

    def detach(self) -> None:
        if self._processor is not None:
            self._processor.idle()
        self._store = self._processor = self._inbox = None

    async def startup(self) -> None:
        """Before READY: finish inbox files a crash interrupted, run a due tick."""
        # Failures are logged; later passes retry both, start-up goes on.
        # The ZIP index is built on first use: not inside a write transaction.
        await anyio.to_thread.run_sync(zip_lookup, "10001")
        if self._inbox is not None:
            await self._guarded("inbox_recovery", self._inbox.recover)
        await self._guarded("settings_check", self._follow_settings("start"))
        await self._try_tick()

    async def run_pass(self, reasons: set[str]) -> None:
        """One pass for the given wake-up reasons (see ``Daemon.wake``)."""
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
        self.busy_since = time.monotonic()
        try:
            return await work()
        except StoreUnavailable:
            raise
        except (MailplanError, OSError) as exc:
            self.status.failures += 1
            log.error(f"{what}_failed", error=str(exc), kind=type(exc).__name__)
            return None
        except Exception as exc:  # a bug: keep serving, with the traceback in the log
            self.status.failures += 1
            log.exception(f"{what}_crashed", error=str(exc), kind=type(exc).__name__)
            return None
        finally:
            self.busy_since = None

    def _follow_settings(self, when: str) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            return await follow_settings(self.store, self.ctx, when=when)

        return check

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
            self._tick_backoff.reset()
            return
        if self.options.once:
            # A one-shot run that could not tick has failed (SPEC 10: exit 1).
            self.exit_code = 1
        self._tick_retry_at = time.monotonic() + self._tick_backoff.next_delay()

    async def _maybe_tick(self) -> bool:
        today = self.clock.today()
        if today == self._ticked_for:
            return True
        report = await tick_if_due(
            self.store, self.ctx, today, chunk=self.options.limits.chunk_contacts,
            should_stop=self._leave.is_set,
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
        backoff = self._batch_backoff
        backoff.reset()
        working_since = time.monotonic()
        while not self._leave.is_set():
            failures = backoff.failures
            if self.options.once and failures >= ONCE_ATTEMPTS:
                # A one-shot run reports the failure instead of retrying forever.
                log.error("once_gave_up", attempts=failures)
                self.exit_code = 1
                return
            if self.clock.today() != self._ticked_for:
                await self._try_tick()
            self.busy_since = time.monotonic()
            try:
                # Before each batch: an operator's `recompute --all` under other
                # settings may have replaced the plan meanwhile (SPEC 4).
                await follow_settings(self.store, self.ctx, when="batch")
                report = await processor.step(self.clock.today())
            except StoreUnavailable:
                raise
            except (MailplanError, OSError) as exc:
                delay = backoff.next_delay()
                self.status.failures += 1
                log.error("batch_failed", error=str(exc), kind=type(exc).__name__,
                          attempt=backoff.failures, retry_s=delay)  # fmt: skip
                self.notifier.status(f"error, retrying in {delay:.1f}s: {exc}")
                await self._leave.pause(delay)
                continue
            except Exception as exc:  # the per-batch boundary (STYLE 5)
                delay = backoff.next_delay()
                self.status.failures += 1
                await self._on_bug(processor, exc, backoff.failures, delay)
                continue
            finally:
                self.busy_since = None
            if report is None:
                processor.isolate = False
                # Idle: the planning processes of a large batch are closed.
                processor.idle()
                return
            backoff.reset()
            self._on_step(report)
            await self._report_status(every=STATUS_EVERY_S)
            if time.monotonic() - working_since >= self.options.writer_gap_every:
                # SQLite's lock is not fair: a writer polling in its busy
                # handler can miss every gap between our transactions.
                gap_started = time.monotonic()
                if report.staged:
                    # Staged work reads its next chunks meanwhile (no lock).
                    await processor.prefetch()
                rest = self.options.writer_gap - (time.monotonic() - gap_started)
                if rest > 0:
                    await self._leave.pause(rest)
                working_since = time.monotonic()

    @property
    def set_aside(self) -> frozenset[int]:
        """Ids of events set aside until the next start (they stay in the inbox)."""
        return frozenset(self._quarantined)

    async def _on_bug(
        self, processor: Processor, exc: Exception, failures: int, delay: float
    ) -> None:
        """An unexpected error in one batch: find the event that causes it.

        Batches shrink to one event; an event that keeps failing on its own is
        set aside until the next start (it stays in the inbox, nothing is
        lost) so the events behind it are not held up.
        """
        log.exception("batch_crashed", error=str(exc), kind=type(exc).__name__, attempt=failures)
        if processor.isolate and failures >= 3 and processor.attempted:
            self._quarantined.update(processor.attempted)
            processor.skip = set(self._quarantined)
            log.error("event_set_aside", event_ids=sorted(processor.attempted))
        processor.isolate = True
        await self._leave.pause(delay)

    def _on_step(self, report: StepReport) -> None:
        self.status.steps += 1
        self.status.events += report.events
        self.status.malformed += report.rejected
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
        # Compared with what the stored plan follows, not only with the old
        # settings: the plan may not have been ours (SPEC 4).
        queued = await follow_settings(self.store, self.ctx, when="reload")
        log.info("reload_applied", planning_changed=changed, full_recompute_queued=queued)
        self.notifier.ready(self.status.line())
