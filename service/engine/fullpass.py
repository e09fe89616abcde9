"""The full recompute: every contact, chunk by chunk, then a global rebalance.

Each chunk is read in a read snapshot without the write lock (WAL readers
never block a writer), planned in this process or in a pool of planning
processes (:mod:`service.engine.chunks`), and written in its own short write
transaction. Reads, planning and writes of successive chunks overlap.

Why reading outside the lock is correct: every upstream change to a table a
plan reads appends an event in the same transaction (SPEC 8.1), and event ids
are never reused. The write transaction of a chunk first compares the event
sequence with the one its rows were read at; if it moved, an upstream change
may have happened in between (and the daemon may even have consumed its
event already), so the chunk is read and planned again inside the write
transaction, as before. Otherwise the rows read are still the database's
rows. A crash at any point leaves whole chunks written or not: the next run
repeats work only (I5).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import replace
from datetime import date

import anyio
import anyio.to_thread
import structlog

from service.engine.chunks import (
    POOL_MIN_CONTACTS,
    READ_CHUNK,
    Clean,
    Outcome,
    Planner,
    RangeTask,
    Task,
    default_workers,
    input_key,
    plan_chunk,
    settle,
    split_slice,
    write_slices,
)
from service.engine.core import (
    BALANCE_BASIS,
    PROGRESS_KEY,
    PlanContext,
    _balance_basis,
    _ms,
    _no_progress,
    _record_failure,
    capacity_for,
    progress_text,
    rebalance_all,
    rebalance_delta,
    record_full_plan,
)
from service.engine.pacing import ChunkSizer
from service.planning.contacts import zip_lookup
from service.planning.model import Campaigns
from service.store import RunStats, Store, WriteOptions
from service.store.loaders import MAX_ID, MIN_ID, ChunkRows
from service.store.types import Scope
from service.store.writer import PendingWrite, Prepared

log = structlog.get_logger(__name__)

PROGRESS_EVERY_S = 0.5
"""How often a full recompute records its progress (``mailplan status``)."""

CHUNK_WRITE_TARGET_S = 0.022
"""Aimed-for duration of a chunk write transaction, its commit included.
Since every transaction is filled to the write size (chunks gathered), the
sizer's aim is what most transactions take: at 30 ms (``WRITE_TARGET_S``,
the aim of the tick's catch-up) a tenth of them ran past an upstream
writer's retry at 33 ms, and at 1M contacts the writer's p99 wait was
59 ms. On a slower machine (with the hypervisor taking CPU) 25 ms still
gave p99 43-54 ms; 22 ms gave 39-41 ms, for 59-65 s against 55-60 s
(``bench/RESULTS.md``, runs Z5, Z6)."""

INLINE_WRITES = True
"""Whether a chunk's write runs its statements on the event loop's thread."""

BULK_CACHE_MIB = 256
"""The page cache of ``mailplan recompute --all`` (the connection's default
is 32 MiB, the daemon's budget): at a million contacts the plan's indexes
whose keys do not follow contact order (sweep order, desired date) are
~65 MiB, and with a smaller cache every row written reads their pages back
from the file. Peak RSS stays well under SPEC 12's 1 GB."""


async def full_recompute(
    store: Store,
    ctx: PlanContext,
    today: date,
    *,
    trigger: str = "full",
    consume_events: bool = True,
    trust_fingerprints: bool = True,
    progress: Callable[[int], None] = _no_progress,
) -> RunStats:
    """Recompute every contact and rebalance globally; the run's statistics.

    Contacts are worked off in chunks, each written in its own short
    transaction (the database stays available to upstream writers); the
    global rebalance runs last. Events already in the inbox when the run
    starts are covered by it and are consumed at the end
    (``consume_events``); later ones stay.

    With ``trust_fingerprints`` a contact whose input digest is unchanged is
    not planned again, and the stored plan rows of a contact are read only
    when its plan's fingerprint differs from the one stored with the last
    write; without, every contact is planned and every stored row compared
    (what a repair needs when rows may have been edited behind mailplan's back).
    """
    started = time.perf_counter()
    # The ZIP directory is built on first use: not while holding the write
    # lock (seconds on a loaded machine, and every upstream writer waits).
    await anyio.to_thread.run_sync(zip_lookup, "10001")
    # Counting a million contacts takes a while: not while holding the lock.
    async with store.snapshot():
        contacts = await store.contact_count_with_email()
    async with store.transaction():
        covered = await store.max_event_id()
        run_id = await store.start_run(trigger, today)
        cap = await capacity_for(store, ctx, today, save=True, count=contacts)
        basis = _balance_basis(cap, today)
        # Whether the rows hold the global balance of today's capacity now:
        # if no plan row changes (nor anyone else's), they still do at the end.
        balanced = await store.get_state(BALANCE_BASIS) == basis
        version, _ = await store.plan_version()
        # Until the closing global rebalance the stored balance is stale.
        await store.delete_state(BALANCE_BASIS)
        campaigns = ctx.campaigns or await store.load_campaigns()
    stats = RunStats()
    workers = default_workers() if ctx.planning_workers is None else ctx.planning_workers
    if contacts < POOL_MIN_CONTACTS:
        workers = 0
    try:
        planning = Planner(ctx, campaigns, workers, store.chunk_source())
        # The closing rebalance too: its partial commits move ~130k rows at 1M
        # contacts, and with the automatic checkpoint back on, this
        # connection's COMMITs copied the log back every 1,000 pages.
        async with store.checkpoints_outside_lock():
            async with planning as planner:
                await _chunks(store, ctx, campaigns, today, run_id, trust_fingerprints, planner,
                              stats, progress)  # fmt: skip
            phase = time.perf_counter()
            async with store.transaction():
                keep = trust_fingerprints and balanced and not (stats.inserted or stats.updated
                                                                or stats.deleted)  # fmt: skip
                if keep and await _balance_unchanged(store, version):
                    # No plan row changed: the global balance stored before the
                    # run is the global balance now (same rows, day, capacity).
                    await store.set_state(BALANCE_BASIS, basis)
                else:
                    keep = False
                    stats.add(await rebalance_all(store, ctx, today))
                if consume_events:
                    stats.events_consumed = await store.delete_events_upto(covered)
                await store.delete_state(PROGRESS_KEY)
                await record_full_plan(store, ctx, today)
                await store.finish_run(run_id, stats, duration_ms=_ms(started))
    except Exception as exc:
        await _record_failure(store, run_id, stats, started, exc)
        raise
    log.info("full_recompute_done", run_id=run_id, ms=round(_ms(started)),
             rebalance_ms=round(_ms(phase)), rebalance="kept" if keep else "global",
             workers=workers,
             contacts=stats.contacts_recomputed, inserted=stats.inserted,
             updated=stats.updated, deleted=stats.deleted, moved=stats.rows_moved)  # fmt: skip
    return stats


async def _balance_unchanged(store: Store, version: int) -> bool:
    """No process changed plan rows or their balance since the plan version
    was ``version``, and no balance gap (a row the sender took) is pending:
    the stored balance is what it was then."""
    now, _ = await store.plan_version()
    return now == version and await store.gap_mark() == 0


async def recompute_range(
    store: Store, ctx: PlanContext, after: int | None, limit: int, today: date, run_id: int | str
) -> tuple[RunStats, int]:
    """Recompute the next ``limit`` contacts with id > ``after`` (None: from the
    first) and rebalance where they move the sweep, inside the caller's transaction;
    returns the stats and the last id the chunk covers (``MAX_ID`` for the last
    chunk). The chunk's scope is an id range, so plan rows of contacts deleted
    inside it are removed too: a fan-out of these chunks is a full recompute
    (SPEC 8.3). Contacts whose input digest is unchanged are not planned again.
    """
    if not store.in_write_transaction:
        raise RuntimeError("recompute_range must run inside store.transaction()")
    campaigns = ctx.campaigns or await store.load_campaigns()
    rows = await store.read_chunk(
        after, limit, since=ctx.history_since(today), engagement_since=ctx.engagement_since(today)
    )
    options = WriteOptions(run_id=str(run_id), today=today, send_time=ctx.send_time)
    prepared = plan_chunk(ctx, campaigns, Task(rows, today, input_key(ctx, campaigns), options))
    result = await store.write_prepared(prepared, options)
    stats = RunStats(contacts_recomputed=len(rows.contact_rows))
    stats.add_writes(result.stats)
    # Also with no change of its own: rows others took (balance gaps).
    stats.add(await rebalance_delta(store, ctx, today, result.delta))
    return stats, rows.scope.hi


async def _chunks(
    store: Store,
    ctx: PlanContext,
    campaigns: Campaigns,
    today: date,
    run_id: int,
    trust: bool,
    planner: Planner,
    stats: RunStats,
    progress: Callable[[int], None],
) -> None:
    key = input_key(ctx, campaigns) if trust else None
    options = WriteOptions(run_id=str(run_id), today=today, send_time=ctx.send_time)
    sizer = ChunkSizer(ctx.chunk_size, target_s=CHUNK_WRITE_TARGET_S)
    since, recent = ctx.history_since(today), ctx.engagement_since(today)
    inflight: deque[tuple[Scope, Awaitable[Outcome | None]]] = deque()
    # Planned slices not written yet, in id order.
    ready: deque[tuple[ChunkRows, Prepared]] = deque()
    after: int | None = None
    reading = True
    noted = float("-inf")
    # Reads hold no lock: after a clean chunk the next one is read larger
    # (up to READ_CHUNK); after one that needed writing, at the write size.
    read_size = sizer.size
    task = RangeTask(Scope.of_range(0, 0), since, recent, today, key, options)
    while reading or inflight or ready:
        while reading and len(inflight) < planner.depth:
            scope, outcome = await _read_ahead(store, planner, after, read_size, task)
            inflight.append((scope, outcome))
            after = scope.hi
            reading = after != MAX_ID
        if inflight and _weight(ready, sizer.size) < sizer.size:
            # Less than a transaction's worth planned: take the next chunk in.
            # Chunks are read ahead at the write size of their time, and
            # many need only part of it written: each written alone, half
            # the transactions were under half the size (2,491 at 1M
            # contacts), and every transaction costs a writer gap.
            scope, pending = inflight.popleft()
            done = await pending
            if done is None:
                # The planning process could not read the chunk: read it here.
                async with store.snapshot():
                    rows = await store.read_chunk(
                        None, 0, since=since, engagement_since=recent, scope=scope
                    )
                done = settle(rows, await planner.plan_here(Task(rows, today, key, options)))
            if isinstance(done, Clean):
                # Every contact's inputs are unchanged as read: the stored plan
                # of the range was its plan at the read, and the write lock is
                # not taken at all. No check of the event sequence is needed:
                # an upstream change after the read has an event id above the
                # read's sequence, so above ``covered``, and stays queued for
                # the daemon (only events up to ``covered`` are consumed); and
                # a chunk that writes nothing cannot overwrite a plan the
                # daemon wrote meanwhile.
                stats.contacts_recomputed += done.contacts
                stats.unchanged += done.skipped_rows
                if not ready:
                    progress(scope.hi)
                read_size = min(max(READ_CHUNK, sizer.size), read_size * 2)
                continue
            read_size = sizer.size
            whole, planned = done
            stats.add(RunStats(contacts_recomputed=len(whole.contact_rows)))
            ready.extend(write_slices(whole, planned, sizer.size))
            continue
        # One write transaction: the planned slices at the front, up to the
        # write size of planned contacts (at least one slice).
        take = _take(ready, sizer.size)
        last = take[-1][0].scope.hi
        # Compared with the stored rows before the lock is taken, in the
        # writer gap the transaction waits for anyway: inside it, only the
        # plan states are read again (PendingWrite). At 1M contacts the
        # comparison and its reads were a sixth of the time in the lock. A
        # repair (no trust) compares inside the lock: it is there for rows
        # edited behind mailplan's back, which raise no event.
        ahead: list[PendingWrite | None] = [None] * len(take)
        if trust:
            async with store.snapshot():
                with store.statements_inline(INLINE_WRITES):
                    ahead = [await store.diff_ahead(prepared, options) for _, prepared in take]
        # The write's statements run on this thread (statements_inline): a
        # hand-over to the connection's thread per statement costs two thread
        # wake-ups, each of which a loaded machine can delay by milliseconds
        # while the lock is held. BEGIN, which may wait for an upstream
        # writer's lock, still goes to the connection's thread.
        async with store.transaction():
            with store.statements_inline(INLINE_WRITES):
                write_started = time.perf_counter()
                contacts = 0
                # No one else writes while the lock is held: one read of the
                # event sequence serves every slice.
                seq = await store.event_seq()
                for (rows, prepared), diffed in zip(take, ahead, strict=True):
                    if seq != rows.seq:
                        # An upstream change since the read: plan again, inside the lock.
                        rows, prepared = await _plan_again(store, planner, rows, task, stats)
                        result = await store.write_prepared(prepared, options, trust=trust)
                    elif diffed is None:
                        result = await store.write_prepared(prepared, options, trust=trust)
                    else:
                        result = await store.write_pending(diffed, options)
                    stats.add_writes(result.stats)
                    contacts += len(rows.contact_rows)
                if write_started - noted >= PROGRESS_EVERY_S or not (inflight or ready):
                    # Progress for `mailplan status` and a terminal's progress bar.
                    await store.set_state(PROGRESS_KEY, progress_text(run_id, last))
                    noted = write_started
        # Its pages go back into the database at once, not in the COMMIT
        # of the upstream writer that waited: checkpoints_outside_lock's
        # thread checkpoints after each commit (the rebalance's too).
        # Short write transactions (commit included) whatever the machine's
        # load: upstream writers wait while one is open.
        sizer.record(contacts, time.perf_counter() - write_started)
        progress(last)


def _weight(ready: Iterable[tuple[ChunkRows, Prepared]], size: int) -> int:
    """What the slices weigh against the write size: their planned contacts;
    a slice whose range holds plan rows of deleted contacts (``untidy``)
    weighs a whole transaction, as its deletes are not counted."""
    return sum(size if rows.untidy else len(prepared.states) for rows, prepared in ready)


def _take(ready: deque[tuple[ChunkRows, Prepared]], size: int) -> list[tuple[ChunkRows, Prepared]]:
    """The planned slices at the front of ``ready`` for one write transaction:
    ``size`` planned contacts (fewer when no more are ready), the last slice
    cut where the size is reached and its rest left at the front. A slice
    with plan rows of deleted contacts goes alone."""
    if ready[0][0].untidy:
        return [ready.popleft()]
    take: list[tuple[ChunkRows, Prepared]] = []
    planned = 0
    while ready and planned < size and not ready[0][0].untidy:
        head, rest = split_slice(*ready.popleft(), size - planned)
        if rest is not None:
            ready.appendleft(rest)
        take.append(head)
        planned += len(head[1].states)
    return take


async def _plan_again(
    store: Store, planner: Planner, rows: ChunkRows, task: RangeTask, stats: RunStats
) -> tuple[ChunkRows, Prepared]:
    """Read and plan the range of ``rows`` again, inside the write lock."""
    async with store.snapshot():
        fresh = await store.read_chunk(
            None, 0, since=task.since, engagement_since=task.engagement_since, scope=rows.scope
        )
    prepared = await planner.plan_here(Task(fresh, task.today, task.key, task.options))
    stats.contacts_recomputed += len(fresh.contact_rows) - len(rows.contact_rows)
    return fresh, prepared


async def _read_ahead(
    store: Store, planner: Planner, after: int | None, size: int, task: RangeTask
) -> tuple[Scope, Awaitable[Outcome | None]]:
    """Start on the chunk of ``size`` contacts after ``after``: its scope and
    its outcome to await. With planning processes that read, a worker reads
    and plans it (only its end is read here); else it is read here, in a
    snapshot, and planned in this process or the pool."""
    lo = MIN_ID if after is None else after + 1
    if planner.reads:
        scope = Scope.of_range(lo, await store.chunk_bound(after, size))
        return scope, planner.read_and_plan(replace(task, scope=scope))
    async with store.snapshot():
        rows = await store.read_chunk(
            after, size, since=task.since, engagement_since=task.engagement_since
        )
    pending = planner.submit(Task(rows, task.today, task.key, task.options))
    return rows.scope, _settled(rows, pending)


async def _settled(rows: ChunkRows, pending: Awaitable[Prepared]) -> Outcome:
    return settle(rows, await pending)
