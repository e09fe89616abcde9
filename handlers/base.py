"""Shared types of the event handlers (SPEC 8.1, 8.3).

A handler turns one event of the events inbox into the set of contacts whose
plan it can change, or into :data:`EVERYONE` when it can change any plan (a
campaign aimed at all contacts, ``recompute_all``). Handlers only read; the
queries they need are the :class:`TargetLookup` protocol, which the store
implements.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from enum import Enum
from typing import Final, Protocol

from service.errors import InputError


class _Everyone(Enum):
    EVERYONE = "everyone"

    def __repr__(self) -> str:
        return "EVERYONE"


EVERYONE: Final = _Everyone.EVERYONE
"""The answer of a handler whose event can change every contact's plan."""

Targets = frozenset[int] | _Everyone


class EventLike(Protocol):
    """One row of ``scheduler_events`` as the store returns it.

    Columns written by upstream may hold any SQLite value, so the fields are
    typed loosely and checked by the handlers.
    """

    @property
    def id(self) -> int: ...
    @property
    def kind(self) -> str: ...
    @property
    def contact_id(self) -> object: ...
    @property
    def ref(self) -> object: ...
    @property
    def detail(self) -> object: ...


class TargetLookup(Protocol):
    """Read-only questions the campaign handlers ask the database."""

    async def campaign_type_targets_all(self, name: str) -> bool | None:
        """The type's ``target_all_contacts`` flag; ``None`` if no such type."""
        ...

    async def contacts_of_campaign_instance(self, instance_id: int) -> set[int]:
        """Contacts that the instance's targeting rows name, or that have any
        ``email_schedules`` row (plan or history) of that instance."""
        ...

    async def contacts_of_campaign_type(self, name: str) -> set[int]:
        """The union of :meth:`contacts_of_campaign_instance` over the type's
        instances, plus contacts with an ``email_schedules`` row whose type
        starts with ``campaign_<name>_``."""
        ...


class MalformedEvent(InputError):
    """An event that cannot be understood; it is logged and consumed."""


Handler = Callable[[EventLike, TargetLookup], Awaitable[Targets]]


def contact_id_of(event: EventLike) -> int:
    """The event's contact id, or :class:`MalformedEvent` if it is not one."""
    return as_id(event.contact_id, "contact_id")


def as_id(value: object, column: str) -> int:
    """An integer row id from a column that upstream may have filled with anything."""
    if isinstance(value, bool):
        raise MalformedEvent(f"{column} is {value!r}, not a row id")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        text = value.strip()
        if text.lstrip("+-").isdigit() and text.isascii():
            return int(text)
    raise MalformedEvent(f"{column} is {value!r}, not a row id")


def as_name(value: object, column: str) -> str:
    """A non-empty text value (a campaign type name)."""
    if isinstance(value, str) and value:
        return value
    raise MalformedEvent(f"{column} is {value!r}, not a name")
