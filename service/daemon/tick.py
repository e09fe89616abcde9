"""The calendar tick (SPEC 8.4): what the passage of a local day changes.

Once per local date the daemon stores *today*, takes the day's capacity
snapshot, moves the caught-up rows of the contacts that are not due to *today*
(the catch-up move, :mod:`service.planning.review`), recomputes exactly the
contacts whose review date has come (5.11) and rebalances: from the balance
of the day before, by the rows the move and the recomputes changed
(:func:`~service.engine.rebalance_from`); globally when that balance is no
basis. Whether a
tick is due is decided by the date stored with the last tick, not by counting
midnights, so a daemon that slept, saw the clock jump or was down for days runs
exactly one tick for the date it wakes up on.

The due contacts are worked off in chunks, each its own transaction; the
date is stored with the last one. A crash in between repeats the tick on the
next start, and only the contacts still due are recomputed again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta

import structlog

from service import engine
from service.engine import PlanContext
from service.engine.chunks import Task, input_key, plan_chunk
from service.engine.pacing import WRITE_TARGET_S, ChunkSizer
from service.store import RunStats, Scope, Store, WriteOptions
from service.store.catchup import NOTHING_CAUGHT_UP
from service.store.journal import PRUNE_BATCH
from service.store.types import BalanceDelta

log = structlog.get_logger(__name__)

DEFAULT_CHUNK = 2000

INLINE_WRITES = True
"""Whether the statements of the tick's write transactions (the catch-up
moves, the due contacts' writes) run on the event loop's thread: a hand-over
to the connection's thread per statement costs two thread wake-ups while the
lock is held (as in the full recompute's writes, ``fullpass.INLINE_WRITES``)."""


@dataclass(slots=True)
class TickReport:
    """What one tick did."""

    today: date
    previous: date | None
    contacts: int
    stats: RunStats = field(default_factory=RunStats)
    ms: float = 0.0
    finished: bool = True
    full_recompute_queued: bool = False
    caught_up_moved: int = 0
    """Caught-up rows of contacts not due, moved to *today* (SPEC 5.11)."""
    phases: dict[str, float] = field(default_factory=dict)
    """Milliseconds spent in each part: the reads before it, the catch-up
    move, the recomputes of the due contacts, the closing rebalance."""

    def lap(self, phase: str, since: float) -> float:
        """Record ``phase`` as lasting from ``since`` to now; returns now."""
        now = time.perf_counter()
        self.phases[phase] = round((now - since) * 1000.0, 1)
        return now


def _never() -> bool:
    return False


async def _planned_in_full(store: Store, ctx: PlanContext, today: date) -> bool:
    """Whether a full recompute under these settings already planned every
    contact (e.g. ``mailplan recompute --all`` before the daemon's first
    start), for ``today`` or a day before it: its review dates then say which
    contacts are due, and nothing needs planning again (SPEC 4)."""
    basis = await store.plan_basis()
    return (
        bool(ctx.fingerprint)
        and basis.fingerprint == ctx.fingerprint
        and basis.full_recompute_day is not None
        and basis.full_recompute_day <= today
    )


async def tick_if_due(
    store: Store,
    ctx: PlanContext,
    today: date,
    *,
    chunk: int = DEFAULT_CHUNK,
    should_stop: Callable[[], bool] = _never,
) -> TickReport | None:
    """Run the tick for ``today`` unless it already ran; ``None`` if not due.

    On a database that has never had a tick, nothing is known to be planned
    yet: a ``recompute_all`` event is queued so every contact gets its plan,
    unless a full recompute under the same settings already did that. The
    same when *today* is before the last tick's date (a clock set back).
    """
    previous = await store.last_tick()
    if previous == today:
        return None
    # The tick's run of short write transactions grows the log by thousands
    # of pages a second: a thread checkpoints it every 50 ms and after each
    # of our commits, so that the upstream writer that waited for one does
    # not sync or copy back our pages in its own COMMIT (up to 1.5 s at 1M
    # contacts when checkpointed only every second, service.daemon.checkpoints).
    async with store.checkpoints_beside():
        return await _tick(store, ctx, today, previous, chunk, should_stop)


async def _tick(
    store: Store,
    ctx: PlanContext,
    today: date,
    previous: date | None,
    chunk: int,
    should_stop: Callable[[], bool],
) -> TickReport:
    moved_back = previous is not None and previous > today
    if moved_back:
        # Rows were caught up and review dates passed for a later day than
        # today: only a full recompute for today gives back the plan of today.
        log.warning("clock_moved_back", last_tick=str(previous), today=today.isoformat(),
                    action="full recompute queued")  # fmt: skip
    started = time.perf_counter()
    report = TickReport(today=today, previous=previous, contacts=0)
    # Reads that take a while on a large book, outside the write lock (upstream
    # writers wait for it): the day's count of contacts for the capacity
    # snapshot (SPEC 6) and the due contacts. A contact recomputed by a batch
    # meanwhile is only recomputed once more.
    counted = None
    if await store.capacity_snapshot(today) is None:
        counted = await store.contact_count_with_email()
    due = await store.due_contacts(today)
    # The balance of the day before, and what the tick changes in the sweep:
    # the closing rebalance redoes only that (and the new day).
    since = await engine.balance_since(store)
    delta = BalanceDelta()
    lap = report.lap("reads", started)
    async with store.transaction():
        run_id = await store.start_run("tick", today)
        if counted is not None and await store.capacity_snapshot(today) is None:
            await store.save_capacity_snapshot(today, counted)
        await engine.capacity_for(store, ctx, today, save=True)
        # The chunks below skip their incremental rebalances (the closing one
        # covers them); until then the stored balance is not global.
        await engine.invalidate_balance(store)
        if moved_back or (previous is None and not await _planned_in_full(store, ctx, today)):
            await store.enqueue_event("recompute_all")
            report.full_recompute_queued = True
    if not moved_back and not report.full_recompute_queued:
        if not await _move_caught_up(store, today, run_id, report, should_stop, delta):
            return report
    lap = report.lap("catch_up", lap)
    if not await _recompute_due(store, ctx, due, today, run_id, chunk, report, should_stop, delta):
        # The date is not stored: the next start repeats the tick for the
        # contacts that are still due.
        return report
    lap = report.lap("recompute", lap)
    async with store.transaction():
        if report.full_recompute_queued or moved_back:
            report.stats.add(await engine.rebalance_all(store, ctx, today))
        else:
            report.stats.add(await engine.rebalance_from(store, ctx, today, since, delta))
        await store.set_last_tick(today)
        report.lap("rebalance", lap)
        report.ms = (time.perf_counter() - started) * 1000.0
        report.stats.contacts_recomputed = report.contacts
        await store.finish_run(run_id, report.stats, duration_ms=report.ms)
    await prune_journal(store, today - timedelta(days=ctx.journal_retention_days))
    log.info(
        "tick_done",
        today=today.isoformat(),
        previous=previous.isoformat() if previous else None,
        contacts=report.contacts,
        caught_up_moved=report.caught_up_moved,
        moved=report.stats.rows_moved,
        ms=round(report.ms, 1),
        phases_ms=report.phases,
    )
    return report


async def _recompute_due(
    store: Store,
    ctx: PlanContext,
    due: list[int],
    today: date,
    run_id: int,
    chunk: int,
    report: TickReport,
    should_stop: Callable[[], bool],
    delta: BalanceDelta,
) -> bool:
    """Recompute the due contacts in chunks: each read in a read snapshot and
    planned without the write lock, then written in a short transaction that
    plans again inside it if an upstream change came since the read (the
    event sequence moved, as in the full recompute); False if stopped part
    way. What the writes changed in the sweep is added to ``delta`` (the
    closing rebalance covers it)."""
    campaigns = ctx.campaigns or await store.load_campaigns()
    options = WriteOptions(run_id=str(run_id), today=today, send_time=ctx.send_time)
    key = input_key(ctx, campaigns)
    since, recent = ctx.history_since(today), ctx.engagement_since(today)
    sizer = ChunkSizer(chunk, target_s=WRITE_TARGET_S)
    start = 0
    while start < len(due):
        if should_stop():
            report.finished = False
            log.info("tick_interrupted", today=today.isoformat(), done=report.contacts)
            return False
        scope = Scope.of_ids(due[start : start + sizer.size])
        # Read, planned and compared with the stored rows in one read
        # snapshot, without the lock; inside it, only the plan states are
        # read again (store.write_pending).
        async with store.snapshot():
            rows = await store.read_chunk(
                None, 0, since=since, engagement_since=recent, scope=scope
            )
            prepared = plan_chunk(ctx, campaigns, Task(rows, today, key, options))
            with store.statements_inline(INLINE_WRITES):
                ahead = await store.diff_ahead(prepared, options)
        async with store.transaction():
            with store.statements_inline(INLINE_WRITES):
                write_started = time.perf_counter()
                if await store.event_seq() != rows.seq:
                    rows = await store.read_chunk(
                        None, 0, since=since, engagement_since=recent, scope=scope
                    )
                    prepared = plan_chunk(ctx, campaigns, Task(rows, today, key, options))
                    result = await store.write_prepared(prepared, options)
                else:
                    result = await store.write_pending(ahead, options)
        sizer.record(len(scope.ids or ()), time.perf_counter() - write_started)
        report.stats.add_writes(result.stats)
        delta.extend(result.delta)
        start += len(scope.ids or ())
        report.contacts += len(scope.ids or ())
    return True


READ_CONTACTS = 50_000
"""Contacts whose rows to move one read (in a read snapshot) looks at: at 1M
contacts a read takes about as long as the writer gap it runs in."""

MOVE_ROWS = 20_000
"""Most rows one catch-up transaction moves (the sizer keeps it short)."""

FIRST_MOVE_ROWS = 200
"""Rows the first catch-up transaction moves, before the sizer has timed
one: a row costs ~50-80 µs at 1M contacts, so the sizer's usual first size
(a quarter of :data:`MOVE_ROWS`) held the lock for ~350 ms."""


async def _move_caught_up(
    store: Store,
    today: date,
    run_id: int,
    report: TickReport,
    should_stop: Callable[[], bool],
    delta: BalanceDelta,
) -> bool:
    """The catch-up move of every contact that is not due (SPEC 5.10, 5.11): the
    rows to move are found in read snapshots over ranges of contact ids
    (upstream writers do not wait for those reads), then moved in short
    transactions, each reading its rows again only if anyone else changed
    anything since the read (:class:`~service.store.catchup.CaughtUp`); False
    if stopped part way (the next start repeats the tick, and only rows not
    yet moved still match). What the moves changed in the sweep is added to
    ``delta``."""
    # Its rows are found outside the lock, so a transaction only writes: it
    # aims at the write target of 30 ms (an upstream writer that came at its
    # start gets in at its busy handler's 33 ms attempt), not the 35 ms of
    # chunks that also read and plan inside.
    sizer = ChunkSizer(MOVE_ROWS, target_s=WRITE_TARGET_S)
    sizer.size = FIRST_MOVE_ROWS
    last = await store.max_contact_id()
    lo = 0
    pending = NOTHING_CAUGHT_UP
    while lo <= last or pending:
        if lo <= last and len(pending) < sizer.size:
            # Read on before the rows run short, so that every transaction
            # moves a full share and each read falls in a writer gap.
            if lo and should_stop():
                report.finished = False
                log.info("tick_interrupted", today=today.isoformat(), moved=report.caught_up_moved)
                return False
            hi = lo + READ_CONTACTS - 1
            async with store.snapshot():
                pending = pending.then(await store.caught_up_rows(today, lo, hi))
            lo = hi + 1
            continue
        rows, pending = pending.split(sizer.size)
        async with store.transaction():
            # Timed from inside: the writer gap before the lock is not the move's.
            began = time.perf_counter()
            with store.statements_inline(INLINE_WRITES):
                step = await store.move_caught_up_rows(today, run_id, rows)
        sizer.record(len(rows), time.perf_counter() - began)
        report.caught_up_moved += step.rows
        delta.extend(step.delta)
        if (lo <= last or pending) and should_stop():
            report.finished = False
            log.info("tick_interrupted", today=today.isoformat(), moved=report.caught_up_moved)
            return False
    return True


async def prune_journal(store: Store, before: date) -> int:
    """Delete journal entries older than ``before`` (SPEC 7), in short
    transactions of bounded size; how many were deleted."""
    total = 0
    while True:
        async with store.transaction():
            deleted = await store.prune_journal(before)
        total += deleted
        if deleted < PRUNE_BATCH:
            break
    if total:
        log.info("journal_pruned", before=before.isoformat(), entries=total)
    return total
