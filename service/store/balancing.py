"""The store side of load balancing (SPEC 6): placeholder until the protocol lands."""

from __future__ import annotations

from service.store.base import StoreBase


class BalanceMixin(StoreBase):
    """Implements the BalanceStore protocol of service.rebalance."""
