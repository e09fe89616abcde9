"""Load balancing over the stored plan: global, or by the rows a change moved.

The global mode streams every non-skipped plan row by desired date through
the primitives of :mod:`service.planning.balance` and gives exactly
:func:`~service.planning.balance.balance`; it also writes the per-day counts
(:mod:`service.store.balance_days`) anew. The incremental mode
(:mod:`service.engine.incremental`) is the requirement of SPEC 6 (invariant
I2): after a change it redoes the sweep only on the days where the change
moves it, at a cost that follows the change, and its result equals a global
rebalance. It relies on the stored dates being the previous global balance
for the same *today* and capacity, or for an earlier day or another capacity
given as ``since`` (a new day's rebase), on the per-day counts equal to the table, and
on the change listing every row it moved (the writer's
:class:`~service.store.types.BalanceDelta` and the balance gaps).
"""

from __future__ import annotations

import itertools
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import date

import structlog

from service.engine.incremental import CountsMismatch, Incremental, IncrementalResult
from service.planning.balance import (
    ONE_DAY,
    REF,
    Capacity,
    Pending,
    Sweeper,
    pending,
    step1_dates,
)
from service.planning.model import RowKey
from service.store.interface import BalanceStore
from service.store.types import BalanceDelta, StoredRow, Update

log = structlog.get_logger(__name__)

CHUNK_DAYS = 32
"""Days of desired dates a global rebalance reads per query."""

SLOW_MS = 200.0
"""An incremental rebalance taking this long is logged with what it read."""

SAVE_BATCH = 1500
"""Rows per save of a global rebalance that cannot commit part way."""

PAUSED_SAVE_BATCH = 125
"""Rows per save of a global rebalance that pauses (commits part way before
one more save and the commit would hold the lock past its mark,
:class:`~service.engine.core._CommitPause`): 1,500 rows held it 70-96 ms at
1M contacts (the closing rebalance of a full recompute of an empty plan,
133,270 rows moved), longer than an upstream writer's retry at 33 ms; 250
take ~7 ms of statements, so 125 let several saves fit one transaction."""


@dataclass(frozen=True, slots=True)
class RebalanceResult:
    """``rows_changed``: rows whose step-1 or scheduled date was written;
    ``days_swept``: calendar days the cap sweep went through; ``windows``:
    separate runs of days rebalanced."""

    rows_changed: int = 0
    days_swept: int = 0
    windows: int = 0
    unsettled: bool = False
    """Incremental, saved in parts: others' changes in a pause left it no
    basis for the next incremental rebalance."""


async def rebalance(
    store: BalanceStore,
    cap: Capacity,
    today: date,
    delta: BalanceDelta | None,
    *,
    chunk_days: int = CHUNK_DAYS,
    pause: Callable[[], Awaitable[None]] | None = None,
    since: tuple[Capacity, date] | None = None,
    reads_in_lock: bool = False,
    walk_in_snapshot: bool = False,
) -> RebalanceResult:
    """Bring the stored balance up to date (SPEC 6, invariant I2).

    ``delta=None`` rebalances everything (the tick, a full recompute);
    otherwise only where ``delta`` and the balance gaps others left move the
    sweep (see the module docstring). Either way the stored dates afterwards
    equal ``balance()`` of all non-skipped rows.

    ``pause`` is awaited between batches of saves (and, in global mode,
    chunks of desired dates): the engine commits there and lets upstream
    writers in, so a global rebalance of a large book, or a new day's move of
    many rows, is a run of short transactions. The caller must have made the
    stored balance no basis until it has finished.

    ``reads_in_lock``, with a ``delta`` and a ``pause``: only the saves
    pause; the change is read inside the lock, and the balance gaps others
    leave in the pauses are reconciled with the saves (``unsettled`` in the
    result when they could not be).

    ``walk_in_snapshot``, with a ``delta`` and a ``pause``: the caller's
    work is committed first, and the reads and the walk run in a read
    snapshot without the write lock (the caller must have made the stored
    balance no basis); the gaps recorded after the snapshot are reconciled
    with the saves as the pauses' are.

    ``since``, with a ``delta``: the capacity and day of the stored balance
    when they differ from ``cap`` and ``today`` (a new day, a new capacity
    snapshot): the incremental rebalance then also moves what they change,
    and the result is the global balance for ``today`` all the same.

    Raises :class:`~service.engine.incremental.CountsMismatch` (before saving
    anything but the consumed gaps) when the per-day counts disagree with the
    rows; a global rebalance then puts everything right.
    """
    if delta is None:
        result = await _Global(store, cap, today, chunk_days, pause).run()
    elif walk_in_snapshot:
        if not delta.exact:
            raise CountsMismatch("a write could not vouch for the table")
        started = time.perf_counter()
        moved = await Incremental(store, cap, today, since, pause).run_in_snapshot(delta)
        result = _logged(moved, delta, started, since)
    else:
        gone, back = await store.take_gaps()
        if not delta and not gone and not back and since is None:
            return RebalanceResult()
        if not delta.exact:
            raise CountsMismatch("a write could not vouch for the table")
        started = time.perf_counter()
        moved = await Incremental(store, cap, today, since, pause,
                                  reads_in_lock=reads_in_lock).run(delta, gone, back)  # fmt: skip
        result = _logged(moved, delta, started, since)
    log.debug(
        "rebalanced",
        scope="all" if delta is None else len(delta.gone) + len(delta.added),
        rows=result.rows_changed,
        days=result.days_swept,
        windows=result.windows,
    )
    return result


def _logged(
    moved: IncrementalResult,
    delta: BalanceDelta,
    started: float,
    since: tuple[Capacity, date] | None,
) -> RebalanceResult:
    ms = (time.perf_counter() - started) * 1000
    if ms >= SLOW_MS:
        # What a slow one did, for the operator (SPEC 12: a change costs
        # index seeks; reading days whole is the exception).
        log.info("rebalance_slow", ms=round(ms), rows_in=len(delta.added),
                 rows_out=len(delta.gone), gaps=moved.gaps,
                 days=moved.days_swept, rows_read=moved.rows_read,
                 whole_days=moved.whole_days, moved=moved.rows_changed,
                 new_day=since is not None)  # fmt: skip
    return RebalanceResult(moved.rows_changed, moved.days_swept, moved.windows, moved.unsettled)


@dataclass(slots=True)
class _Placer:
    """Rows handed to a sweeper (by ref) and the updates collected."""

    refs: dict[int, tuple[StoredRow, date]] = field(default_factory=dict)
    updates: dict[RowKey, tuple[date, date]] = field(default_factory=dict)
    counter: itertools.count[int] = field(default_factory=itertools.count)
    days: int = 0
    scheduled: Counter[date] = field(default_factory=Counter)
    """Rows placed on each day (the per-day counts of a global rebalance)."""

    def entry(self, row: StoredRow, step1: date) -> Pending:
        ref = next(self.counter)
        self.refs[ref] = (row, step1)
        return pending(row.item, step1, ref)

    def place(self, row: StoredRow, step1: date, day: date) -> None:
        self.scheduled[day] += 1
        if row.step1 != step1 or row.scheduled != day:
            self.updates[row.item.key] = (step1, day)

    def place_kept(self, kept: Iterable[Pending], day: date) -> None:
        for p in kept:
            row, step1 = self.refs.pop(p[REF])
            self.place(row, step1, day)

    def take_updates(self) -> list[Update]:
        out = [(key, s1, sched) for key, (s1, sched) in self.updates.items()]
        self.updates.clear()
        return out


class _Global:
    """Global balance, streamed by chunks of desired dates.

    Rows arriving on day ``d`` have desired dates up to ``d + W // 2``, so
    once desired dates below ``hi`` are read, the days below ``hi - W // 2``
    are complete and can be swept.
    """

    def __init__(
        self,
        store: BalanceStore,
        cap: Capacity,
        today: date,
        chunk_days: int,
        pause: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.store, self.cap, self.today = store, cap, today
        self.chunk = max(1, chunk_days)
        self.pause = pause
        self.placer = _Placer()
        self.sweeper = Sweeper(cap)
        self.arrivals: dict[date, tuple[list[StoredRow], list[date]]] = {}
        self.day = today
        self.moved: list[Update] = []
        self.changed = 0
        self.step1s: Counter[date] = Counter()

    async def run(self) -> RebalanceResult:
        last = await self.store.last_desired()
        if last is None:
            await self.store.put_balance_days(())
            return RebalanceResult()
        half = self.cap.window // 2
        lo, hi = date.min, self.today + self.chunk * ONE_DAY
        # Gaps others leave while this pass commits part way: which of them
        # its reads already saw is settled at the end (store.settle_gaps).
        since = await self.store.gap_mark()
        reads: list[tuple[date, date, int]] = []
        while True:
            done = hi > last
            until = None if done else hi - half * ONE_DAY
            if self.pause is None:
                mark, rows = await self._read(lo, hi)
                self._add(rows)
                self._sweep(until)
            else:
                # Reads of a large book take seconds, and so does sweeping the
                # rows of an all-contacts campaign's dates: neither while
                # holding the write lock (WAL readers keep no writer waiting;
                # the sweep reads nothing from the store).
                async with self.store.outside_write_lock():
                    mark, rows = await self._read(lo, hi)
                    self._add(rows)
                    self._sweep(until)
            reads.append((lo, hi, mark))
            await self._save()
            if done:
                step1s, scheduled = self.step1s, self.placer.scheduled
                days = sorted(set(step1s) | set(scheduled))
                await self.store.put_balance_days((d, step1s[d], scheduled[d]) for d in days)
                await self.store.settle_gaps(since, reads)
                return RebalanceResult(self.changed, self.placer.days, 1)
            lo, hi = hi, hi + self.chunk * ONE_DAY

    async def _read(self, lo: date, hi: date) -> tuple[int, list[StoredRow]]:
        # The gap mark and the rows in one read: which gaps the rows reflect.
        return await self.store.gap_mark(), await self.store.rows_by_desired(lo, hi)

    def _add(self, batch: list[StoredRow]) -> None:
        # A full recompute passes every plan row of the book through here:
        # per-row work is kept to appending to two lists (no new objects for
        # the garbage collector to trace).
        today, arrivals = self.today, self.arrivals
        step1s = step1_dates([row.item for row in batch], self.cap, today)
        self.step1s.update(step1s)
        for row, step1 in zip(batch, step1s, strict=True):
            day = step1 if step1 > today else today
            group = arrivals.get(day)
            if group is None:
                arrivals[day] = ([row], [step1])
            else:
                group[0].append(row)
                group[1].append(step1)

    def _sweep(self, until: date | None) -> None:
        """Sweep the days before ``until`` (all remaining days if ``None``)."""
        sweeper, placer = self.sweeper, self.placer
        while True:
            day = self.day
            if not sweeper:
                if not self.arrivals:
                    return
                day = max(day, min(self.arrivals))
            if until is not None and day >= until:
                return
            rows, step1s = self.arrivals.pop(day, ([], []))
            if sweeper.crowded(len(rows)):
                entries = [placer.entry(r, s1) for r, s1 in zip(rows, step1s, strict=True)]
                placer.place_kept(sweeper.step(day, entries), day)
            else:
                placer.place_kept(sweeper.drain(day), day)
                placer.scheduled[day] += len(rows)
                self.moved.extend(
                    (r.item.key, s1, day)
                    for r, s1 in zip(rows, step1s, strict=True)
                    if r.step1 != s1 or r.scheduled != day
                )
            placer.days += 1
            self.day = day + ONE_DAY

    async def _save(self) -> None:
        updates = self.placer.take_updates() + self.moved
        self.moved = []
        self.changed += len(updates)
        # A crowded chunk (an all-contacts campaign day) moves hundreds of
        # thousands of rows: saved in batches with a pause between them.
        step = SAVE_BATCH if self.pause is None else PAUSED_SAVE_BATCH
        for start in range(0, len(updates), step):
            if start and self.pause is not None:
                await self.pause()
            await self.store.save(updates[start : start + step])
