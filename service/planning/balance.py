"""Load balancing of the non-skipped plan rows (SPEC 6).

Two steps. *Smoothing* spreads the ``effective_date`` rows of a crowded date
over ``W`` days by a stable hash (the row's *step-1 date*). The *cap sweep*
then walks the calendar from *today*: each day's candidates are the rows
whose step-1 date is that day plus the rows carried from the day before;
above the threshold ``T`` the first ``C`` stay (rows whose allowed interval
ends that day always stay) and the rest move on to the next day.

The module is built from primitives that the global driver
(``service.engine.rebalance``) reuses on rows read from the database in chunks:
:func:`smooth_date` / :func:`step1_dates` for step 1 and :class:`Sweeper`
for one day of step 2. :func:`balance` is the reference: a pure function of
the rows, the capacity and *today*.
"""

from __future__ import annotations

import hashlib
import heapq
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from itertools import compress
from operator import itemgetter
from typing import Final, NamedTuple

from service.planning.model import EFFECTIVE_DATE, RowKey
from service.planning.params import BalanceParams

ONE_DAY = timedelta(days=1)
_key = itemgetter(0)
_email_type = itemgetter(1)
_desired = itemgetter(2)


class BalanceItem(NamedTuple):
    """One non-skipped plan row as balancing sees it (SPEC 6).

    ``allowed_from``/``allowed_to`` bound the days on which the row may be
    sent; ``None`` leaves that side open (*today* still bounds it from below).
    A named tuple rather than a dataclass: millions of them are built per run.
    """

    key: RowKey
    priority: int
    desired: date
    allowed_from: date | None
    allowed_to: date | None


@dataclass(frozen=True, slots=True)
class Capacity:
    """The day's balancing parameters: cap ``C``, threshold ``T``,
    effective-date soft limit ``L`` and smoothing window ``W`` (SPEC 6)."""

    cap: int
    threshold: int
    ed_limit: int
    window: int


def _floor_times(n: int, factor: float) -> int:
    # Decimal of the shortest repr: floor(10 x 0.3) must be 3, whatever the
    # binary rounding of 0.3 makes of the float product.
    return math.floor(Decimal(n) * Decimal(repr(factor)))


def capacity(params: BalanceParams, contacts_with_email: int) -> Capacity:
    """The capacity of a day (SPEC 6): ``C = daily_cap`` if set, else
    ``floor(N x daily_send_percentage_cap)``, at least 1 either way;
    ``T = floor(C x overage_threshold)``; ``L = min(ed_daily_soft_limit,
    floor(0.3 x C))``; ``W = ed_smoothing_window_days`` (at least 1)."""
    if params.daily_cap is not None:
        cap = params.daily_cap
    else:
        cap = _floor_times(contacts_with_email, params.daily_send_percentage_cap)
    cap = max(1, cap)
    return Capacity(
        cap=cap,
        threshold=_floor_times(cap, params.overage_threshold),
        ed_limit=min(params.ed_daily_soft_limit, _floor_times(cap, 0.3)),
        window=max(1, params.ed_smoothing_window_days),
    )


def stable_hash(contact_id: int, email_type: str, year: int) -> int:
    """The smoothing hash ``H`` of SPEC 6: BLAKE2b (8-byte digest, big-endian)
    of ``"<contact_id>-<email_type>-<year>"``; stable across runs and languages."""
    text = f"{contact_id}-{email_type}-{year}".encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big")


def arrival_day(step1: date, today: date) -> date:
    """The sweep day a row first competes on (SPEC 6 step 2): its step-1
    date, or *today* for a row whose step-1 date has already passed (the
    sweep starts today)."""
    return step1 if step1 > today else today


def _smoothed(group: Iterable[BalanceItem], d: date, cap: Capacity, today: date) -> list[date]:
    window = cap.window
    # The W candidate days of this date; a move must not break a rule: never
    # before today, never outside the row's allowed interval (SPEC 6,
    # "Balancing never breaks a rule").
    targets = [d + timedelta(days=j - window // 2) for j in range(window)]
    year = d.year
    out = []
    for item in group:
        cid, etype, _ = item.key
        moved = targets[stable_hash(cid, etype, year) % window]
        if (
            moved < today
            or (item.allowed_from is not None and moved < item.allowed_from)
            or (item.allowed_to is not None and moved > item.allowed_to)
        ):
            moved = d
        out.append(moved)
    return out


def smoothed_date(item: BalanceItem, cap: Capacity, today: date) -> date:
    """The step-1 date of one ``effective_date`` row whose desired date is
    crowded (more than ``L`` such rows): the move of step 1 depends on the row
    alone once its date is crowded."""
    return _smoothed((item,), item.desired, cap, today)[0]


def smooth_date(
    items_on_d: Sequence[BalanceItem], d: date, cap: Capacity, today: date
) -> dict[RowKey, date]:
    """Step 1 of SPEC 6 for one date: the step-1 date of every
    ``effective_date`` row whose desired date is ``d``.

    ``items_on_d`` must be all of them. If there are more than ``L``, each
    moves by ``H(contact_id, email_type, year(d)) mod W - W // 2`` days unless
    that lands before *today* or outside its allowed interval.
    """
    if len(items_on_d) <= cap.ed_limit:
        return {item.key: d for item in items_on_d}
    return dict(zip(map(_key, items_on_d), _smoothed(items_on_d, d, cap, today), strict=True))


def step1_dates(items: Sequence[BalanceItem], cap: Capacity, today: date) -> list[date]:
    """Step 1 of SPEC 6 for a batch: the step-1 date of each item, in order.

    The batch must hold every item of each desired date it contains (the
    crowding of a date is counted within the batch). Rows other than
    ``effective_date`` keep their desired date.
    """
    out = list(map(_desired, items))
    types = map(_email_type, map(_key, items))
    ed_on: dict[date, list[int]] = {}
    for i in compress(range(len(out)), map(EFFECTIVE_DATE.__eq__, types)):
        group = ed_on.get(out[i])
        if group is None:
            ed_on[out[i]] = [i]
        else:
            group.append(i)
    for d, idx in ed_on.items():
        if len(idx) > cap.ed_limit:
            moved = _smoothed(map(items.__getitem__, idx), d, cap, today)
            for i, m in zip(idx, moved, strict=True):
                out[i] = m
    return out


Pending = tuple[int, date, int, str, date, "date | None", int]
"""A row in the cap sweep: (priority, step-1 date, contact_id, email_type,
event date, allowed_to, ref), ``ref`` being the caller's index of the row.
Tuple order is the sweep order of SPEC 6; the key is unique, so the last two
fields never take part in a comparison. A plain tuple: the sweep builds and
sorts hundreds of thousands of them."""

STEP1: Final = 1
DUE: Final = 5
REF: Final = 6
"""Positions in a :data:`Pending` tuple."""


def pending(item: BalanceItem, step1: date, ref: int) -> Pending:
    """The cap-sweep entry (SPEC 6 step 2) of a row with its step-1 date;
    ``ref`` comes back untouched in the rows a :class:`Sweeper` keeps."""
    cid, etype, event = item.key
    return (item.priority, step1, cid, etype, event, item.allowed_to, ref)


class Sweeper:
    """The cap sweep of SPEC 6, one calendar day at a time.

    Holds the rows carried into the next day; while anything is carried the
    days must be consecutive. The carry is a sorted list consumed from the
    front and rebuilt (a linear merge of two sorted runs) only on crowded days
    that bring new rows, so a long overload costs O(rows log rows) overall.
    Carried rows with an allowed interval are also indexed by its last day,
    when they must stay whatever the cap. The ``ref`` of every row given to
    one sweeper must be unique.
    """

    __slots__ = (
        "_cap",
        "_dated",
        "_due",
        "_due_days",
        "_gone",
        "_last",
        "_pos",
        "_queue",
        "_size",
        "_threshold",
    )

    def __init__(self, cap: Capacity, carry: Iterable[Pending] = ()) -> None:
        self._cap = cap.cap
        self._threshold = cap.threshold
        self._last: date | None = None
        self._clear()
        queue = sorted(carry)
        self._register(queue)
        self._requeue(queue)
        self._size = len(queue)

    def _clear(self) -> None:
        self._queue: list[Pending] = []
        self._pos = 0
        self._gone: set[int] = set()
        self._size = 0
        self._due: dict[date, list[Pending]] = {}
        self._due_days: list[date] = []
        self._dated: set[int] = set()

    def _requeue(self, queue: list[Pending]) -> None:
        # queue[_pos:] minus _gone (rows that left early, on their last day)
        # are the carried rows.
        self._queue = queue
        self._pos = 0
        self._gone = set()

    def _register(self, rows: Iterable[Pending]) -> None:
        for p in rows:
            due = p[DUE]
            if due is not None:
                self._dated.add(p[REF])
                group = self._due.get(due)
                if group is None:
                    self._due[due] = [p]
                    heapq.heappush(self._due_days, due)
                else:
                    group.append(p)

    def __len__(self) -> int:
        return self._size

    def crowded(self, arrivals: int) -> bool:
        """Whether a day with this many new rows has more than ``T`` candidates."""
        return self._size + arrivals > self._threshold

    def carried(self) -> list[Pending]:
        """The rows carried into the next day, in sweep order."""
        rest = self._queue[self._pos :]
        if self._gone:
            gone = self._gone
            rest = [p for p in rest if p[REF] not in gone]
        return rest

    def _check_day(self, day: date) -> None:
        if self._size and self._last is not None and day != self._last + ONE_DAY:
            raise ValueError(f"sweep skipped from {self._last} to {day} with rows carried")
        self._last = day

    def drain(self, day: date) -> list[Pending]:
        """Keep every carried row on ``day`` (a day that is not crowded)."""
        self._check_day(day)
        out = self.carried() if self._size else []
        self._clear()
        return out

    def step(self, day: date, arrivals: Sequence[Pending]) -> list[Pending]:
        """Sweep one day: returns the rows that stay on ``day``; the rest are carried."""
        if not self.crowded(len(arrivals)):
            everyone = self.drain(day)
            everyone.extend(arrivals)
            return everyone
        self._check_day(day)
        total = self._size + len(arrivals)
        kept: list[Pending] = []
        fresh: list[Pending] = []
        for p in arrivals:
            due = p[DUE]
            (kept if due is not None and due <= day else fresh).append(p)
        kept.extend(self._pop_due(day))
        if fresh:
            fresh.sort()
            self._register(fresh)
            self._requeue(sorted(self.carried() + fresh))
        room = self._cap - len(kept)
        if room > 0:
            kept.extend(self._take(room))
        self._size = total - len(kept)
        if not self._size:
            self._clear()
        elif self._pos > 4096 and self._pos * 2 > len(self._queue):
            self._requeue(self.carried())
        return kept

    def _pop_due(self, day: date) -> list[Pending]:
        out: list[Pending] = []
        due_days, dated = self._due_days, self._dated
        while due_days and due_days[0] <= day:
            for p in self._due.pop(heapq.heappop(due_days)):
                if p[REF] in dated:
                    dated.discard(p[REF])
                    self._gone.add(p[REF])
                    out.append(p)
        return out

    def _take(self, room: int) -> list[Pending]:
        queue, pos, gone = self._queue, self._pos, self._gone
        if gone:
            taken = []
            while room and pos < len(queue):
                p = queue[pos]
                pos += 1
                if p[REF] not in gone:
                    taken.append(p)
                    room -= 1
        else:
            taken = queue[pos : pos + room]
            pos += len(taken)
        self._pos = pos
        if self._dated:
            dated = self._dated
            for p in taken:
                if p[DUE] is not None:
                    dated.discard(p[REF])
        return taken


def balance(
    items: Iterable[BalanceItem], cap: Capacity, today: date
) -> dict[RowKey, tuple[date, date]]:
    """Global load balancing (SPEC 6): row key -> (step-1 date, scheduled date).

    A pure function of the multiset of items, the capacity and *today*. The
    sweep runs from *today* to the last day anything is pending; a row whose
    step-1 date has passed competes from *today*. Row keys must be unique.
    """
    rows = items if isinstance(items, list) else list(items)
    step1s = step1_dates(rows, cap, today)
    arrivals = [s if s > today else today for s in step1s]
    # Rows are grouped by day only once a day turns out crowded: on the
    # common, uncrowded day every row simply stays on its arrival day.
    sched = arrivals.copy()
    per_day = Counter(arrivals)
    groups: dict[date, list[int]] | None = None
    sweeper = Sweeper(cap)
    day = today
    for arrival in sorted(per_day):
        while sweeper and day < arrival:
            _place(sched, day, sweeper.step(day, ()))
            day += ONE_DAY
        day = arrival
        if sweeper.crowded(per_day[day]):
            if groups is None:
                groups = _group(arrivals, day)
            todays = [pending(rows[i], step1s[i], i) for i in groups[day]]
            _place(sched, day, sweeper.step(day, todays))
        else:
            _place(sched, day, sweeper.drain(day))
        day += ONE_DAY
    while sweeper:
        _place(sched, day, sweeper.step(day, ()))
        day += ONE_DAY
    out = dict(zip(map(_key, rows), zip(step1s, sched, strict=True), strict=True))
    if len(out) != len(rows):
        raise ValueError("balance() needs unique row keys")
    return out


def _group(arrivals: list[date], since: date) -> dict[date, list[int]]:
    groups: dict[date, list[int]] = {}
    for i, d in enumerate(arrivals):
        if d >= since:
            group = groups.get(d)
            if group is None:
                groups[d] = [i]
            else:
                group.append(i)
    return groups


def _place(sched: list[date], day: date, kept: Iterable[Pending]) -> None:
    for p in kept:
        sched[p[REF]] = day
