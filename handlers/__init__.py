"""Event sources: each module maps its events to the contacts they affect (SPEC 8).

:func:`affected_by` answers for one event: the set of affected contact ids,
or everyone; an event that cannot be understood raises
:class:`MalformedEvent` (logged and consumed by the caller, never retried).
The daemon's processor coalesces a batch's answers within its limits.
"""

from __future__ import annotations

from handlers import campaigns, contact_campaigns, contacts, engagement, explicit, history
from handlers.base import (
    EVERYONE,
    EventLike,
    Handler,
    MalformedEvent,
    TargetLookup,
    Targets,
)

__all__ = [
    "EVERYONE",
    "HANDLERS",
    "EventLike",
    "MalformedEvent",
    "TargetLookup",
    "Targets",
    "affected_by",
]

HANDLERS: dict[str, Handler] = {
    kind: module.affected
    for module in (contacts, campaigns, contact_campaigns, engagement, history, explicit)
    for kind in module.KINDS
}
"""Event kind -> handler; the kinds are those the triggers and upstream write."""


async def affected_by(event: EventLike, lookup: TargetLookup) -> Targets:
    """The contacts one event can affect; :class:`MalformedEvent` if unreadable."""
    handler = HANDLERS.get(event.kind) if isinstance(event.kind, str) else None
    if handler is None:
        raise MalformedEvent(f"unknown event kind {event.kind!r}")
    return await handler(event, lookup)
