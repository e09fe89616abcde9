"""Windowed and global rebalancing over a store (SPEC 6, invariant I2).

An in-memory :class:`~service.store.memory.MemoryBalanceStore` stands in for SQLite. It follows the
writer's contract: an inserted row, or a row whose desired date changed,
starts with step-1 and scheduled date at its desired date; a row updated
otherwise keeps its stored dates. ``touched`` is built as the engine builds
it: new and old desired dates, and the old desired-to-scheduled span.
"""

from __future__ import annotations

import random
from datetime import date, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.engine.rebalance import RebalanceResult, rebalance
from service.planning.balance import BalanceItem, Capacity, balance
from service.planning.model import RowKey
from service.store.memory import MemoryBalanceStore
from service.store.types import StoredRow

D = date.fromisoformat
ED = "effective_date"
BD = "birthday"
TODAY = D("2027-01-10")
DAY = timedelta(days=1)


def row(
    cid: int, desired: str, priority: int = 10, etype: str = BD, allowed_to: str | None = None
) -> BalanceItem:
    d = D(desired)
    return BalanceItem((cid, etype, d), priority, d, None, D(allowed_to) if allowed_to else None)


# --- constructed cases -----------------------------------------------------

ROOMY = Capacity(cap=10, threshold=12, ed_limit=3, window=5)


def sixty_days() -> list[BalanceItem]:
    # Two birthday rows a day for 60 days: never crowded under ROOMY.
    start = TODAY
    return [row(100 * n + k, (start + n * DAY).isoformat()) for n in range(60) for k in range(2)]


async def test_one_change_sweeps_only_its_window() -> None:
    store = MemoryBalanceStore()
    store.load_balanced(sixty_days(), ROOMY, TODAY)
    touched: set[date] = set()
    store.insert(row(9999, "2027-02-09"), touched)  # day 30 of 60
    result = await rebalance(store, ROOMY, TODAY, touched)
    # Window [02-07, 02-11] (W // 2 = 2 either side); the carry is empty
    # before and after, so the sweep stops right there: 5 days, not 60.
    assert result.days_swept == 5
    assert result.windows == 1
    assert result.rows_changed == 0  # the new row stays on its desired date
    assert store.state() == MemoryBalanceStore.state(_fresh(store, ROOMY))
    # No day was crowded: no full read of rows by step-1 date.
    assert store.calls["rows_by_step1"] == 0


async def test_far_apart_changes_are_separate_windows() -> None:
    store = MemoryBalanceStore()
    store.load_balanced(sixty_days(), ROOMY, TODAY)
    touched: set[date] = set()
    store.insert(row(9998, "2027-01-20"), touched)
    store.delete((5000, BD, D("2027-03-01")), touched)
    result = await rebalance(store, ROOMY, TODAY, touched)
    assert result.windows == 2
    assert result.days_swept == 10


async def test_crowded_change_runs_until_the_carry_matches() -> None:
    # C = 2, T = 2, W = 1. Three rows on 01-12: the third is carried to
    # 01-13, which already has two rows, so it pushes the worst of those to
    # 01-14, and so on: the stored state is a chain of carries.
    cap = Capacity(cap=2, threshold=2, ed_limit=9, window=1)
    items = [row(1, "2027-01-12", 10), row(2, "2027-01-12", 20), row(3, "2027-01-12", 30)]
    items += [row(10 + n, (D("2027-01-13") + n * DAY).isoformat(), 20) for n in range(8)]
    items += [row(30 + n, (D("2027-01-13") + n * DAY).isoformat(), 40) for n in range(8)]
    store = MemoryBalanceStore()
    store.load_balanced(items, cap, TODAY)
    # 01-12: 1, 2 stay; 3 carried. 01-13: 3 (p30), 10 (p20), 30 (p40): keep
    # 10 and 3, carry 30; and so on: each day's p40 row slips one day.
    assert store.rows[(30, BD, D("2027-01-13"))].scheduled == D("2027-01-14")
    assert store.rows[(37, BD, D("2027-01-20"))].scheduled == D("2027-01-21")
    touched: set[date] = set()
    store.delete((3, BD, D("2027-01-12")), touched)
    result = await rebalance(store, cap, TODAY, touched)
    # Without row 3 nothing is carried any more: the window runs from 01-12
    # over the whole chain (9 days) and every p40 row returns to its day.
    assert store.rows[(30, BD, D("2027-01-13"))].scheduled == D("2027-01-13")
    assert result.rows_changed == 8
    assert result.days_swept == 10
    assert store.state() == MemoryBalanceStore.state(_fresh(store, cap))


async def test_deleting_a_carried_row_touches_its_old_span() -> None:
    # C = 1, T = 1, W = 1 (no smoothing).
    # 01-11: A p10, X p20 -> keep A, carry X.
    # 01-12: X, B p10      -> keep B, carry X.
    # 01-13: X, C p30      -> keep X, carry C.
    # 01-14: C             -> stays.
    cap = Capacity(cap=1, threshold=1, ed_limit=9, window=1)
    a, x = row(1, "2027-01-11", 10), row(2, "2027-01-11", 20)
    b, c = row(3, "2027-01-12", 10), row(4, "2027-01-13", 30)
    store = MemoryBalanceStore()
    store.load_balanced([a, x, b, c], cap, TODAY)
    assert store.rows[x.key].scheduled == D("2027-01-13")
    assert store.rows[c.key].scheduled == D("2027-01-14")
    # Deleting X frees 01-13 for C. Knowing only X's desired date, the window
    # would be 01-11 alone: the carry into 01-12 is empty before and after,
    # yet C's day changed two days later - which is why `touched` also holds
    # the old desired-to-scheduled span.
    touched: set[date] = set()
    store.delete(x.key, touched)
    assert touched == {D("2027-01-11"), D("2027-01-12"), D("2027-01-13")}
    partial = MemoryBalanceStore(dict(store.rows))
    await rebalance(partial, cap, TODAY, {D("2027-01-11")})
    assert partial.rows[c.key].scheduled == D("2027-01-14")  # stale
    await rebalance(store, cap, TODAY, touched)
    assert store.rows[c.key].scheduled == D("2027-01-13")
    assert store.state() == MemoryBalanceStore.state(_fresh(store, cap))


async def test_resmoothing_a_touched_date_moves_its_neighbours() -> None:
    # L = 3: three ED rows on 01-20 stay; a fourth makes the date crowded and
    # all four move by their hash (SPEC 6 step 1), also the untouched three.
    items = [row(101 + n, "2027-01-20", 20, ED) for n in range(3)]
    store = MemoryBalanceStore()
    store.load_balanced(items, ROOMY, TODAY)
    assert {r.step1 for r in store.rows.values()} == {D("2027-01-20")}
    touched: set[date] = set()
    store.insert(row(104, "2027-01-20", 20, ED), touched)
    await rebalance(store, ROOMY, TODAY, touched)
    # b2sum shifts (see test_balance): 101 -1, 102 +1, 103 -2, 104 -2.
    assert {k[0]: r.step1 for k, r in store.rows.items()} == {
        101: D("2027-01-19"),
        102: D("2027-01-21"),
        103: D("2027-01-18"),
        104: D("2027-01-18"),
    }


async def test_global_rebalance_from_any_stored_state() -> None:
    store = MemoryBalanceStore()
    items = [*sixty_days(), row(7, "2027-01-01", 10)]  # a row before today
    for it in items:
        store.rows[it.key] = StoredRow(it, None, it.desired - 3 * DAY)
    result = await rebalance(store, ROOMY, TODAY, None, chunk_days=7)
    assert store.state() == MemoryBalanceStore.state(_fresh(store, ROOMY))
    assert result.rows_changed == len(items)
    assert result.windows == 1


async def test_nothing_touched_does_nothing() -> None:
    store = MemoryBalanceStore()
    store.load_balanced(sixty_days(), ROOMY, TODAY)
    assert await rebalance(store, ROOMY, TODAY, set()) == RebalanceResult()
    assert not store.calls
    assert await rebalance(MemoryBalanceStore(), ROOMY, TODAY, None) == RebalanceResult()


def _fresh(store: MemoryBalanceStore, cap: Capacity) -> MemoryBalanceStore:
    fresh = MemoryBalanceStore()
    fresh.load_balanced(store.items(), cap, TODAY)
    return fresh


# --- invariant I2 ----------------------------------------------------------

TYPES = (ED, ED, ED, BD, "post_window")


@st.composite
def new_item(draw: st.DrawFn, cid: int) -> BalanceItem:
    etype = draw(st.sampled_from(TYPES))
    desired = TODAY + draw(st.integers(-2, 24)) * DAY
    event = desired + draw(st.integers(0, 2)) * DAY
    a_to = None
    if draw(st.booleans()):
        a_to = max(TODAY, desired) + draw(st.integers(0, 3)) * DAY
    prio = draw(st.sampled_from((10, 20, 30)))
    return BalanceItem((cid, etype, event), prio, desired, None, a_to)


@st.composite
def scenario(draw: st.DrawFn) -> tuple[Capacity, list[BalanceItem]]:
    cap = Capacity(
        cap=draw(st.integers(1, 4)),
        threshold=0,
        ed_limit=draw(st.integers(0, 3)),
        window=draw(st.integers(1, 6)),
    )
    cap = Capacity(cap.cap, cap.cap + draw(st.integers(-1, 2)), cap.ed_limit, cap.window)
    n = draw(st.integers(0, 45))
    seen: dict[RowKey, BalanceItem] = {}
    for cid in range(1, n + 1):
        it = draw(new_item(cid % 15 + 1))
        seen.setdefault(it.key, it)
    return cap, list(seen.values())


def _change(data: st.DataObject, store: MemoryBalanceStore) -> set[date]:
    """One batch of writes, each row changed at most once; returns touched."""
    touched: set[date] = set()
    keys = sorted(store.rows)
    chosen = data.draw(st.lists(st.sampled_from(keys), unique=True, max_size=6)) if keys else []
    for key in chosen:
        op = data.draw(st.sampled_from(("delete", "move", "priority", "interval")))
        old = store.rows[key].item
        if op == "delete":
            store.delete(key, touched)
        elif op == "move":
            desired = TODAY + data.draw(st.integers(-2, 24)) * DAY
            store.update(old._replace(desired=desired, allowed_to=None), touched)
        elif op == "priority":
            store.update(old._replace(priority=data.draw(st.sampled_from((5, 25, 60)))), touched)
        else:
            a_to = max(TODAY, old.desired) + data.draw(st.integers(0, 2)) * DAY
            store.update(old._replace(allowed_to=a_to), touched)
    for _ in range(data.draw(st.integers(0, 4))):
        it = data.draw(new_item(data.draw(st.integers(100, 130))))
        if it.key not in store.rows:
            store.insert(it, touched)
    return touched


@settings(max_examples=150, deadline=None)
@given(scenario(), st.data(), st.sampled_from((1, 2, 3, 32)))
async def test_windowed_equals_global(
    case: tuple[Capacity, list[BalanceItem]], data: st.DataObject, chunk_days: int
) -> None:
    cap, items = case
    store = MemoryBalanceStore()
    store.load_balanced(items, cap, TODAY)
    for _ in range(data.draw(st.integers(1, 3))):
        touched = _change(data, store)
        await rebalance(store, cap, TODAY, touched, chunk_days=chunk_days)
        expected = balance(store.items(), cap, TODAY)
        assert store.state() == expected


@settings(max_examples=60, deadline=None)
@given(scenario(), st.data())
async def test_global_equals_balance(
    case: tuple[Capacity, list[BalanceItem]], data: st.DataObject
) -> None:
    cap, items = case
    store = MemoryBalanceStore()
    for it in items:
        junk = TODAY + data.draw(st.integers(-3, 30)) * DAY
        store.rows[it.key] = StoredRow(it, data.draw(st.none() | st.just(junk)), junk)
    chunk = data.draw(st.integers(1, 40))
    await rebalance(store, cap, TODAY, None, chunk_days=chunk)
    assert store.state() == balance(items, cap, TODAY)


def _random_item(rnd: random.Random, cid: int) -> BalanceItem:
    desired = TODAY + rnd.randint(-2, 40) * DAY
    a_to = max(TODAY, desired) + rnd.randint(0, 3) * DAY if rnd.random() < 0.4 else None
    a_from = None
    if desired >= TODAY and rnd.random() < 0.3:
        a_from = max(TODAY, desired - rnd.randint(0, 3) * DAY)
    event = desired + rnd.randint(0, 2) * DAY
    return BalanceItem(
        (cid, rnd.choice(TYPES), event), rnd.choice((10, 20, 30, 40)), desired, a_from, a_to
    )


def _random_change(rnd: random.Random, store: MemoryBalanceStore) -> set[date]:
    touched: set[date] = set()
    keys = sorted(store.rows)
    for key in rnd.sample(keys, min(len(keys), rnd.randint(0, 5))):
        old = store.rows[key]
        op = rnd.choice(("delete", "move", "priority", "interval"))
        if op == "delete":
            store.delete(key, touched)
        elif op == "move":
            moved = TODAY + rnd.randint(-2, 40) * DAY
            store.update(
                old.item._replace(desired=moved, allowed_from=None, allowed_to=None), touched
            )
        elif op == "priority":
            store.update(old.item._replace(priority=rnd.choice((5, 25, 60))), touched)
            if rnd.random() < 0.5:
                # The writer may also start the row's balancing over.
                d = old.item.desired
                store.rows[key] = store.rows[key]._replace(step1=d, scheduled=d)
        else:
            a_to = max(TODAY, old.item.desired) + rnd.randint(0, 2) * DAY
            store.update(old.item._replace(allowed_to=a_to), touched)
    for _ in range(rnd.randint(0, 5)):
        it = _random_item(rnd, rnd.randint(200, 260))
        if it.key not in store.rows:
            store.insert(it, touched)
    return touched


@pytest.mark.parametrize("seed", range(40))
async def test_windowed_equals_global_on_larger_books(seed: int) -> None:
    # Up to 400 rows over six weeks, several rounds of changes: long carries,
    # many windows, smoothing crossing L both ways.
    rnd = random.Random(seed)
    c = rnd.randint(1, 12)
    cap = Capacity(
        c, int(c * rnd.choice((0.7, 1.0, 1.2, 1.5))), rnd.randint(0, 4), rnd.randint(1, 7)
    )
    items = {
        it.key: it
        for it in (_random_item(rnd, rnd.randint(1, 150)) for _ in range(rnd.randint(0, 400)))
    }
    store = MemoryBalanceStore()
    store.load_balanced(list(items.values()), cap, TODAY)
    chunk = rnd.choice((1, 2, 3, 5, 32))
    for _ in range(4):
        touched = _random_change(rnd, store)
        await rebalance(store, cap, TODAY, touched, chunk_days=chunk)
        assert store.state() == balance(store.items(), cap, TODAY)
