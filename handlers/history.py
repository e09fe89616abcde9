"""``history`` events: an ``email_schedules`` row entered or left a history status.

The sender taking over a planned row (status ``scheduled``), a send being
recorded, or a history row being removed changes that contact's frequency
counts, follow-ups and "already sent" decisions (SPEC 5.7, 5.9, 5.10).
"""

from __future__ import annotations

from handlers.base import EventLike, TargetLookup, Targets, contact_id_of

KINDS = ("history",)


async def affected(event: EventLike, lookup: TargetLookup) -> Targets:
    return frozenset({contact_id_of(event)})
