"""``contact_campaign`` events: a targeting row changed (SPEC 5.6).

The trigger writes one event for the old row and one for the new one, each
with its own contact id, so a row moved from one contact to another touches
both.
"""

from __future__ import annotations

from handlers.base import EventLike, TargetLookup, Targets, contact_id_of

KINDS = ("contact_campaign",)


async def affected(event: EventLike, lookup: TargetLookup) -> Targets:
    return frozenset({contact_id_of(event)})
