"""What the rest of mailplan may ask of a store: typing Protocols, no SQL.

The engine, the daemon, the event handlers and the commands depend on these
interfaces only; :class:`~service.store.sqlite.SqliteStore` implements them
over one aiosqlite connection, and :class:`~service.store.memory.MemoryBalanceStore`
implements :class:`BalanceStore` in memory for tests. A second backend (for
example PostgreSQL) implements :class:`Store` and translates its driver's
errors into :class:`~service.errors.StoreError` and
:class:`~service.errors.StoreBusy`; nothing above this package changes.

Each Protocol is one role, so a component states which part it needs:

* :class:`Transactions` — write transactions and read snapshots;
* :class:`EventQueue` — the events inbox (SPEC 8);
* :class:`StateStore` — key/value state, the tick date, the capacity snapshot;
* :class:`RunLog` — the ``scheduler_runs`` audit table;
* :class:`PlanSource` — contacts, campaigns, history and stored plan rows, as
  the planner's inputs;
* :class:`PlanWriter` — the diffing plan writer and per-contact review dates;
* :class:`BalanceStore` — the stored balancer state (SPEC 6);
* :class:`PlanReader` — the stored plan as exported, compared and charted;
* :class:`PlanJournal` — the plan journal (SPEC 7): pruning and reading it;
* :class:`ReportReader` — the other reads of ``status``, ``audit``,
  ``explain`` and ``plot``;
* ``TargetLookup`` (in :mod:`handlers.base`) — the campaign handlers' questions.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from datetime import date
from pathlib import Path
from typing import Any, Protocol

import anyio

from service.planning.model import Campaigns, ContactData, ContactPlan, RowKey
from service.store.catchup import CatchUpStep, CaughtUp
from service.store.journal import JournalEntry
from service.store.loaders import ChunkRows, Loaded, StoredPlanRow
from service.store.rangeread import ChunkSource
from service.store.types import (
    ContactChunk,
    DayCounts,
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
)
from service.store.writer import PendingWrite, Prepared, State, WriteOptions


class Transactions(Protocol):
    """Units of work. Every write happens inside :meth:`transaction`."""

    @property
    def path(self) -> Path:
        """Where the database is (for messages)."""
        ...

    @property
    def in_transaction(self) -> bool:
        """True inside :meth:`transaction` or :meth:`snapshot`."""
        ...

    @property
    def in_write_transaction(self) -> bool:
        """True inside :meth:`transaction`: writes commit together."""
        ...

    @property
    def in_snapshot(self) -> bool:
        """True inside a read :meth:`snapshot`: writes raise instead of vanishing."""
        ...

    def transaction(self) -> AbstractAsyncContextManager[None]:
        """A write transaction, committed on success and rolled back on any
        error. Raises :class:`~service.errors.StoreBusy` when the write lock
        stays taken, :class:`~service.errors.StoreError` for anything else."""
        ...

    def snapshot(self) -> AbstractAsyncContextManager[None]:
        """A read transaction: every read inside sees one consistent state."""
        ...

    async def commit_and_resume(self, seconds: float | None = None) -> None:
        """Inside :meth:`transaction`: commit the work so far, leave the write
        lock to other writers for ``seconds`` (None: the store's writer gap),
        take it again and go on in a new transaction (which the enclosing
        context commits or rolls back)."""
        ...

    def held_s(self) -> float:
        """Seconds the open write transaction has held the lock (0 without one)."""
        ...

    last_commit_s: float
    """How long this store's last COMMIT took."""

    async def data_version(self) -> int:
        """A number that changes when another connection commits."""
        ...

    def checkpoints_outside_lock(self) -> AbstractAsyncContextManager[None]:
        """Inside: commits do not checkpoint the WAL; a thread with its own
        connection does, beside them (a long pass of write transactions)."""
        ...

    def checkpoints_beside(self) -> AbstractAsyncContextManager[None]:
        """Inside: a thread with its own connection checkpoints the WAL every
        50 ms and right after each commit; the connection's own setting is
        left as it is (the daemon's tick)."""
        ...

    def checkpoint_soon(self) -> None:
        """After a large commit: the checkpoint thread of
        :meth:`checkpoints_outside_lock`, or whoever waits on
        :meth:`checkpoint_wake`, checkpoints now (before an upstream commit would)."""
        ...

    def checkpoint_wake(self) -> anyio.Event:
        """An event that the next :meth:`checkpoint_soon` sets."""
        ...

    async def check_writable(self) -> None:
        """Raise :class:`~service.errors.StoreUnavailable` unless a write
        transaction can start (a read-only or vanished database)."""
        ...

    async def use_short_lock_waits(self) -> None:
        """Wait for another writer's lock in short, cancellable steps (the daemon)."""
        ...

    def run_small_statements_inline(self) -> None:
        """BEGIN, data_version and point reads of state and events run on the
        calling thread from now on (the daemon's store)."""
        ...

    def statements_inline(self, on: bool = True) -> AbstractContextManager[None]:
        """Inside: statements run on the calling thread, without a thread
        switch (short statements only: a small batch)."""
        ...

    async def set_wal_autocheckpoint(self, pages: int) -> None:
        """Checkpoint the WAL in this connection's commits once it holds
        ``pages`` pages (0: never; the daemon checkpoints on a connection of
        its own, :mod:`service.daemon.checkpoints`)."""
        ...

    async def set_cache_mib(self, mib: int) -> None:
        """The connection's page cache, in MiB (a command's bulk work: the
        plan's indexes kept in memory)."""
        ...

    @property
    def waiting_for_lock(self) -> bool:
        """A transaction is waiting for another writer's lock (nothing of ours is open)."""
        ...

    async def close(self) -> None:
        """Release the connection."""
        ...


class EventQueue(Protocol):
    """The events inbox that upstream triggers and explicit events fill (SPEC 8)."""

    async def fetch_events(self, limit: int, after_id: int = 0) -> list[Event]:
        """Up to ``limit`` events with ``id > after_id``, in id order."""
        ...

    async def delete_events(self, ids: Iterable[int]) -> int:
        """Consume the events ``ids``; how many there were."""
        ...

    async def delete_events_upto(self, max_id: int) -> int:
        """Consume every event with ``id <= max_id``; how many there were."""
        ...

    async def enqueue_event(
        self,
        kind: str,
        contact_id: int | None = None,
        ref: str | None = None,
        detail: str | None = None,
    ) -> int:
        """Append an explicit event; its id."""
        ...

    async def events_summary(self) -> EventsSummary:
        """Pending count and the oldest pending event's time."""
        ...

    async def pending_event_count(self) -> int:
        """Events not yet consumed."""
        ...

    async def max_event_id(self) -> int:
        """The highest event id (0 when there is none)."""
        ...


class StateStore(Protocol):
    """mailplan's key/value state (``scheduler_state``)."""

    async def get_state(self, key: str) -> str | None:
        """The value of ``key``, or ``None``."""
        ...

    async def set_state(self, key: str, value: str) -> None:
        """Store ``value`` under ``key``."""
        ...

    async def delete_state(self, key: str) -> None:
        """Forget ``key``."""
        ...

    async def last_tick(self) -> date | None:
        """The local date of the last calendar tick (SPEC 8.4)."""
        ...

    async def set_last_tick(self, day: date) -> None:
        """Record the tick of ``day``."""
        ...

    async def capacity_snapshot(self, day: date) -> int | None:
        """The contacts-with-email count snapshotted for ``day`` (SPEC 6)."""
        ...

    async def save_capacity_snapshot(self, day: date, contacts_with_email: int) -> None:
        """Snapshot the count for ``day``."""
        ...

    async def plan_fingerprint(self) -> str | None:
        """The planning fingerprint the stored plan follows (SPEC 4)."""
        ...

    async def plan_basis(self) -> PlanBasis:
        """The fingerprint, settings JSON and full-recompute day of the stored plan."""
        ...

    async def set_plan_basis(
        self, fingerprint: str, settings_json: str, full_recompute_day: date | None
    ) -> None:
        """Record what the stored plan follows (inside a transaction)."""
        ...


class RunLog(Protocol):
    """The audit table of runs (``scheduler_runs``, SPEC 3)."""

    async def start_run(self, trigger: str, today: date | None) -> int:
        """Open a run record; its id."""
        ...

    async def finish_run(
        self,
        run_id: int,
        stats: RunStats,
        *,
        duration_ms: float | None = None,
        error: str | None = None,
    ) -> None:
        """Close the run record with what it did."""
        ...

    async def last_runs(self, limit: int = 10) -> list[RunRecord]:
        """The most recent runs, newest first."""
        ...


class PlanSource(Protocol):
    """The planner's inputs as stored."""

    async def load_campaigns(self) -> Campaigns:
        """Every campaign type and instance."""
        ...

    async def contact_count_with_email(self) -> int:
        """N of the daily cap (SPEC 6): contacts with a non-empty email."""
        ...

    async def load_contacts(
        self, ids: Iterable[int], *, since: date | None = None
    ) -> list[ContactData]:
        """The contacts ``ids`` with their targeting, engagement and history."""
        ...

    def iter_contact_chunks(
        self, chunk_size: int, *, since: date | None = None
    ) -> AsyncIterator[ContactChunk]:
        """Every contact, in id order, in chunks."""
        ...

    def iter_loaded_chunks(
        self, chunk_size: int, *, since: date | None = None
    ) -> AsyncIterator[Loaded]:
        """Every contact with its stored plan rows, in id order, in chunks."""
        ...

    async def load_chunk(
        self,
        after: int | None,
        chunk_size: int,
        *,
        since: date | None = None,
        engagement_since: date | None = None,
        plan_rows: bool = True,
    ) -> Loaded:
        """Up to ``chunk_size`` contacts with ``id > after``."""
        ...

    async def load_scope(
        self,
        scope: Scope,
        *,
        since: date | None = None,
        engagement_since: date | None = None,
        with_campaigns: bool = False,
    ) -> Loaded:
        """The contacts of ``scope`` with their stored plan rows (and the
        campaigns in ``Loaded.campaigns`` with ``with_campaigns``)."""
        ...

    async def read_chunk(
        self,
        after: int | None,
        limit: int,
        *,
        since: date | None,
        engagement_since: date | None,
        scope: Scope | None = None,
    ) -> ChunkRows:
        """A chunk's rows for planning elsewhere (run it in a snapshot)."""
        ...

    async def event_seq(self) -> int:
        """The last event id ever handed out (moves with every upstream change)."""
        ...

    def chunk_source(self) -> ChunkSource | None:
        """Where a planning process can read chunks itself; None: it cannot."""
        ...

    async def chunk_bound(self, after: int | None, size: int) -> int:
        """The last id of a chunk of ``size`` contacts after ``after`` (``MAX_ID``
        when fewer follow)."""
        ...


class PlanWriter(Protocol):
    """Writes plan rows by identity (SPEC 7) and the per-contact review dates."""

    async def write_plans(
        self, loaded: Loaded, plans: Iterable[ContactPlan], options: WriteOptions
    ) -> WriteResult:
        """Insert, update and delete plan rows so the stored plan of the
        contacts in ``loaded`` becomes ``plans``; unchanged rows untouched."""
        ...

    async def write_prepared(
        self,
        prepared: Prepared,
        options: WriteOptions,
        *,
        stored: list[StoredPlanRow] | None = None,
        states: Mapping[int, State] | None = None,
        trust: bool = True,
    ) -> WriteResult:
        """Write prepared plans of a scope (a chunk planned elsewhere)."""
        ...

    async def diff_ahead(
        self, prepared: Prepared, options: WriteOptions, *, trust: bool = True
    ) -> PendingWrite:
        """Compare prepared plans with the stored rows now (in a read
        snapshot, before the write lock): what :meth:`write_pending` writes."""
        ...

    async def write_pending(self, pending: PendingWrite, options: WriteOptions) -> WriteResult:
        """Write a diff found by :meth:`diff_ahead` (inside a write
        transaction), compared again if anyone else changed anything since."""
        ...

    async def others_changes(self) -> tuple[int, int]:
        """The event sequence and the plan version less this store's own
        bumps: while both are the same, nobody else changed anything."""
        ...

    async def clear_balance_gaps(self) -> None:
        """Forget the days recorded as needing a rebalance."""
        ...

    async def set_review_dates(self, items: Iterable[tuple[int, date | None]]) -> None:
        """Store each contact's review date (SPEC 5.11)."""
        ...

    async def due_contacts(self, today: date) -> list[int]:
        """Contacts whose review date has come by ``today``."""
        ...

    async def move_caught_up(self, today: date, run_id: int, lo: int, hi: int) -> CatchUpStep:
        """Catch up to ``today`` the plan rows of contacts ``lo..hi`` whose
        desired date has passed, of the contacts not due on ``today`` (the
        tick's catch-up move, SPEC 5.11), with their journal entries."""
        ...

    async def caught_up_rows(self, today: date, lo: int, hi: int) -> CaughtUp:
        """The rows :meth:`move_caught_up` would move, with what the read saw
        of others' changes (a read)."""
        ...

    async def move_caught_up_rows(self, today: date, run_id: int, found: CaughtUp) -> CatchUpStep:
        """:meth:`move_caught_up` of the rows ``found`` that still are to move
        (read again inside the lock only if others changed anything since)."""
        ...


class BalanceStore(Protocol):
    """What balancing needs from the stored plan (SPEC 6).

    Every method reads or writes only non-skipped plan rows; none sees the
    balancer's own updates before :meth:`save`, which the driver calls last
    (by rows) or once per chunk of desired dates (global mode).
    """

    async def last_desired(self) -> date | None:
        """The latest desired date; ``None`` when there is no row."""
        ...

    async def rows_by_desired(self, lo: date, hi: date) -> list[StoredRow]:
        """Rows with ``lo <= desired date < hi``."""
        ...

    async def ed_rows_by_desired(self, days: Sequence[date]) -> list[StoredRow]:
        """``effective_date`` rows whose desired date is one of ``days``."""
        ...

    async def ed_counts(
        self, days: Sequence[date] | None, at_most: int | None = None
    ) -> dict[date, int]:
        """How many ``effective_date`` rows have each of ``days`` (every
        date if ``None``) as desired date; with ``at_most`` (and ``days``),
        each count stops there (a date may then be given as 0)."""
        ...

    async def rows_before(self, day: date) -> list[StoredRow]:
        """Rows scheduled before ``day``."""
        ...

    async def kept_last(self, day: date, n: int) -> list[StoredRow]:
        """The last ``n`` rows, in sweep order (SPEC 6), of those scheduled on
        ``day`` whose allowed interval does not end by ``day``; ascending."""
        ...

    async def carried_first(self, day: date, n: int) -> list[StoredRow]:
        """The first ``n`` rows (all if ``n < 0``), in sweep order, of those
        with step-1 date on or before ``day`` scheduled after it."""
        ...

    async def carried_arrivals(self, day: date, n: int) -> list[StoredRow]:
        """The first ``n`` rows, in sweep order, of those with step-1 date
        ``day`` scheduled after it (the rows a day adds to the carry)."""
        ...

    async def day_rows(self, day: date) -> list[StoredRow]:
        """Every row scheduled on ``day`` (with a step-1 date)."""
        ...

    async def take_gaps(self) -> tuple[list[StoredRow], list[StoredRow]]:
        """Consume the balance gaps: rows others took out of the sweep, with
        the dates they had, and rows others put back into it."""
        ...

    async def read_gaps(self, upto: int) -> tuple[list[StoredRow], list[StoredRow]]:
        """The balance gaps recorded up to gap ``upto``, as :meth:`take_gaps`
        gives them, without taking them."""
        ...

    async def forget_gaps_upto(self, upto: int) -> None:
        """Take the gaps recorded up to gap ``upto`` (inside a write transaction)."""
        ...

    def outside_write_lock(self) -> AbstractAsyncContextManager[None]:
        """Inside a write transaction: commit, run the body's reads in a read
        snapshot, then take the write lock again."""
        ...

    async def gap_mark(self) -> int:
        """The id of the last balance gap recorded so far (0: none)."""
        ...

    async def settle_gaps(self, since: int, reads: Sequence[tuple[date, date, int]]) -> int:
        """Forget the gaps after ``since`` that a global rebalance's reads
        (desired dates ``[lo, hi)`` read when the last gap was ``mark``)
        already saw; how many stay."""
        ...

    async def retarget_gaps(self, since: int, pending: Mapping[RowKey, tuple[date, date]]) -> bool:
        """Between the parts of a balance saved in parts: give each gap
        recorded after ``since`` of a row still in ``pending`` (its move not
        saved yet: the row was taken first) the move's (step-1, scheduled)
        dates, where the balance the other rows are saved with has it, and
        the counts move it with its part. Whether a row came back meanwhile
        (then the result is no basis)."""
        ...

    async def plan_version(self) -> tuple[int, int]:
        """(transactions that changed plan rows or their balance, in any
        process; how many of them were this store's)."""
        ...

    async def balance_days(self) -> DayCounts:
        """The per-day counts of swept rows: (step-1 rows, scheduled rows)."""
        ...

    async def balance_days_drift(self) -> int:
        """How many days' per-day counts differ from the table."""
        ...

    async def add_balance_days(self, deltas: Mapping[date, Sequence[int]]) -> None:
        """Add differences to the per-day counts."""
        ...

    async def put_balance_days(self, counts: Iterable[tuple[date, int, int]]) -> None:
        """Replace the per-day counts."""
        ...

    async def save(self, updates: Sequence[Update]) -> None:
        """Set the step-1 and scheduled dates of rows by identity (and
        anything derived from the scheduled date). Only rows whose values
        change are passed."""
        ...


class PlanReader(Protocol):
    """The stored plan as the commands and the handlers read it."""

    async def export_rows(self, contact_ids: Iterable[int] | None = None) -> list[ExportRow]:
        """Stored plan rows sorted by (contact_id, email_type, event date)."""
        ...

    def iter_export_rows(self, batch: int = 20_000) -> AsyncIterator[ExportRow]:
        """Like :meth:`export_rows` for every contact, streamed."""
        ...

    async def compare_plan(self, expected: Sequence[ExportRow]) -> DriftReport:
        """The differences between the stored plan and ``expected``."""
        ...

    async def daily_load(self, start: date, end: date) -> list[tuple[date, str, int]]:
        """Planned e-mails per scheduled day and type, ``start..end``."""
        ...

    async def campaign_type_targets_all(self, name: str) -> bool | None:
        """The type's ``target_all_contacts`` flag; ``None`` if no such type."""
        ...

    async def contacts_of_campaign_instance(self, instance_id: int) -> set[int]:
        """Contacts the instance targets or holds any row of."""
        ...

    async def contacts_of_campaign_type(self, name: str) -> set[int]:
        """Contacts of every instance of the type, and of its rows."""
        ...


class PlanJournal(Protocol):
    """The plan journal (SPEC 7); the plan writer and ``save`` append to it."""

    async def prune_journal(self, before: date, limit: int = ...) -> int:
        """Delete up to ``limit`` of the oldest entries written before ``before``."""
        ...

    async def journal_of(self, contact_id: int) -> list[JournalEntry]:
        """A contact's journal, oldest first."""
        ...

    async def journal_of_contacts(self, ids: Iterable[int]) -> list[JournalEntry]:
        """The journal of several contacts, by contact then oldest first."""
        ...

    async def journal_summary(self) -> tuple[int, str | None, str | None]:
        """Number of entries, the oldest and the newest time."""
        ...


class ReportReader(Protocol):
    """What the reporting commands read besides the plan rows."""

    async def history_contacts_between(self, start: date, end: date) -> list[int]:
        """Contacts with a history row whose send date may be in ``start..end``."""
        ...

    async def history_rows_of(self, ids: Iterable[int]) -> list[tuple[Any, ...]]:
        """History rows of some contacts (id, contact, type, status, event
        date, actual send time, ``sent_at``, scheduled date, campaign instance)."""
        ...

    async def contacts_done(self, after: int) -> tuple[int, int]:
        """Contacts with an id up to ``after``, and all contacts."""
        ...

    async def wanted_on(self, day: date) -> tuple[int, int]:
        """Non-skipped plan rows desired on ``day``, and how many are effective-date ones."""
        ...

    async def max_contact_id(self) -> int:
        """The highest contact id."""
        ...

    async def skipped_load(self, start: date, end: date) -> dict[date, int]:
        """Skipped plan rows per desired day."""
        ...

    async def sent_load(self, start: date, end: date) -> dict[date, int]:
        """History rows per send date."""
        ...


class Store(
    Transactions,
    EventQueue,
    StateStore,
    RunLog,
    PlanSource,
    PlanWriter,
    BalanceStore,
    PlanReader,
    PlanJournal,
    ReportReader,
    Protocol,
):
    """Everything mailplan asks of one organisation database."""
