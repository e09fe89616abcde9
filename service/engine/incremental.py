"""The incremental rebalance: the sweep redone only where a change moves it.

SPEC 6 asks that after a change only the touched windows are rebalanced and
that the result equals a global rebalance (invariant I2). This module does it
by rows, so that its cost follows the change, not the size of the days it
touches (SPEC 12: a change on a day holding 90,000 rows costs a few index
seeks, not a read of the day).

The stored state is a global balance of the *old* set of swept rows; the
change (a :class:`~service.store.types.BalanceDelta`, plus the balance gaps
others left) turns it into a new set: old versions ``gone``, new versions
``added``. Both sweeps are the same before the first day a changed row
arrives on. From there the driver walks the days on which the two sweeps
differ, holding for the day ``d`` the rows that are candidates in the new
sweep but not the old (``P``) and the reverse (``Q``). With ``n`` the old
number of candidates (from the per-day counts: arrivals plus the carry in),
``T`` the threshold and ``C`` the cap:

* old and new both ``<= T``: everyone stays; the rows of ``P`` are placed on
  ``d`` and nothing differs after ``d``.
* both ``> T`` and the old day held exactly ``C`` rows: the day's kept set is
  the forced rows (interval ending) plus the first rows of the others in
  sweep order. ``P`` and ``Q`` move its boundary by at most ``|P| + |Q|``
  places, so the rows around the boundary are read with two index seeks (the
  last kept, the first carried) and the boundary is found among them.
* both ``> T`` and the old day held more than ``C`` rows: only its forced
  rows stayed, every other candidate was carried. The new day keeps its
  forced rows and, when they are fewer than ``C``, the first rows of the old
  carry and ``P``: a seek from the start of the carry.
* otherwise (a day crossing ``T``, more forced rows than ``C`` after the
  change only): if the old day kept few rows (a small cap), those are read
  whole and the carry only from its start; else the day's candidates are
  read whole and selected as the pure sweep does.

Each day hands on the difference between the old and new carry out of it,
and the walk stops once the carries agree and no changed row arrives later.
Smoothing (step 1) is redone for the changed ``effective_date`` rows, and for
every ``effective_date`` row of a desired date whose count crosses ``L``.

The per-day counts must equal the table (:mod:`service.store.balance_days`);
where a read of a whole day disagrees with them, :class:`CountsMismatch` is
raised and the caller rebalances globally, which writes them anew.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date

import structlog

from service.planning.balance import (
    ONE_DAY,
    BalanceItem,
    Capacity,
    arrival_day,
    smoothed_date,
)
from service.planning.model import EFFECTIVE_DATE, RowKey
from service.store.interface import BalanceStore
from service.store.types import BalanceDelta, StoredRow, Update

log = structlog.get_logger(__name__)

SAVE_BATCH = 1500
"""Rows per save when the rebalance cannot commit part way."""

PAUSED_SAVE_BATCH = 250
"""Rows per save when the caller lets the rebalance commit part way (the
tick's, a new day's), the pause between saves committing once the lock was
held 25 ms: 1,500 rows took 100-150 ms at 1M contacts (the longest an
upstream writer waited, p99 over 50 ms); 250 take ~15-25 ms."""

FORGET_BATCH = 2000
"""Balance gaps taken per transaction after a walk in a snapshot."""

MAX_REGION = 16384
"""Rows read around a crowded day's boundary before reading the day whole.
At the end of a sending day the sender marks thousands of today's rows sent
between two of the daemon's batches: 4,000 such balance gaps need a region
of about 4,000 rows on each side. With 4,096 the region was given up and
today read whole at 1M contacts (94,616 rows, 1.0-1.2 s in one batch, the
daemon's RSS 148 MB against its 150 MB bound); with 16,384 the same batch
read 10,032 rows in 0.32-0.35 s (RSS 94 MB; ``bench/RESULTS.md``)."""

FEW_KEPT = 64
"""A day whose old balance kept at most this many rows, where neither of the
seeks around its boundary settles it, reads those rows whole and its carry
only from the start (:meth:`Incremental._few_kept`), not the whole day."""

CARRY_AHEAD = 256
"""Rows of a day's carry read beyond what the walk asks for, so that the
next days' carries follow from them (:class:`_CarryPrefix`), where the next
day has at most :data:`CARRY_STEP_MAX` rows."""

CARRY_KEEP = 512
"""Rows of a day's carry kept when it is followed to the next day."""

CARRY_STEP_MAX = 512
"""A day with more rows of that step-1 date than this has its carry read
anew rather than followed from the day before's (the step reads every
carried row of the day)."""

SortKey = tuple[int, date, int, str, date]


class CountsMismatch(RuntimeError):
    """The per-day counts disagree with the rows: rebalance globally."""


class Row:
    """One version of a swept row.

    ``old``: its scheduled date in the old balance (``None`` for a version
    only in the new set); ``table``: its (step-1, scheduled) dates as stored
    now (``None`` for a version only in the old set).
    """

    __slots__ = ("due", "item", "old", "sort", "step1", "table")

    def __init__(
        self,
        item: BalanceItem,
        step1: date,
        old: date | None,
        table: tuple[date, date] | None,
    ) -> None:
        self.item = item
        self.step1 = step1
        self.old = old
        self.table = table
        cid, etype, event = item.key
        self.sort: SortKey = (item.priority, step1, cid, etype, event)
        self.due = item.allowed_to

    def forced(self, day: date) -> bool:
        """Whether the row stays on ``day`` whatever the cap (its interval ends)."""
        return self.due is not None and self.due <= day


def _sort(row: Row) -> SortKey:
    return row.sort


def _stored_sort(row: StoredRow) -> SortKey:
    cid, etype, event = row.item.key
    return (row.item.priority, row.step1, cid, etype, event)  # type: ignore[return-value]


class _CarryPrefix:
    """The first rows of the stored carry out of a day
    (:meth:`~service.store.interface.BalanceStore.carried_first`), followed
    from one day to the next instead of read anew.

    Reading the first rows of a day's carry seeks the carried rows' index
    in sweep order and steps over every row that arrived later or was
    placed by then: on a book whose every day is full that is thousands of
    rows a day, about 2 ms, and a walk goes through hundreds of days. But
    the carry out of ``d + 1`` is the carry out of ``d`` less the rows
    scheduled on ``d + 1``, plus the rows of step-1 date ``d + 1`` scheduled
    later. So this keeps every row of the carry out of its day up to a bound
    in sweep order (all of it when ``bound`` is None), and steps to the next
    day with a seek for that day's carried arrivals; it reads anew only when
    what it keeps runs short, or the next day has many arrivals. The walk
    reads the table in one transaction, so what it keeps stays true."""

    __slots__ = ("bound", "day", "keys", "rows", "step1", "store")

    def __init__(self, store: BalanceStore, step1: dict[date, int]) -> None:
        self.store = store
        self.step1 = step1
        """Rows of each step-1 date (the old balance's counts)."""
        self.day: date | None = None
        self.rows: list[StoredRow] = []
        self.keys: list[SortKey] | None = None
        """The rows' sweep keys, made when first stepped from."""
        self.bound: SortKey | None = None

    async def first(self, day: date, n: int) -> list[StoredRow]:
        """What ``carried_first(day, n)`` returns."""
        if n < 0:
            self._keep(day, await self.store.carried_first(day, -1), None)
            return list(self.rows)
        if (
            self.day is not None
            and day == self.day + ONE_DAY
            and self.step1.get(day, 0) <= CARRY_STEP_MAX
        ):
            await self._step(day)
        if self.day != day or (self.bound is not None and len(self.rows) < n):
            # Read ahead only where the next day's carry can follow from
            # this one: on a book whose days are large (1M contacts, tens of
            # thousands of rows a day) each day is read anew, and rows read
            # ahead would be read for nothing.
            next_small = self.step1.get(day + ONE_DAY, 0) <= CARRY_STEP_MAX
            want = max(1, n + (CARRY_AHEAD if next_small else 0))
            rows = await self.store.carried_first(day, want)
            self._keep(day, rows, _stored_sort(rows[-1]) if len(rows) == want else None)
        return self.rows[:n]

    def _keep(
        self,
        day: date,
        rows: list[StoredRow],
        bound: SortKey | None,
        keys: list[SortKey] | None = None,
    ) -> None:
        self.day, self.rows, self.bound, self.keys = day, rows, bound, keys

    async def _step(self, day: date) -> None:
        keys = self.keys if self.keys is not None else [_stored_sort(r) for r in self.rows]
        pairs = [(k, r) for k, r in zip(keys, self.rows, strict=True) if r.scheduled > day]
        want = max(1, CARRY_AHEAD)
        arrivals = [(_stored_sort(r), r) for r in await self.store.carried_arrivals(day, want)]
        bound = self.bound
        if len(arrivals) == want:
            last = arrivals[-1][0]
            if bound is None or last < bound:
                bound = last
        if arrivals:
            # Two sorted runs: one merge (the sweep keys are unique).
            pairs = sorted(pairs + arrivals, key=_first)
        if bound is not None:
            pairs = pairs[: bisect_right([k for k, _ in pairs], bound)]
        if len(pairs) > CARRY_KEEP:
            # Followed further, a long prefix would cost its length every
            # day; the rows past it are read again if a day asks for them.
            pairs = pairs[:CARRY_KEEP]
            bound = pairs[-1][0]
        self._keep(day, [r for _, r in pairs], bound, [k for k, _ in pairs])


def _first(pair: tuple[SortKey, StoredRow]) -> SortKey:
    return pair[0]


@dataclass(frozen=True, slots=True)
class IncrementalResult:
    rows_changed: int
    days_swept: int
    windows: int
    rows_read: int = 0
    """Rows read from the store (the cost: index seeks read a few)."""
    whole_days: int = 0
    """Days read whole (crossing the threshold, forced rows above the cap)."""
    unsettled: bool = False
    """Saved in parts, a row came back into the sweep in a pause: the result
    is no basis (see :meth:`Incremental._save`)."""
    gaps: int = 0
    """Balance gaps taken up."""


@dataclass(slots=True)
class _Counts:
    """Prefix sums of the old balance's per-day counts."""

    step1: dict[date, int]
    sched: dict[date, int]
    days: list[date] = field(default_factory=list)
    step1_sum: list[int] = field(default_factory=list)
    sched_sum: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.days = sorted(set(self.step1) | set(self.sched))
        a = b = 0
        for day in self.days:
            a += self.step1.get(day, 0)
            b += self.sched.get(day, 0)
            self.step1_sum.append(a)
            self.sched_sum.append(b)

    def upto(self, day: date) -> tuple[int, int]:
        """Rows with step-1 date ``<= day``, rows scheduled ``<= day``."""
        i = bisect_right(self.days, day)
        return (self.step1_sum[i - 1], self.sched_sum[i - 1]) if i else (0, 0)


class Incremental:
    """One incremental rebalance over ``store`` (see the module docstring)."""

    def __init__(
        self,
        store: BalanceStore,
        cap: Capacity,
        today: date,
        since: tuple[Capacity, date] | None = None,
        pause: Callable[[], Awaitable[None]] | None = None,
        *,
        reads_in_lock: bool = False,
    ) -> None:
        self.store, self.cap, self.today = store, cap, today
        self.pause = pause
        """Awaited between batches of saves (the caller commits there); only
        where the caller accepts a balance committed part way."""
        self.reads_in_lock = reads_in_lock
        """With a pause: the change's versions are still read inside the
        write lock (else in a read snapshot), so that only the saves can
        meet others' writes, and those are reconciled (:meth:`_save`)."""
        # The stored balance's capacity and day (a new day rebases onto today).
        self.old_cap, self.old_today = since or (cap, today)
        if self.old_today > today or self.old_cap.window != cap.window:
            raise CountsMismatch("a balance for a later day or another window is no basis")
        self.rows: dict[RowKey, Row] = {}
        """Old-balance rows read from the table (not part of the change), by key."""
        self.delta_keys: set[RowKey] = set()
        self.gone: list[Row] = []
        self.added: list[Row] = []
        self.placed: dict[int, tuple[Row, date]] = {}
        self.days = 0
        self.windows = 0
        self.rows_read = 0
        self.whole_days = 0
        self.gaps = 0

    # -- the old view of the table -------------------------------------------

    def _old_row(self, stored: StoredRow) -> Row | None:
        self.rows_read += 1
        key = stored.item.key
        if key in self.delta_keys or stored.step1 is None:
            return None
        row = self.rows.get(key)
        if row is None:
            table = (stored.step1, stored.scheduled)
            row = self.rows[key] = Row(stored.item, stored.step1, stored.scheduled, table)
        return row

    def _arrival(self, row: Row) -> date:
        return arrival_day(row.step1, self.today)

    def _changed_on(self, keep: Iterable[Row]) -> list[Row]:
        return [r for r in keep if r.old is not None]

    async def _old_kept(self, day: date) -> list[Row]:
        """Old rows scheduled on ``day``."""
        out = [r for r in map(self._old_row, await self.store.day_rows(day)) if r is not None]
        out.extend(r for r in self.gone if r.old == day)
        return out

    async def _old_carried(self, day: date, n: int) -> list[Row]:
        """The first ``n`` (all if negative) old rows carried out of ``day``, ascending."""
        extra = sum(1 for r in self.added if r.table is not None and r.table[0] <= day < r.table[1])
        stored = await self.carry.first(day, n + extra if n >= 0 else -1)
        out = [r for r in map(self._old_row, stored) if r is not None]
        out.extend(r for r in self.gone if r.old is not None and self._arrival(r) <= day < r.old)
        out.sort(key=_sort)
        return out[:n] if n >= 0 else out

    async def _old_kept_last(self, day: date, n: int) -> tuple[list[Row], bool]:
        """The last ``n`` old rows kept on ``day`` and not forced, ascending;
        and whether those are all of them."""
        extra = sum(1 for r in self.added if r.table is not None and r.table[1] == day)
        stored = await self.store.kept_last(day, n + extra)
        complete = len(stored) < n + extra
        out = [r for r in map(self._old_row, stored) if r is not None]
        out.extend(r for r in self.gone if r.old == day and not r.forced(day))
        out.sort(key=_sort)
        if len(out) > n:
            out, complete = out[-n:], False
        return out, complete

    # -- placing ---------------------------------------------------------------

    def _place(self, row: Row, day: date) -> None:
        self.placed[id(row)] = (row, day)

    # -- the walk ----------------------------------------------------------------

    async def run(self, delta: BalanceDelta, gaps_gone: Sequence[StoredRow],
                  gaps_back: Sequence[StoredRow]) -> IncrementalResult:  # fmt: skip
        """Rebalance ``delta`` and the gaps taken (inside the write lock)."""
        gaps = _gap_counts(gaps_gone, gaps_back)
        if gaps.days:
            # Rows others moved: the counts follow the table first.
            await self.store.add_balance_days(gaps.days)
        await self._read(delta, gaps_gone, gaps_back, BalanceDelta(), in_snapshot=False)
        await self._walk()
        return await self._save(None)

    async def run_in_snapshot(self, delta: BalanceDelta) -> IncrementalResult:
        """Rebalance ``delta`` and the balance gaps, reading and walking in a
        read snapshot with the write lock left to upstream writers (the
        caller's work so far is committed first; it must have made the
        stored balance no basis), then saving in parts (``pause``).

        Everything the walk uses is read in the one snapshot: the rows, the
        counts, and the gaps recorded up to it (read, not taken, and their
        counts applied in memory). Those gaps are taken and counted when the
        lock is back; the gaps recorded after the snapshot are of rows whose
        dates were the snapshot's, and are reconciled with the moves as the
        pauses' are (:meth:`_save`)."""
        async with self.store.outside_write_lock():
            mark = await self.store.gap_mark()
            gaps_gone, gaps_back = await self.store.read_gaps(mark)
            gaps = _gap_counts(gaps_gone, gaps_back)
            await self._read(delta, gaps_gone, gaps_back, gaps, in_snapshot=True)
            await self._walk()
        # The gaps recorded since the snapshot, before those it saw are taken
        # (their ids may be reused once the table is empty).
        moves = self._moves()
        seen, unsettled = await self._reconcile(mark, moves)
        # Taken in parts (the sender's rest of a day can leave 40,000), with
        # the pauses' openings reconciled as the saves' are; the last one
        # keeps the lock, so no gap comes between it and the saves' mark.
        done = 0
        while done < mark:
            done = min(mark, done + FORGET_BATCH)
            await self.store.forget_gaps_upto(done)
            if done < mark and self.pause is not None:
                await self.pause()
                seen, others = await self._reconcile(seen, moves)
                unsettled |= others
        if gaps.days:
            await self.store.add_balance_days(gaps.days)
        return await self._save(await self.store.gap_mark(), unsettled)

    async def _read(self, delta: BalanceDelta, gaps_gone: Sequence[StoredRow],
                    gaps_back: Sequence[StoredRow], unwritten: BalanceDelta, *,
                    in_snapshot: bool) -> None:  # fmt: skip
        """The change, the old balance's counts (``unwritten``: gap counts not
        yet in the table) and the change's versions, ready for the walk."""
        self.gaps = len(gaps_gone) + len(gaps_back)
        gone, added = _net(list(delta.gone) + list(gaps_gone), list(delta.added) + list(gaps_back))
        if self.old_today < self.today:
            # Rows the old balance kept before today (not sent yet) compete
            # from today on: out at their old day, in at today.
            keys = {r.item.key for r in (*gone, *added)}
            for r in await self.store.rows_before(self.today):
                if r.item.key not in keys and r.step1 is not None:
                    gone.append(r)
                    added.append(r)
        # The counts as they are (the table) and as the old balance had them.
        stored = await self.store.balance_days()
        step1 = {d: c[0] for d, c in stored.items()}
        sched = {d: c[1] for d, c in stored.items()}
        for d, (a, b) in unwritten.days.items():
            step1[d] = step1.get(d, 0) + a
            sched[d] = sched.get(d, 0) + b
        for r in added:
            _bump(step1, sched, r.step1, r.scheduled, -1)
        for r in gone:
            _bump(step1, sched, r.step1, r.scheduled, 1)
        if self.pause is None or self.reads_in_lock or in_snapshot:
            await self._versions(gone, added)
        else:
            # The change's versions take a while (0.4-0.6 s at 1M contacts, a
            # new day's: reads of the effective-date rows and their smoothing
            # redone), and they only read: in a read snapshot, the write lock
            # left to upstream writers meanwhile (a tick's longest upstream
            # wait was this, held). The caller accepts a balance committed
            # part way and checks for gaps others left meanwhile.
            async with self.store.outside_write_lock():
                await self._versions(gone, added)
        self.counts = _Counts(step1, sched)
        self.carry = _CarryPrefix(self.store, step1)

    async def _versions(self, gone: list[StoredRow], added: list[StoredRow]) -> None:
        """The rows of the change, with the new step-1 dates (smoothing redone)."""
        for r in gone:
            self.delta_keys.add(r.item.key)
        for r in added:
            self.delta_keys.add(r.item.key)
        new_counts, crossing = await self._crossing(gone, added)
        recheck: set[date] = set()
        if self.old_today < self.today:
            # A smoothing move may not land before today: rows moved onto the
            # days that have passed since go back to their desired date.
            half = self.cap.window // 2
            first = self.old_today - half * ONE_DAY
            span = (self.today - first).days + half + 1
            recheck.update(first + k * ONE_DAY for k in range(span))
        if crossing or recheck:
            # Every effective-date row of a crossing date moves (old and new
            # versions); of a date near the days passed, those whose move changes.
            rows = await self.store.ed_rows_by_desired(sorted(crossing | recheck))
            missing = sorted({s.item.desired for s in rows} - set(new_counts))
            if missing:
                # Only compared with the limit (no changed row on these dates).
                new_counts.update(await self.store.ed_counts(missing, self.cap.ed_limit + 1))
            fresh = [s for s in rows if s.item.key not in self.delta_keys and s.step1 is not None]
            steps = _step1_dates([s.item for s in fresh], new_counts, self.cap, self.today)
            for s, s1 in zip(fresh, steps, strict=True):
                if s.item.desired not in crossing and s1 == s.step1:
                    continue
                self.delta_keys.add(s.item.key)
                gone.append(s)
                added.append(s)
        self.gone = [Row(r.item, r.step1, r.scheduled, None) for r in gone if r.step1 is not None]
        new_steps = _step1_dates([r.item for r in added], new_counts, self.cap, self.today)
        self.added = [
            Row(r.item, s1, None, (r.step1, r.scheduled) if r.step1 is not None else None)
            for r, s1 in zip(added, new_steps, strict=True)
        ]

    async def _crossing(
        self, gone: list[StoredRow], added: list[StoredRow]
    ) -> tuple[dict[date, int], set[date]]:
        """The new number of ``effective_date`` rows on each desired date that
        matters, and the dates whose crowding (more than ``L``) changes."""
        ed_days = {r.item.desired for r in (*gone, *added) if r.item.key[1] == EFFECTIVE_DATE}
        old_limit, limit = self.old_cap.ed_limit, self.cap.ed_limit
        change: dict[date, int] = {}
        for sign, rows in ((1, added), (-1, gone)):
            for r in rows:
                if r.item.key[1] == EFFECTIVE_DATE:
                    change[r.item.desired] = change.get(r.item.desired, 0) + sign
        if old_limit != limit:
            # Every date whose count lies between the two limits changes.
            new_counts = await self.store.ed_counts(None)
            ed_days.update(new_counts)
        elif ed_days:
            # The counts are only compared with the limit, before and after the
            # change: counting further than limit + |change| + 1 tells nothing
            # more (a date of a large campaign holds tens of thousands of rows).
            most = limit + max((abs(c) for c in change.values()), default=0) + 1
            new_counts = await self.store.ed_counts(sorted(ed_days), most)
        else:
            new_counts = {}
        crossing: set[date] = set()
        for day in ed_days:
            n_new = new_counts.get(day, 0)
            n_old = n_new - change.get(day, 0)
            if (n_old > old_limit) != (n_new > limit):
                crossing.add(day)
        return new_counts, crossing

    async def _walk(self) -> None:
        arrivals: dict[date, tuple[list[Row], list[Row]]] = {}
        for r in self.added:
            arrivals.setdefault(self._arrival(r), ([], []))[0].append(r)
        for r in self.gone:
            # Only the old sweep from today on matters.
            if r.old is not None and r.old >= self.today:
                arrivals.setdefault(self._arrival(r), ([], []))[1].append(r)
        old, new = self.old_cap, self.cap
        if (old.cap, old.threshold) != (new.cap, new.threshold):
            # Another cap or threshold changes every day crowded under either.
            low = min(old.threshold, new.threshold)
            for day in self.counts.days:
                if day >= self.today and self._old_n(day) > low:
                    arrivals.setdefault(day, ([], []))
        pending = sorted(arrivals)
        p: list[Row] = []
        q: list[Row] = []
        i = 0
        day = self.today
        while i < len(pending) or p or q:
            if not p and not q:
                day = pending[i]
                self.windows += 1
            if i < len(pending) and pending[i] == day:
                new_p, new_q = arrivals[day]
                p, q = p + new_p, q + new_q
                i += 1
            p, q = await self._day(day, p, q)
            self.days += 1
            day += ONE_DAY

    def _old_n(self, day: date) -> int:
        """Candidates of ``day`` in the old sweep: arrivals plus the carry in
        (rows arrived before ``day`` and not scheduled before it)."""
        if day <= self.old_today:
            return self.counts.upto(self.old_today)[0]
        arrived = self.counts.step1.get(day, 0)
        s1, sc = self.counts.upto(day - ONE_DAY)
        return arrived + s1 - sc

    async def _day(self, day: date, p: list[Row], q: list[Row]) -> tuple[list[Row], list[Row]]:
        n_old = self._old_n(day)
        n_new = n_old + len(p) - len(q)
        old, new = self.old_cap.threshold, self.cap.threshold
        if n_old <= old and n_new <= new:
            for r in p:
                self._place(r, day)
            return [], []
        if n_new <= new:
            return await self._drain(day, p, q)
        held = self.counts.sched.get(day, 0)
        if n_old > old and held > self.old_cap.cap and day >= self.old_today:
            return await self._over_cap(day, p, q, held)
        if n_old > old and held == self.old_cap.cap:
            moved = await self._boundary(day, p, q)
            if moved is not None:
                return moved
        if held <= FEW_KEPT and day >= self.old_today:
            return await self._few_kept(day, p, q, held)
        return await self._whole(day, p, q, n_old)

    async def _drain(self, day: date, p: list[Row], q: list[Row]) -> tuple[list[Row], list[Row]]:
        """A crowded day no longer crowded: its old carry stays on it."""
        gone = {id(r) for r in q}
        carried = await self._old_carried(day, -1)
        for r in p:
            self._place(r, day)
        for r in carried:
            if id(r) not in gone:
                self._place(r, day)
        return [], carried

    async def _whole(
        self, day: date, p: list[Row], q: list[Row], n_old: int
    ) -> tuple[list[Row], list[Row]]:
        """The day selected from all its candidates, as the pure sweep does."""
        self.whole_days += 1
        kept_old = await self._old_kept(day)
        carried_old = await self._old_carried(day, -1)
        if len(kept_old) + len(carried_old) != n_old:
            raise CountsMismatch(
                f"{day}: {len(kept_old) + len(carried_old)} candidates, counts say {n_old}"
            )
        gone = {id(r) for r in q}
        candidates = [r for r in (*kept_old, *carried_old) if id(r) not in gone] + p
        forced = [r for r in candidates if r.forced(day)]
        others = sorted((r for r in candidates if not r.forced(day)), key=_sort)
        room = max(0, self.cap.cap - len(forced))
        for r in forced:
            self._place(r, day)
        for r in others[:room]:
            self._place(r, day)
        carried = others[room:]
        was = {id(r) for r in carried_old}
        now = {id(r) for r in carried}
        return [r for r in carried if id(r) not in was], [
            r for r in carried_old if id(r) not in now
        ]

    async def _boundary(
        self, day: date, p: list[Row], q: list[Row]
    ) -> tuple[list[Row], list[Row]] | None:
        """A day crowded before and after whose boundary moves a few places;
        ``None`` when the rows read around it do not settle it."""
        p_forced = [r for r in p if r.forced(day)]
        p_free = [r for r in p if not r.forced(day)]
        q_forced = sum(1 for r in q if r.forced(day))
        q_ids = {id(r) for r in q}
        shift = len(p_forced) - q_forced
        grow = self.cap.cap - self.old_cap.cap
        n = len(p) + len(q) + abs(shift) + abs(grow) + 2
        while n <= MAX_REGION:
            kept, all_kept = await self._old_kept_last(day, n)
            carry = await self._old_carried(day, n)
            all_carried = len(carry) < n
            lo = None if all_kept or not kept else kept[0].sort
            hi = None if all_carried or not carry else carry[-1].sort
            kept_ids = {id(r) for r in kept}
            # Removed rows kept below the rows read, new rows sorting there.
            q_core = sum(
                1 for r in q if r.old == day and not r.forced(day) and id(r) not in kept_ids
            )
            below = [r for r in p_free if lo is not None and r.sort < lo]
            above = [r for r in p_free if hi is not None and r.sort > hi]
            middle = [
                r for r in p_free if not (lo is not None and r.sort < lo)
                and not (hi is not None and r.sort > hi)
            ]  # fmt: skip
            region = sorted([r for r in (*kept, *carry) if id(r) not in q_ids] + middle, key=_sort)
            room = len(kept) - shift + grow + q_core - len(below)
            if 0 <= room <= len(region):
                for r in (*p_forced, *below, *region[:room]):
                    self._place(r, day)
                out_p = [r for r in region[room:] if not (r.old is not None and r.old > day)]
                out_p.extend(above)
                out_q = [r for r in region[:room] if r.old is not None and r.old > day]
                out_q.extend(r for r in q if r.old is not None and r.old > day)
                return out_p, out_q
            if all_kept and (all_carried or room < 0):
                # Every kept row was read: reading more of the carry would
                # not make room for more forced rows than the cap.
                return None
            n *= 4
        return None

    async def _over_cap(
        self, day: date, p: list[Row], q: list[Row], forced_old: int
    ) -> tuple[list[Row], list[Row]]:
        """A crowded day that held more than the cap: in the old sweep only its
        forced rows stayed (``forced_old`` of them) and every other candidate
        was carried. The new day keeps its forced rows and, if they are fewer
        than the cap, the first others of the old carry and ``p``: a seek of
        that many rows, however long the carry (a book whose every day is
        full carries thousands of rows a day, most of them forced on their
        last allowed day)."""
        p_forced = [r for r in p if r.forced(day)]
        p_free = [r for r in p if not r.forced(day)]
        q_free = [r for r in q if not r.forced(day)]
        room = self.cap.cap - (forced_old + len(p_forced) - (len(q) - len(q_free)))
        for r in p_forced:
            self._place(r, day)
        if room <= 0:
            # Still only the forced rows stay: the carry differs by p and q.
            return p_free, q_free
        q_ids = {id(r) for r in q_free}
        carry = [r for r in await self._old_carried(day, room + len(q_free)) if id(r) not in q_ids]
        kept = sorted(carry + p_free, key=_sort)[:room]
        for r in kept:
            self._place(r, day)
        kept_ids = {id(r) for r in kept}
        return [r for r in p_free if id(r) not in kept_ids], q_free + [
            r for r in carry if id(r) in kept_ids
        ]

    async def _few_kept(
        self, day: date, p: list[Row], q: list[Row], held: int
    ) -> tuple[list[Row], list[Row]]:
        """A day that kept few rows (``held``, at most :data:`FEW_KEPT`):
        those are read whole, the carry only from its start. The old sweep
        kept every forced row and, in sweep order, the first others, so the
        rows it kept precede its carry. The new day keeps its forced rows
        (those kept before, less ``q``, and those of ``p``) and, where they
        are fewer than the cap, the first others of what was kept, ``p`` and
        the old carry: a seek of that many rows, however long the carry. This
        is the case of a small cap (every day full, thousands of rows
        carried a day) where a change adds forced rows to a full day."""
        kept_old = await self._old_kept(day)
        if len(kept_old) != held:
            raise CountsMismatch(f"{day}: {len(kept_old)} rows kept, counts say {held}")
        gone = {id(r) for r in q}
        stay = [r for r in kept_old if id(r) not in gone]
        forced = [r for r in (*stay, *p) if r.forced(day)]
        free = [r for r in (*stay, *p) if not r.forced(day)]
        room = max(0, self.cap.cap - len(forced))
        q_carried = [r for r in q if r.old is not None and r.old > day]
        head = [r for r in await self._old_carried(day, room + len(q_carried)) if id(r) not in gone]
        kept = sorted(free + head, key=_sort)[:room]
        for r in (*forced, *kept):
            self._place(r, day)
        kept_ids = {id(r) for r in kept}
        head_ids = {id(r) for r in head}
        # Now carried and not before: the others kept before or new in p;
        # carried before and not now: q's carried rows and the carry's kept.
        out_p = [r for r in free if id(r) not in kept_ids and id(r) not in head_ids]
        out_q = q_carried + [r for r in kept if id(r) in head_ids]
        return out_p, out_q

    # -- saving ---------------------------------------------------------------------

    async def _reconcile(
        self, mark: int, pending: Sequence[tuple[Update, tuple[date, date]]]
    ) -> tuple[int, bool]:
        """After the lock was given up with the gaps at ``mark`` and
        ``pending`` moves still to save: the new mark, and whether others'
        changes meanwhile leave the result no basis.

        The sender took rows in the opening. A row whose move is still to be
        saved stays where its gap says (its update finds it gone), while the
        rows saved around it, and the counts of its part, place it at its
        move: its gap gets the move's dates, so that the next incremental
        rebalance takes it out of the balance the rows are saved with. A row
        that came back is no such case; nor are gaps consumed by another
        process meanwhile."""
        now = await self.store.gap_mark()
        if now < mark:
            return now, True
        if now == mark:
            return mark, False
        moves = {key: (s1, day) for (key, s1, day), _ in pending}
        return now, await self.store.retarget_gaps(mark, moves)

    def _moves(self) -> list[tuple[Update, tuple[date, date]]]:
        """The walk's moves: (the update, the row's dates in the table)."""
        moves: list[tuple[Update, tuple[date, date]]] = []
        for row, day in self.placed.values():
            if row.table is None:
                continue  # an old version: gone from the table
            if row.table != (row.step1, day):
                moves.append(((row.item.key, row.step1, day), row.table))
        for row in self.added:
            if id(row) not in self.placed:
                raise CountsMismatch(f"row {row.item.key} was never placed")
        return moves

    async def _save(self, mark: int | None, unsettled: bool = False) -> IncrementalResult:
        """Save the moves. ``mark``: the gaps reconciled so far (a walk in a
        snapshot); ``unsettled``: whether that left no basis already."""
        moves = self._moves()
        step = SAVE_BATCH if self.pause is None else PAUSED_SAVE_BATCH
        if mark is None:
            mark = (
                await self.store.gap_mark() if self.pause is not None and len(moves) > step else 0
            )
        for start in range(0, len(moves), step):
            if start and self.pause is not None:
                # A large move (a new day's leftovers, the carry a sender's
                # commit pulls forward): short transactions.
                await self.pause()
                mark, others = await self._reconcile(mark, moves[start:])
                unsettled |= others
            part = moves[start : start + step]
            days = BalanceDelta()
            for (_, s1, day), (t1, t2) in part:
                days.count(t1, t2, -1)
                days.count(s1, day, 1)
            await self.store.save([u for u, _ in part])
            await self.store.add_balance_days(days.days)
        return IncrementalResult(len(moves), self.days, self.windows, self.rows_read,
                                 self.whole_days, unsettled, self.gaps)  # fmt: skip


def _gap_counts(gone: Sequence[StoredRow], back: Sequence[StoredRow]) -> BalanceDelta:
    gaps = BalanceDelta()
    for r in gone:
        gaps.count(r.step1, r.scheduled, -1)
    for r in back:
        gaps.count(r.step1, r.scheduled, 1)
    return gaps


def _net(gone: list[StoredRow], added: list[StoredRow]) -> tuple[list[StoredRow], list[StoredRow]]:
    """The change from the old balance to the table, without the versions that
    came and went in between: a change gathered over several transactions (the
    tick's) can put in a version and take it out again (a caught-up row the
    sender then sent), and that version was never in the old balance nor is
    in the table. A version taken out and put back unchanged is no change."""
    if not gone or not added:
        return gone, added
    both = Counter(gone) & Counter(added)
    if not both:
        return gone, added
    return _without(gone, both.copy()), _without(added, both)


def _without(rows: list[StoredRow], drop: Counter[StoredRow]) -> list[StoredRow]:
    out = []
    for r in rows:
        if drop[r] > 0:
            drop[r] -= 1
        else:
            out.append(r)
    return out


def _bump(step1: dict[date, int], sched: dict[date, int], s1: date | None,
          sc: date | None, sign: int) -> None:  # fmt: skip
    if s1 is None or sc is None:
        return
    step1[s1] = step1.get(s1, 0) + sign
    sched[sc] = sched.get(sc, 0) + sign


def _step1_dates(
    items: list[BalanceItem], ed_counts: dict[date, int], cap: Capacity, today: date
) -> list[date]:
    """Step 1 (smoothing) of each item, given the new number of
    ``effective_date`` rows on each desired date."""
    out = []
    for item in items:
        if item.key[1] != EFFECTIVE_DATE or ed_counts.get(item.desired, 0) <= cap.ed_limit:
            out.append(item.desired)
        else:
            out.append(smoothed_date(item, cap, today))
    return out
