"""``engagement`` events: a click or a ``contact_events`` row (SPEC 5.7).

Engagement decides the kind of a contact's follow-up, so only that contact's
plan can change.
"""

from __future__ import annotations

from handlers.base import EventLike, TargetLookup, Targets, contact_id_of

KINDS = ("engagement",)


async def affected(event: EventLike, lookup: TargetLookup) -> Targets:
    return frozenset({contact_id_of(event)})
