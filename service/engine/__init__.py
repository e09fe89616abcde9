"""The engine: recompute contacts, write their plan, rebalance the touched windows.

:mod:`service.engine.core` holds the recompute paths (incremental, full),
:mod:`service.engine.reference` the reference plan (dry runs, verify),
:mod:`service.engine.rebalance` the incremental and global balancing over the
stored plan, :mod:`service.engine.rebase` the rebalance after a change gathered over
several transactions, :mod:`service.engine.pacing` the chunk sizes. Callers use the
names re-exported here.
"""

from service.engine.core import (
    PlanContext,
    capacity_for,
    invalidate_balance,
    rebalance_all,
    recompute_contacts,
    record_full_plan,
)
from service.engine.fullpass import BULK_CACHE_MIB, full_recompute, recompute_range
from service.engine.rebase import (
    BalanceSince,
    balance_since,
    rebalance_from,
    rebalance_if_stale,
    rebalance_new_day,
)
from service.engine.reference import dry_run_contacts, dry_run_plan, verify

__all__ = [
    "BULK_CACHE_MIB",
    "BalanceSince",
    "PlanContext",
    "balance_since",
    "capacity_for",
    "dry_run_contacts",
    "dry_run_plan",
    "full_recompute",
    "invalidate_balance",
    "rebalance_all",
    "rebalance_from",
    "rebalance_if_stale",
    "rebalance_new_day",
    "recompute_contacts",
    "recompute_range",
    "record_full_plan",
    "verify",
]
