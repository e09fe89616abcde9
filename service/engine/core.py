"""Recomputing plans: load, plan, write, rebalance (SPEC 5-7, 11).

- :func:`recompute_contacts` is the incremental step the daemon runs for a
  batch of events, inside the caller's write transaction: plan the affected
  contacts, write the difference, rebalance only where the change moves the sweep.
- :func:`full_recompute` is the reference: every contact, chunk by chunk (one
  short transaction each), then a global rebalance.
- :func:`dry_run_plan` computes what a full recompute would store, in memory,
  with the pure :func:`~service.planning.balance.balance`.
- :func:`verify` compares the stored plan with a dry run and can repair it.
"""

from __future__ import annotations

import json
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from typing import Protocol

import structlog

from service.engine.incremental import CountsMismatch
from service.engine.pacing import WRITE_TARGET_S
from service.engine.rebalance import rebalance
from service.planning.balance import Capacity, capacity
from service.planning.contacts import resolve_contact, zip_lookup
from service.planning.memo import Memo
from service.planning.model import (
    Campaigns,
    ContactData,
    ContactPlan,
)
from service.planning.params import (
    DEFAULT_SEND_TIME,
    DEFAULT_TIMEZONE,
    BalanceParams,
    PlanParams,
    send_time_column,
)
from service.planning.plan import plan_contact
from service.planning.rules import RuleBook
from service.store import (
    BalanceDelta,
    Loaded,
    RunStats,
    Scope,
    Store,
    WriteOptions,
)
from service.store.base import WRITER_GAP_EVERY_S

log = structlog.get_logger(__name__)

DEFAULT_CHUNK = 2000
"""Contacts per chunk of a full recompute: one short transaction each."""

HISTORY_MARGIN_DAYS = 800
"""History rows older than this (beyond the planning windows) are not read."""


class SettingsLike(Protocol):
    """What :meth:`PlanContext.from_settings` reads of the configuration."""

    @property
    def timezone(self) -> str: ...
    @property
    def send_time(self) -> str: ...
    @property
    def send_in_contact_timezone(self) -> bool: ...
    def plan_params(self) -> PlanParams: ...
    def balance_params(self) -> BalanceParams: ...
    def rules(self) -> RuleBook: ...
    def fingerprint(self) -> str: ...
    def planning_json(self) -> str: ...


@dataclass(frozen=True, slots=True)
class PlanContext:
    """Everything planning needs besides the data and *today*.

    ``campaigns`` None means: read them from the database on every recompute
    (they change through events; reading a few rows is cheap and never stale).
    """

    rules: RuleBook
    plan: PlanParams = field(default_factory=PlanParams)
    balance: BalanceParams = field(default_factory=BalanceParams)
    send_time: str = send_time_column(DEFAULT_SEND_TIME)
    timezone: str = DEFAULT_TIMEZONE
    send_in_contact_timezone: bool = False
    campaigns: Campaigns | None = None
    chunk_size: int = DEFAULT_CHUNK
    planning_workers: int | None = None
    """Processes that plan a full recompute's chunks; None: the default
    (:func:`service.engine.chunks.default_workers`), 0: in this process."""
    journal_retention_days: int = 400
    fingerprint: str = ""
    """The planning fingerprint of the settings (SPEC 4); empty for a context
    not built from settings, whose full recomputes record nothing."""
    settings_json: str = ""
    memo: Memo = field(default_factory=Memo, compare=False, repr=False)
    """Answers shared by the contacts this context plans (pure functions of
    their keys; see :mod:`service.planning.memo`): it lives as long as the
    settings the context was made for."""

    @classmethod
    def from_settings(cls, settings: SettingsLike, **overrides: object) -> PlanContext:
        send_time = send_time_column(settings.send_time)
        ctx = cls(
            rules=settings.rules(),
            plan=settings.plan_params(),
            balance=settings.balance_params(),
            send_time=send_time,
            timezone=settings.timezone,
            send_in_contact_timezone=settings.send_in_contact_timezone,
            journal_retention_days=getattr(settings, "journal_retention_days", 400),
            fingerprint=settings.fingerprint(),
            settings_json=settings.planning_json(),
        )
        return replace(ctx, **overrides) if overrides else ctx  # type: ignore[arg-type]

    def history_since(self, today: date) -> date:
        """The oldest history a plan can depend on, with a wide margin."""
        p = self.plan
        span = max(p.period_days, p.followup_lookback_days, p.horizon_days) + HISTORY_MARGIN_DAYS
        return today - timedelta(days=span)

    def engagement_since(self, today: date) -> date:
        """Clicks and events older than the follow-up lookback cannot matter (5.7)."""
        return today - timedelta(days=self.plan.followup_lookback_days + 7)


# -- shared steps -------------------------------------------------------------


async def capacity_for(
    store: Store, ctx: PlanContext, today: date, *, save: bool, count: int | None = None
) -> Capacity:
    """The day's capacity from its snapshot of N; taking one if there is none
    (stored unless ``save`` is false, as in a dry run) (SPEC 6). ``count`` is
    N as the caller just counted it (outside the write lock)."""
    n = await store.capacity_snapshot(today)
    if n is None:
        n = count if count is not None else await store.contact_count_with_email()
        if save:
            await store.save_capacity_snapshot(today, n)
    return capacity(ctx.balance, n)


def timezones(ctx: PlanContext, contacts: Sequence[ContactData]) -> dict[int, str | None] | None:
    """Each contact's send zone (``send_in_contact_timezone``), else None."""
    if not ctx.send_in_contact_timezone:
        return None
    zones: dict[int, str | None] = {}
    for d in contacts:
        info = zip_lookup(d.contact.zip_code)
        zones[d.contact.id] = (info.timezone if info and info.timezone else None) or ctx.timezone
    return zones


def plan_all(
    ctx: PlanContext, campaigns: Campaigns, contacts: Iterable[ContactData], today: date
) -> list[ContactPlan]:
    """The plans of ``contacts`` on ``today`` under the context's rules and memo."""
    rules, params, memo = ctx.rules, ctx.plan, ctx.memo
    return [plan_contact(d, campaigns, rules, params, today, memo) for d in contacts]


def _log_malformed(contacts: Iterable[ContactData], today: date, memo: Memo) -> None:
    for d in contacts:
        problems = resolve_contact(d.contact, today, memo).problems
        if problems:
            log.warning("malformed_contact_data", contact_id=d.contact.id, problems=list(problems))


async def load_chunk(
    store: Store, ctx: PlanContext, after: int | None, limit: int, today: date, plan_rows: bool
) -> Loaded:
    """The next ``limit`` contacts after ``after`` with the history the plan can need."""
    return await store.load_chunk(
        after,
        limit,
        since=ctx.history_since(today),
        engagement_since=ctx.engagement_since(today),
        plan_rows=plan_rows,
    )


async def _write(
    store: Store,
    ctx: PlanContext,
    loaded: Loaded,
    plans: list[ContactPlan],
    run_id: str,
    today: date,
) -> tuple[RunStats, BalanceDelta]:
    options = WriteOptions(
        run_id=run_id,
        today=today,
        send_time=ctx.send_time,
        timezones=timezones(ctx, loaded.contacts),
    )
    result = await store.write_plans(loaded, plans, options)
    stats = RunStats(contacts_recomputed=len(loaded.contacts))
    stats.add_writes(result.stats)
    return stats, result.delta


# -- incremental (SPEC 8.3) -------------------------------------------------------


async def recompute_contacts(
    store: Store,
    ctx: PlanContext,
    ids: Iterable[int],
    today: date,
    run_id: int | str,
    *,
    rebalance_windows: bool = True,
    report_malformed: bool = False,
    pauses: bool = True,
    collect: BalanceDelta | None = None,
) -> RunStats:
    """Recompute the given contacts, write their plans, rebalance where the
    change moves the sweep (SPEC 8.3). ``report_malformed`` logs one line per contact whose
    data has problems (SPEC 13: the daemon's batches of upstream changes).
    Runs inside the caller's transaction, which also consumes the events and
    records the run. Ids of contacts that no longer exist lose their plan rows.

    ``rebalance_windows=False`` leaves balancing to a global rebalance the
    caller runs afterwards (the tick); the caller must first have invalidated
    the stored balance basis (:func:`invalidate_balance`), so that any incremental
    rebalance in between falls back to a global one.

    A rebalance that has to go global commits part way (see :func:`_rebalance`);
    ``pauses=False`` keeps everything in the caller's one transaction.
    ``collect`` gathers what the writes changed for the sweep (with
    ``rebalance_windows=False``: the caller's closing rebalance)."""
    if not store.in_write_transaction:
        raise RuntimeError("recompute_contacts must run inside store.transaction()")
    id_list = sorted(set(ids))
    if not id_list:
        return RunStats()
    # The campaigns are read with the contacts, in the same hand-over to
    # the store (never cached: they change through upstream writes).
    loaded = await store.load_scope(
        Scope.of_ids(id_list),
        since=ctx.history_since(today),
        engagement_since=ctx.engagement_since(today),
        with_campaigns=ctx.campaigns is None,
    )
    campaigns = ctx.campaigns or loaded.campaigns or await store.load_campaigns()
    plans = plan_all(ctx, campaigns, loaded.contacts, today)
    if report_malformed:
        _log_malformed(loaded.contacts, today, ctx.memo)
    stats, delta = await _write(store, ctx, loaded, plans, str(run_id), today)
    stats.contacts_recomputed = len(id_list)
    if collect is not None:
        collect.extend(delta)
    if rebalance_windows:
        # Also with no change of its own: rows others took (balance gaps).
        stats.add(await _rebalance(store, ctx, today, delta, pauses=pauses))
    return stats


async def rebalance_all(store: Store, ctx: PlanContext, today: date) -> RunStats:
    """Global rebalance (the tick's, SPEC 8.4), inside the caller's transaction."""
    return await _rebalance(store, ctx, today, None)


BALANCE_BASIS = "balance_basis"
"""State key: the day and capacity of the balance stored in the plan rows."""


async def invalidate_balance(store: Store) -> None:
    """Mark the stored balance as not a global balance (inside a transaction):
    the next rebalance of any kind runs globally."""
    await store.set_state(BALANCE_BASIS, "")


SNAPSHOT_WALK_GAPS = 200
"""An incremental rebalance that takes up at least this many balance gaps (a
sender's commit of a thousand rows: the carry it frees is pulled forward)
walks its days in a read snapshot instead of holding the write lock. Others
(a single change, a staged or fan-out chunk: its walk is short, unless
the last was long, :data:`SNAPSHOT_WALK_DAYS`) hold it:
committing before the walk and reading in a snapshot beside upstream commits
made the fan-out's upstream COMMITs slower (p99 43 -> 80 ms at 1M)."""

SNAPSHOT_WALK_DAYS = 200
"""An incremental rebalance whose store's last walk went through at least
this many days walks in a read snapshot too: on a book whose every day is
full (a small daily cap) the carry runs to the end of the plan and each
walk goes through hundreds of days (220-350 ms of the lock a batch at
20,000 contacts with a cap of 3). At 1M contacts with the default cap a
walk goes through a few days."""

_LAST_WALK_DAYS: weakref.WeakKeyDictionary[Store, int] = weakref.WeakKeyDictionary()
"""Per store: the days its last incremental rebalance went through."""

GLOBAL_CHUNK_DAYS = 4
"""Days of desired dates a global rebalance reads (and commits) at a time."""

COMMIT_EVERY_S = WRITER_GAP_EVERY_S
"""An incremental rebalance that saves in parts (the tick's, a large
batch's) commits before it would hold the lock this long, its COMMIT
included (:class:`_CommitPause`), and leaves upstream writers the store's
writer gap (:class:`~service.store.base.WriterGaps`) before going on."""

GLOBAL_COMMIT_EVERY_S = WRITE_TARGET_S
"""The same for a global rebalance (the closing one of a full recompute):
30 ms, as a full recompute's chunks, as its saves are of finer grain
(``rebalance.PAUSED_SAVE_BATCH``). An upstream writer that came at the start
of a transaction gets in at its busy handler's attempt at 33 ms."""
GLOBAL_COMMIT_GAP_S: float | None = None
"""A fixed gap instead (tests); None: the store's gap for the streak."""

COMMIT_RATIO = 1.0
"""What a pausing rebalance expects its first COMMIT to take, relative to
the statements before it (then: what the last one took, within
:data:`MIN_COMMIT_RATIO` and :data:`MAX_COMMIT_RATIO`)."""
MIN_COMMIT_RATIO = 0.25
MAX_COMMIT_RATIO = 4.0


async def rebalance_delta(
    store: Store, ctx: PlanContext, today: date, delta: BalanceDelta
) -> RunStats:
    """Rebalance where ``delta`` moves the sweep (global when the stored
    balance is no basis for an incremental one), inside the caller's
    transaction."""
    return await _rebalance(store, ctx, today, delta)


async def _rebalance(
    store: Store,
    ctx: PlanContext,
    today: date,
    delta: BalanceDelta | None,
    *,
    pauses: bool = True,
) -> RunStats:
    # An incremental rebalance is exact only on top of a global balance for the
    # same day and capacity, with per-day counts equal to the table
    # (service.engine.rebalance); anything else goes global.
    cap = await capacity_for(store, ctx, today, save=True)
    basis = _balance_basis(cap, today)
    if delta is not None and await store.get_state(BALANCE_BASIS) != basis:
        delta = None
    if delta is not None:
        # A large move (the carry a sender's commit of a thousand rows pulls
        # forward) is saved in parts with the lock left to upstream writers
        # between them; from the first such commit until the end the stored
        # balance is no basis (also after a crash there).
        pause = _commit_pause(store, first=invalidate_balance) if pauses else None
        version, own = await store.plan_version()
        # After a sender's large commit the days are walked in a read
        # snapshot, the lock left to upstream writers (the walk of 15,000
        # rows held it for 0.5-1 s); the batch's writes are committed first.
        # (The gap mark is the last gap's id: ids start again at 1 once every
        # gap is taken, so it counts the gaps pending.)
        snapshot = pause is not None and (
            await store.gap_mark() >= SNAPSHOT_WALK_GAPS
            or _LAST_WALK_DAYS.get(store, 0) >= SNAPSHOT_WALK_DAYS
        )
        if snapshot:
            await invalidate_balance(store)
        try:
            # A walk in a snapshot is a long one: its statements go to the
            # connection's thread, also from a small batch whose own ran
            # inline (the loop stays free meanwhile).
            with store.statements_inline(False) if snapshot else nullcontext():
                result = await rebalance(store, cap, today, delta, pause=pause,
                                         reads_in_lock=True, walk_in_snapshot=snapshot)  # fmt: skip
        except CountsMismatch as exc:
            log.warning("balance_counts_mismatch", error=str(exc), action="global rebalance")
        else:
            _LAST_WALK_DAYS[store] = result.days_swept
            if pause is not None and (pause.commits or snapshot):
                now, own_now = await store.plan_version()
                if result.unsettled or now - version != own_now - own:
                    # Another process wrote plan rows, or a row came back,
                    # while it committed part way: the next rebalance is global.
                    log.info("rebalance_not_a_basis", reason="others wrote while it saved in parts")
                else:
                    await store.set_state(BALANCE_BASIS, basis)
            return RunStats(windows_rebalanced=result.windows, rows_moved=result.rows_changed)
    # A global rebalance commits as it goes (short transactions for
    # upstream writers, as the store's writer gap); until it has finished, the
    # stored balance is no basis for an incremental one, also after a crash.
    await invalidate_balance(store)
    # Gaps recorded so far are covered by this pass; of those recorded while
    # it commits part way, the ones its reads did not see stay for the
    # incremental rebalance after.
    await store.clear_balance_gaps()
    version, own = await store.plan_version()
    # Long: its statements go to the connection's thread, also from a small
    # batch whose own statements ran inline (the loop stays free).
    with store.statements_inline(False):
        result = await rebalance(
            store,
            cap,
            today,
            None,
            chunk_days=GLOBAL_CHUNK_DAYS,
            pause=_commit_pause(store, mark=GLOBAL_COMMIT_EVERY_S) if pauses else None,
        )
    now, own_now = await store.plan_version()
    if now - version == own_now - own:
        await store.set_state(BALANCE_BASIS, basis)
    else:
        # Another process wrote plan rows while this pass committed part way:
        # its result is no basis; the next rebalance goes global again.
        log.warning("global_rebalance_overlapped", others=(now - version) - (own_now - own))
    return RunStats(windows_rebalanced=result.windows, rows_moved=result.rows_changed)


BASIS_VERSION = "2"
"""Changes when what a global rebalance stores besides the dates changes (2:
the per-day counts): a balance stored by an older version is no basis."""


def _balance_basis(cap: Capacity, today: date) -> str:
    c = cap
    return f"v{BASIS_VERSION}/{today.isoformat()}/{c.cap}/{c.threshold}/{c.ed_limit}/{c.window}"


def _parse_basis(text: str | None) -> tuple[Capacity, date] | None:
    """The capacity and day of a stored balance basis of this version."""
    parts = (text or "").split("/")
    if len(parts) != 6 or parts[0] != f"v{BASIS_VERSION}":
        return None
    try:
        day = date.fromisoformat(parts[1])
        c, t, limit, w = (int(x) for x in parts[2:])
    except ValueError:
        return None
    return Capacity(cap=c, threshold=t, ed_limit=limit, window=w), day


class _CommitPause:
    """A pause that commits and leaves upstream writers the store's writer gap
    before the lock has been held its mark (:data:`COMMIT_EVERY_S`,
    :data:`GLOBAL_COMMIT_EVERY_S`), its COMMIT included.

    The COMMIT of rows spread over the table (a rebalance's moves) takes
    longer than the statements that changed them, about twice as long at 1M
    contacts: committing only once the statements had held the lock 25 ms
    held it 90-100 ms. So it commits when one more step like the last one,
    with the commit the work so far predicts (as long, relative to the
    statements, as the last commit was), would pass the mark."""

    def __init__(
        self,
        store: Store,
        first: Callable[[Store], Awaitable[None]] | None = None,
        clock: Callable[[], float] = time.monotonic,
        *,
        mark: float | None = None,
    ) -> None:
        self.store = store
        self.mark = mark
        """The longest hold aimed at (None: :data:`COMMIT_EVERY_S`)."""
        self.first = first
        """Awaited in the transaction of the first commit, before it."""
        self.clock = clock
        self.last = clock()
        self.ratio = COMMIT_RATIO
        """The last commit's length relative to the hold before it."""
        self.commits = 0
        """How many times it committed."""

    async def __call__(self) -> None:
        now = self.clock()
        step, self.last = now - self.last, now
        held = self.store.held_s()
        mark = COMMIT_EVERY_S if self.mark is None else self.mark
        if (held + step) * (1.0 + self.ratio) >= mark:
            if self.first is not None and not self.commits:
                await self.first(self.store)
            held = self.store.held_s()
            # None: the store's writer gap for the run so far (WriterGaps).
            await self.store.commit_and_resume(GLOBAL_COMMIT_GAP_S)
            if held > 0:
                ratio = self.store.last_commit_s / held
                self.ratio = min(MAX_COMMIT_RATIO, max(MIN_COMMIT_RATIO, ratio))
            self.commits += 1
            self.last = self.clock()


def _commit_pause(
    store: Store,
    first: Callable[[Store], Awaitable[None]] | None = None,
    *,
    mark: float | None = None,
) -> _CommitPause:
    return _CommitPause(store, first, mark=mark)


# -- full recompute (the reference) ------------------------------------------------

PROGRESS_KEY = "full_recompute_progress"
"""State key of a full recompute in flight: its run and the last contact id done."""


def progress_text(run_id: int, after: int) -> str:
    return json.dumps({"run_id": run_id, "after": after})


def _no_progress(after: int) -> None:
    return None


async def record_full_plan(store: Store, ctx: PlanContext, today: date) -> None:
    """Record, inside the transaction that completes a full recompute, the
    settings it planned under and its *today* (SPEC 4): a daemon with the
    same fingerprint then knows the plan is its own and does not plan
    everything again."""
    if ctx.fingerprint:
        await store.set_plan_basis(ctx.fingerprint, ctx.settings_json, today)


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0


async def _record_failure(
    store: Store, run_id: int, stats: RunStats, started: float, exc: Exception
) -> None:
    if store.in_transaction:
        return
    try:
        async with store.transaction():
            await store.finish_run(run_id, stats, duration_ms=_ms(started), error=repr(exc))
    except Exception as second:  # the original error matters more
        log.warning("run_failure_not_recorded", run_id=run_id, error=str(second))
