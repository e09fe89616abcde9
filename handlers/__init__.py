"""Event sources: each module maps its events to the contacts they affect (SPEC 8).

:func:`resolve` coalesces a batch of events into one answer: the set of
affected contact ids, or everyone, plus the events that could not be
understood (logged and consumed by the caller, never retried).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from handlers import campaigns, contact_campaigns, contacts, engagement, explicit, history
from handlers.base import (
    EVERYONE,
    EventLike,
    Handler,
    MalformedEvent,
    Rejected,
    TargetLookup,
    Targets,
)

__all__ = [
    "EVERYONE",
    "HANDLERS",
    "EventLike",
    "MalformedEvent",
    "Rejected",
    "Resolution",
    "TargetLookup",
    "Targets",
    "affected_by",
    "resolve",
]

HANDLERS: dict[str, Handler] = {
    kind: module.affected
    for module in (contacts, campaigns, contact_campaigns, engagement, history, explicit)
    for kind in module.KINDS
}
"""Event kind -> handler; the kinds are those the triggers and upstream write."""


@dataclass(slots=True)
class Resolution:
    """What a batch of events means for the plan."""

    contacts: set[int] = field(default_factory=set)
    everyone: bool = False
    rejected: list[Rejected] = field(default_factory=list)


async def affected_by(event: EventLike, lookup: TargetLookup) -> Targets:
    """The contacts one event can affect; :class:`MalformedEvent` if unreadable."""
    handler = HANDLERS.get(event.kind) if isinstance(event.kind, str) else None
    if handler is None:
        raise MalformedEvent(f"unknown event kind {event.kind!r}")
    return await handler(event, lookup)


async def resolve(events: Iterable[EventLike], lookup: TargetLookup) -> Resolution:
    """Coalesce events into the affected contacts (SPEC 8.3)."""
    out = Resolution()
    for event in events:
        try:
            targets = await affected_by(event, lookup)
        except MalformedEvent as exc:
            out.rejected.append(Rejected(event.id, str(event.kind), str(exc)))
            continue
        if targets is EVERYONE:
            out.everyone = True
        else:
            out.contacts.update(targets)
    return out
