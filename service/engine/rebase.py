"""Rebalancing from an earlier global balance: after a change gathered over
several transactions (the tick's catch-up move and recomputes, SPEC 8.4), or
onto a new day or capacity alone (the end of a fan-out after a settings change).

The tick used to finish with a global rebalance: at a million contacts the
longest part of it. What the tick changes is known, row by row: the catch-up
move and the writer hand over the versions they moved
(:class:`~service.store.types.BalanceDelta`), and others' changes arrive as
balance gaps. Together with the stored balance of the day before they give
the global balance of the new day incrementally (invariant I2); a new day
alone is the same with no change of this store's (:func:`rebalance_new_day`).

Both may commit part way (the rows left from the day before can be many),
and both read the change in a read snapshot: a balance gap the sender leaves
meanwhile may fall between what the pass read and what it saved, so the
result is kept as a basis only if no gap was recorded and no other process
wrote plan rows while it ran.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import structlog

from service.engine.core import (
    BALANCE_BASIS,
    PlanContext,
    _balance_basis,
    _commit_pause,
    _parse_basis,
    _rebalance,
    capacity_for,
    invalidate_balance,
)
from service.engine.incremental import CountsMismatch
from service.engine.rebalance import rebalance
from service.planning.balance import Capacity
from service.store import RunStats, Store
from service.store.types import BalanceDelta

log = structlog.get_logger(__name__)


async def rebalance_new_day(store: Store, ctx: PlanContext, today: date) -> RunStats:
    """Inside the caller's transaction, bring the stored balance to the global
    balance for ``today`` and the day's capacity. When it is the global
    balance of an earlier day or another capacity (a settings reload that
    changed ``daily_cap``), only what the new day and capacity change is
    redone, incrementally (the result equals a global rebalance, invariant
    I2); otherwise, or if the per-day counts disagree, the rebalance is
    global."""
    cap = await capacity_for(store, ctx, today, save=True)
    if await store.get_state(BALANCE_BASIS) == _balance_basis(cap, today):
        return await _rebalance(store, ctx, today, BalanceDelta())
    return await rebalance_from(store, ctx, today, await balance_since(store), BalanceDelta())


async def rebalance_if_stale(store: Store, ctx: PlanContext, today: date) -> RunStats:
    """Bring the stored balance to the global one for today's capacity
    (inside the caller's transaction). Ends a fan-out over every contact:
    when only balancing keys changed (``daily_cap``, say) no plan row
    changes, yet every scheduled date may move (SPEC 4, 6). A balance stored
    for another capacity (or an earlier day) is rebased incrementally
    (:func:`rebalance_new_day`); nothing is done when it already is the one."""
    cap = await capacity_for(store, ctx, today, save=True)
    if await store.get_state(BALANCE_BASIS) == _balance_basis(cap, today):
        return RunStats()
    return await rebalance_new_day(store, ctx, today)


async def balance_since(store: Store) -> BalanceSince:
    """The stored balance's basis and the plan version it was read at: what
    :func:`rebalance_from` needs to rebalance incrementally later, after the
    caller made the stored balance no basis for the time in between."""
    parsed = _parse_basis(await store.get_state(BALANCE_BASIS))
    return BalanceSince(parsed, await store.plan_version())


@dataclass(frozen=True, slots=True)
class BalanceSince:
    """A global balance as it was (``basis``: its capacity and day; ``None``
    if it was none) and the plan version then (see :func:`balance_since`)."""

    basis: tuple[Capacity, date] | None
    version: tuple[int, int]


async def rebalance_from(
    store: Store, ctx: PlanContext, today: date, since: BalanceSince, delta: BalanceDelta
) -> RunStats:
    """Inside the caller's transaction: bring the balance that was the global
    one at ``since`` to the global balance for ``today``, given everything
    this store changed in the sweep since then (``delta``, gathered over
    several transactions, e.g. the tick's catch-up move and recomputes) and
    the balance gaps others left. Only what the change, the new day and the
    day's capacity move is redone (invariant I2); the rebalance is global
    when the old balance was none, when another process changed plan rows in
    between (its changes are not in ``delta``), or when the counts disagree."""
    cap = await capacity_for(store, ctx, today, save=True)
    if since.basis is None or since.basis[1] > today or since.basis[0].window != cap.window:
        return await _rebalance(store, ctx, today, None)
    if not _only_own_writes(since.version, await store.plan_version()):
        log.info("rebalance_global", reason="plan rows changed by another process")
        return await _rebalance(store, ctx, today, None)
    await invalidate_balance(store)
    pause = _commit_pause(store)
    try:
        # The reads and the walk of a new day's move (61,724 rows of the
        # catch-up and the due contacts at 1M) run in a read snapshot, the
        # lock left to upstream writers: inside it they held it 49 ms.
        result = await rebalance(store, cap, today, delta, since=since.basis, pause=pause,
                                 walk_in_snapshot=True)  # fmt: skip
    except CountsMismatch as exc:
        log.warning("balance_counts_mismatch", error=str(exc), action="global rebalance")
        return await _rebalance(store, ctx, today, None)
    # Committed part way with others writing, or gaps recorded meanwhile (the
    # rebalance consumed every gap there was when it started) that this pass
    # may have read around: no basis, the next rebalance goes global.
    if (not result.unsettled and _only_own_writes(since.version, await store.plan_version())
            and await store.gap_mark() == 0):  # fmt: skip
        await store.set_state(BALANCE_BASIS, _balance_basis(cap, today))
    else:
        log.info("rebalance_not_a_basis", reason="others wrote while it committed part way")
    return RunStats(windows_rebalanced=result.windows, rows_moved=result.rows_changed)


def _only_own_writes(then: tuple[int, int], now: tuple[int, int]) -> bool:
    return now[0] - then[0] == now[1] - then[1]
