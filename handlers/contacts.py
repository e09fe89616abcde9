"""``contact`` events: a row of ``contacts`` was inserted, updated or deleted.

Only that contact's plan can change. A deleted contact is recomputed like any
other: with no contact row the planner yields no rows, so its plan rows go.
"""

from __future__ import annotations

from handlers.base import EventLike, TargetLookup, Targets, contact_id_of

KINDS = ("contact",)


async def affected(event: EventLike, lookup: TargetLookup) -> Targets:
    return frozenset({contact_id_of(event)})
