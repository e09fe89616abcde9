"""Load balancing over the stored plan: global, or only the touched windows.

The global mode streams every non-skipped plan row by desired date through
the primitives of :mod:`service.planning.balance` and gives exactly
:func:`~service.planning.balance.balance`. The windowed mode is the
incremental requirement of SPEC 6 (invariant I2): after a change it re-runs
smoothing on the touched dates and the cap sweep only from the earliest
touched date minus ``W // 2`` until the carry equals the one of the previous
balance, and its result equals a global rebalance.

Windowed mode relies on three facts, which the writer and the engine ensure:

* The stored ``balance_date`` (step-1 date) and ``scheduled_send_date`` of
  every non-skipped row are the previous global balance, for the same *today*
  and capacity, except for rows the change wrote (the tick rebalances
  globally, so a new day or capacity never reaches this mode).
* A row the change inserted, or whose desired date changed, has
  ``balance_date = scheduled_send_date = desired_date``; a row that was only
  updated may keep its previous balancer dates instead.
* ``touched`` holds, for every row inserted, updated or deleted by the change
  (and every row entering or leaving ``skipped``): its new desired date, its
  old desired date, and every date from its old desired date to its old
  scheduled date. The last part makes sure that no row the change removed
  from the sweep could still have been carried past the end of a window.

Why windows can be bounded: a row's step-1 date lies within ``W // 2`` days of
its desired date, so rows whose desired date is not touched keep their step-1
date (the crowding of their date did not change) and their stored state.
Before the first touched date minus ``W // 2`` the old and new sweeps see the
same rows, so the stored carry into that day is the new one. After the
touched dates, once the new carry equals the stored one, both sweeps see the
same rows again and the stored dates are already right.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import date

import structlog

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
from service.store.types import StoredRow, Update

log = structlog.get_logger(__name__)

CHUNK_DAYS = 32
"""Days of rows read per query."""

SAVE_BATCH = 4000
"""Rows per save of a global rebalance that pauses (about 50 ms of updates)."""


@dataclass(frozen=True, slots=True)
class RebalanceResult:
    """``rows_changed``: rows whose step-1 or scheduled date was written;
    ``days_swept``: calendar days the cap sweep went through; ``windows``:
    separate runs of days rebalanced."""

    rows_changed: int = 0
    days_swept: int = 0
    windows: int = 0


async def rebalance(
    store: BalanceStore,
    cap: Capacity,
    today: date,
    touched: set[date] | None,
    *,
    chunk_days: int = CHUNK_DAYS,
    pause: Callable[[], Awaitable[None]] | None = None,
) -> RebalanceResult:
    """Bring the stored balance up to date (SPEC 6, invariant I2).

    ``touched=None`` rebalances everything (the tick, a full recompute);
    otherwise only the windows around ``touched`` (see the module docstring
    for what the set must hold). Either way the stored dates afterwards equal
    ``balance()`` of all non-skipped rows.

    ``pause``, in global mode, is awaited after each chunk of desired dates
    is saved: the engine commits there and lets upstream writers in, so a
    global rebalance of a large book is a run of short transactions.
    """
    if touched is None:
        result = await _Global(store, cap, today, chunk_days, pause).run()
    elif not touched:
        result = RebalanceResult()
    else:
        result = await _Windowed(store, cap, today, touched, chunk_days).run()
    log.debug(
        "rebalanced",
        scope="all" if touched is None else len(touched),
        rows=result.rows_changed,
        days=result.days_swept,
        windows=result.windows,
    )
    return result


@dataclass(slots=True)
class _Placer:
    """Rows handed to a sweeper (by ref) and the updates collected."""

    refs: dict[int, tuple[StoredRow, date]] = field(default_factory=dict)
    updates: dict[RowKey, tuple[date, date]] = field(default_factory=dict)
    counter: itertools.count[int] = field(default_factory=itertools.count)
    days: int = 0

    def entry(self, row: StoredRow, step1: date) -> Pending:
        ref = next(self.counter)
        self.refs[ref] = (row, step1)
        return pending(row.item, step1, ref)

    def place(self, row: StoredRow, step1: date, day: date) -> None:
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

    async def run(self) -> RebalanceResult:
        last = await self.store.last_desired()
        if last is None:
            return RebalanceResult()
        half = self.cap.window // 2
        lo, hi = date.min, self.today + self.chunk * ONE_DAY
        while True:
            self._add(await self.store.rows_by_desired(lo, hi))
            done = hi > last
            self._sweep(None if done else hi - half * ONE_DAY)
            await self._save()
            if done:
                return RebalanceResult(self.changed, self.placer.days, 1)
            if self.pause is not None:
                # Everything read so far is held here; later chunks only
                # read rows with later desired dates.
                await self.pause()
            lo, hi = hi, hi + self.chunk * ONE_DAY

    def _add(self, batch: list[StoredRow]) -> None:
        # A full recompute passes every plan row of the book through here:
        # per-row work is kept to appending to two lists (no new objects for
        # the garbage collector to trace).
        today, arrivals = self.today, self.arrivals
        step1s = step1_dates([row.item for row in batch], self.cap, today)
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
        for start in range(0, len(updates), SAVE_BATCH):
            if start and self.pause is not None:
                await self.pause()
            await self.store.save(updates[start : start + SAVE_BATCH])


@dataclass(slots=True)
class _Chunk:
    """Stored state of the days ``[lo, hi)`` of a window."""

    lo: date
    hi: date
    counts: Counter[date]
    off: list[StoredRow]
    unsettled: dict[date, dict[RowKey, StoredRow]]
    # Size of the stored carry into each day of [lo, hi].
    carry_sizes: dict[date, int]
    # Every row by arrival day from ``full_from`` on, read at the first
    # crowded day of the chunk.
    full: dict[date, list[StoredRow]] = field(default_factory=dict)
    full_from: date | None = None


class _Windowed:
    """The windowed rebalance; see the module docstring for why it is exact."""

    def __init__(
        self,
        store: BalanceStore,
        cap: Capacity,
        today: date,
        touched: set[date],
        chunk_days: int,
    ) -> None:
        self.store, self.cap, self.today = store, cap, today
        self.touched = sorted(touched)
        self.chunk = max(1, chunk_days)
        self.placer = _Placer()
        # Effective-date rows of the touched dates, smoothed anew: key ->
        # (stored row, new step-1 date); they replace what the store says.
        self.resmoothed: dict[RowKey, tuple[StoredRow, date]] = {}
        self.new_on: dict[date, list[RowKey]] = {}
        self.old_on: Counter[date] = Counter()

    def _arrival(self, step1: date) -> date:
        return step1 if step1 > self.today else self.today

    def _zones(self) -> list[tuple[date, date]]:
        """Merged day ranges ``[t - W//2, t + W//2]`` (not before today), inclusive."""
        half = self.cap.window // 2
        zones: list[tuple[date, date]] = []
        for t in self.touched:
            lo = self._arrival(t - half * ONE_DAY)
            hi = self._arrival(t + half * ONE_DAY)
            if zones and lo <= zones[-1][1] + ONE_DAY:
                zones[-1] = (zones[-1][0], max(zones[-1][1], hi))
            else:
                zones.append((lo, hi))
        return zones

    async def run(self) -> RebalanceResult:
        await self._resmooth()
        zones = self._zones()
        windows = 0
        i = 0
        while i < len(zones):
            i = await self._window(zones, i)
            windows += 1
        updates = self.placer.take_updates()
        if updates:
            await self.store.save(updates)
        return RebalanceResult(len(updates), self.placer.days, windows)

    async def _resmooth(self) -> None:
        rows = await self.store.ed_rows_by_desired(self.touched)
        step1s = step1_dates([row.item for row in rows], self.cap, self.today)
        for row, step1 in zip(rows, step1s, strict=True):
            key = row.item.key
            self.resmoothed[key] = (row, step1)
            self.new_on.setdefault(self._arrival(step1), []).append(key)
            if row.step1 is not None:
                self.old_on[self._arrival(row.step1)] += 1

    async def _window(self, zones: list[tuple[date, date]], i: int) -> int:
        """Sweep one window starting at zone ``i``; returns the next zone to do."""
        day = zones[i][0]
        reach = zones[i][1] + ONE_DAY
        i += 1
        sweeper: Sweeper | None = None
        span = self.cap.window
        while True:
            if day < reach:
                hi = min(day + self.chunk * ONE_DAY, reach)
            else:
                hi = day + span * ONE_DAY
                span = min(self.chunk, span * 2)
            chunk = await self._load(day, hi)
            if sweeper is None:
                sweeper = self._open(chunk)
            for _ in range((hi - day).days):
                while i < len(zones) and zones[i][0] <= day:
                    reach = max(reach, zones[i][1] + ONE_DAY)
                    i += 1
                await self._sweep_day(day, chunk, sweeper)
                day += ONE_DAY
                if day >= reach and self._converged(day, chunk, sweeper):
                    return i

    def _open(self, chunk: _Chunk) -> Sweeper:
        # The carry into the window's first day: as stored (the old sweep saw
        # the same rows before this day). Nothing is carried into today.
        start = chunk.lo
        carry = [
            self.placer.entry(row, row.step1)
            for row in chunk.off
            if row.step1 is not None and self._arrival(row.step1) < start <= row.scheduled
        ]
        return Sweeper(self.cap, carry)

    async def _load(self, lo: date, hi: date) -> _Chunk:
        # Step-1 dates before today all arrive today.
        q_lo = date.min if lo == self.today else lo
        counts: Counter[date] = Counter()
        for step1, n in (await self.store.step1_counts(q_lo, hi)).items():
            counts[self._arrival(step1)] += n
        off = await self.store.off_day_rows(lo, hi)
        # Rows not stored on their arrival day: carried ones, and (read only
        # when the chunk starts today) rows whose step-1 date has passed.
        unsettled: dict[date, dict[RowKey, StoredRow]] = {}
        overdue = await self.store.rows_by_step1(date.min, lo) if lo == self.today else []
        for row in itertools.chain(off, overdue):
            if row.step1 is None or row.item.key in self.resmoothed:
                continue
            arrival = self._arrival(row.step1)
            if lo <= arrival < hi and row.scheduled != arrival:
                unsettled.setdefault(arrival, {})[row.item.key] = row
        return _Chunk(lo, hi, counts, off, unsettled, self._carry_sizes(off, lo, hi))

    def _carry_sizes(self, off: list[StoredRow], lo: date, hi: date) -> dict[date, int]:
        # A row is in the carry into day e when arrival < e <= scheduled.
        delta: Counter[date] = Counter()
        for row in off:
            if row.step1 is not None:
                first = max(self._arrival(row.step1) + ONE_DAY, lo)
                last = min(row.scheduled, hi)
                if first <= last:
                    delta[first] += 1
                    delta[last + ONE_DAY] -= 1
        sizes: dict[date, int] = {}
        size, day = 0, lo
        while day <= hi:
            size += delta[day]
            sizes[day] = size
            day += ONE_DAY
        return sizes

    async def _arrivals(self, day: date, chunk: _Chunk) -> list[Pending]:
        """Every row of the new sweep whose step-1 date is ``day``."""
        if chunk.full_from is None:
            chunk.full_from = day
            q_lo = date.min if day == self.today else day
            for row in await self.store.rows_by_step1(q_lo, chunk.hi):
                if row.step1 is not None and row.item.key not in self.resmoothed:
                    chunk.full.setdefault(self._arrival(row.step1), []).append(row)
        entry = self.placer.entry
        out = [entry(row, row.step1) for row in chunk.full.pop(day, ()) if row.step1 is not None]
        for key in self.new_on.get(day, ()):
            out.append(entry(*self.resmoothed[key]))
        return out

    async def _sweep_day(self, day: date, chunk: _Chunk, sweeper: Sweeper) -> None:
        placer = self.placer
        new_here = self.new_on.get(day, ())
        count = chunk.counts[day] - self.old_on[day] + len(new_here)
        if sweeper.crowded(count):
            placer.place_kept(sweeper.step(day, await self._arrivals(day, chunk)), day)
        else:
            # Everyone stays: only rows not already stored on this day change.
            placer.place_kept(sweeper.drain(day), day)
            for key in new_here:
                row, step1 = self.resmoothed[key]
                placer.place(row, step1, day)
            for row in chunk.unsettled.get(day, {}).values():
                if row.step1 is not None:
                    placer.place(row, row.step1, day)
        placer.days += 1

    def _converged(self, boundary: date, chunk: _Chunk, sweeper: Sweeper) -> bool:
        """Whether the new carry into ``boundary`` equals the stored one."""
        if chunk.carry_sizes[boundary] != len(sweeper):
            return False
        if not sweeper:
            return True
        old = [
            pending(row.item, row.step1, 0)[:REF]
            for row in chunk.off
            if row.step1 is not None and self._arrival(row.step1) < boundary <= row.scheduled
        ]
        return set(old) == {p[:REF] for p in sweeper.carried()}
