"""The engine: recompute contacts, write their plan, rebalance the touched windows.

:mod:`service.engine.core` holds the recompute paths (incremental, full, dry run,
verify); :mod:`service.engine.rebalance` the windowed and global balancing over
the stored plan. Callers use the names re-exported here.
"""

from service.engine.core import (
    PlanContext,
    capacity_for,
    dry_run_contacts,
    dry_run_plan,
    full_recompute,
    invalidate_balance,
    rebalance_all,
    rebalance_if_stale,
    recompute_contacts,
    recompute_range,
    record_full_plan,
    verify,
)

__all__ = [
    "PlanContext",
    "capacity_for",
    "dry_run_contacts",
    "dry_run_plan",
    "full_recompute",
    "invalidate_balance",
    "rebalance_all",
    "rebalance_if_stale",
    "recompute_contacts",
    "recompute_range",
    "record_full_plan",
    "verify",
]
