"""The daemon follows its own settings (SPEC 4, "the plan knows what built it").

The database records the planning fingerprint of the settings that built the
stored plan. At start, on SIGHUP and before each batch the daemon compares its
own fingerprint with that record; when they differ (other settings at the last
run, an operator's ``recompute --all`` under other settings, an edited rules
file reloaded) it logs which keys differ, queues a full recompute as a chunked
fan-out and records its own fingerprint, in one transaction: the queued event
stays until the fan-out's last chunk, so a crash cannot lose the rebuild.
"""

from __future__ import annotations

import structlog

from service.config import differing_keys
from service.daemon.processing import FANOUT_KEY
from service.engine import PlanContext
from service.store import Store

log = structlog.get_logger(__name__)

SETTINGS_EVENT_DETAIL = "settings changed"


async def follow_settings(store: Store, ctx: PlanContext, *, when: str) -> bool:
    """Queue a full recompute if the stored plan was built under other
    settings than ``ctx``'s; True if one was queued. ``when`` (start, reload,
    batch) goes into the log line."""
    if not ctx.fingerprint:
        return False
    if await store.plan_fingerprint() == ctx.fingerprint:
        return False
    async with store.transaction():
        basis = await store.plan_basis()
        if basis.fingerprint == ctx.fingerprint:
            return False
        keys = differing_keys(basis.settings_json, ctx.settings_json)
        # A fan-out in progress was planning under the other settings: start over
        # (its events stay pending and are consumed by the new one).
        await store.delete_state(FANOUT_KEY)
        await store.enqueue_event("recompute_all", detail=SETTINGS_EVENT_DETAIL)
        await store.set_plan_basis(ctx.fingerprint, ctx.settings_json, None)
    if basis.fingerprint is None:
        log.info("plan_settings_unknown", when=when, action="full recompute queued")
    else:
        log.warning("plan_settings_differ", when=when, keys=keys, action="full recompute queued")
    return True
