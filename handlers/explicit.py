"""Events inserted on purpose: ``recompute_contact`` and ``recompute_all`` (SPEC 8.1)."""

from __future__ import annotations

from handlers.base import EVERYONE, EventLike, TargetLookup, Targets, contact_id_of

KINDS = ("recompute_contact", "recompute_all")


async def affected(event: EventLike, lookup: TargetLookup) -> Targets:
    if event.kind == "recompute_all":
        return EVERYONE
    return frozenset({contact_id_of(event)})
