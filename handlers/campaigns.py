"""``campaign_type`` and ``campaign_instance`` events (SPEC 5.6, 8.3).

A campaign change affects every contact it targets before and after the
change. The triggers write one event for the old row and one for the new row,
so "before" and "after" are two events, each answered from its own row's
values:

- a type whose row says ``target_all_contacts`` reaches everyone;
- otherwise a type reaches the contacts named by its instances' targeting rows
  and the contacts holding any email of its instances (the plan as stored is
  the "before" picture; history emails decide follow-ups, which depend on the
  type's ``enable_followups``);
- an instance of a type that targets everyone reaches everyone, otherwise the
  contacts of its targeting rows and of its emails.

A later change to the targeting rows themselves is a ``contact_campaign``
event of its own, so answering from the current targeting rows loses nobody.
"""

from __future__ import annotations

from handlers.base import EVERYONE, EventLike, TargetLookup, Targets, as_id, as_name

KINDS = ("campaign_type", "campaign_instance")

_TRUE = frozenset({"1", "true", "yes"})
_FALSE = frozenset({"0", "false", "no"})


def _flag(value: object) -> bool | None:
    """The ``target_all_contacts`` value the trigger copied, or None if unreadable."""
    if isinstance(value, bool | int):
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    return None


async def affected(event: EventLike, lookup: TargetLookup) -> Targets:
    if event.kind == "campaign_type":
        return await _type_changed(event, lookup)
    return await _instance_changed(event, lookup)


async def _type_changed(event: EventLike, lookup: TargetLookup) -> Targets:
    name = as_name(event.ref, "ref (campaign type name)")
    # An unreadable flag could have been "everyone": err on the side of recomputing.
    if _flag(event.detail) is not False:
        return EVERYONE
    return frozenset(await lookup.contacts_of_campaign_type(name))


async def _instance_changed(event: EventLike, lookup: TargetLookup) -> Targets:
    instance_id = as_id(event.ref, "ref (campaign instance id)")
    type_name = event.detail
    if isinstance(type_name, str) and type_name:
        if await lookup.campaign_type_targets_all(type_name):
            return EVERYONE
    return frozenset(await lookup.contacts_of_campaign_instance(instance_id))
