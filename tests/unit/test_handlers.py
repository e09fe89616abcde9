"""Event -> affected contacts (SPEC 8.1, 8.3), with a fake lookup."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from handlers import EVERYONE, MalformedEvent, affected_by
from handlers.base import Targets


@dataclass(frozen=True)
class Ev:
    id: int
    kind: str
    contact_id: object = None
    ref: object = None
    detail: object = None


class FakeLookup:
    """A tiny campaign world.

    Types: 'aep' targets everyone; 'promo' and 'renewal' do not.
    Instances: 5 (promo) is aimed at contacts 1 and 2 and contact 9 holds one
    of its emails; 6 (renewal) at contact 3.
    """

    def __init__(self) -> None:
        self.types = {"aep": True, "promo": False, "renewal": False}
        self.by_instance = {5: {1, 2, 9}, 6: {3}}
        self.by_type = {"promo": {1, 2, 9}, "renewal": {3}}

    async def campaign_type_targets_all(self, name: str) -> bool | None:
        return self.types.get(name)

    async def contacts_of_campaign_instance(self, instance_id: int) -> set[int]:
        return set(self.by_instance.get(instance_id, set()))

    async def contacts_of_campaign_type(self, name: str) -> set[int]:
        return set(self.by_type.get(name, set()))


CASES: list[tuple[str, Ev, Targets]] = [
    ("contact row", Ev(1, "contact", contact_id=7), frozenset({7})),
    ("contact id stored as text", Ev(1, "contact", contact_id="12"), frozenset({12})),
    ("targeting row", Ev(1, "contact_campaign", contact_id=4, ref="5"), frozenset({4})),
    ("click or answer", Ev(1, "engagement", contact_id=8), frozenset({8})),
    ("history status change", Ev(1, "history", contact_id=3), frozenset({3})),
    ("explicit one contact", Ev(1, "recompute_contact", contact_id=11), frozenset({11})),
    ("explicit everyone", Ev(1, "recompute_all"), EVERYONE),
    # A type row that targets everyone (as the trigger saw it) reaches everyone.
    ("type aimed at all", Ev(1, "campaign_type", ref="aep", detail="1"), EVERYONE),
    # A targeted type reaches the contacts of its instances' targeting and emails.
    ("targeted type", Ev(1, "campaign_type", ref="promo", detail="0"), frozenset({1, 2, 9})),
    # An unreadable flag might have meant "everyone": recompute everyone.
    ("type flag unreadable", Ev(1, "campaign_type", ref="promo", detail=None), EVERYONE),
    # A deleted targeted type has no targeting left: nobody but its email holders.
    ("unknown targeted type", Ev(1, "campaign_type", ref="gone", detail="0"), frozenset()),
    # An instance of a type that (now) targets everyone reaches everyone.
    ("instance of aep", Ev(1, "campaign_instance", ref="5", detail="aep"), EVERYONE),
    (
        "instance of promo",
        Ev(1, "campaign_instance", ref="5", detail="promo"),
        frozenset({1, 2, 9}),
    ),
    # The type is unknown (deleted or misspelt): the instance's own contacts.
    (
        "instance of unknown type",
        Ev(1, "campaign_instance", ref="6", detail="nope"),
        frozenset({3}),
    ),
]


@pytest.mark.parametrize(("event", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
async def test_affected(event: Ev, expected: Targets) -> None:
    assert await affected_by(event, FakeLookup()) == expected


MALFORMED: list[tuple[str, Ev]] = [
    ("unknown kind", Ev(1, "coffee", contact_id=1)),
    ("contact without id", Ev(1, "contact")),
    ("non-numeric contact id", Ev(1, "contact", contact_id="abc")),
    ("float contact id", Ev(1, "engagement", contact_id=1.5)),
    ("boolean contact id", Ev(1, "history", contact_id=True)),
    ("recompute_contact without id", Ev(1, "recompute_contact")),
    ("instance id not a number", Ev(1, "campaign_instance", ref="x1", detail="promo")),
    ("type without a name", Ev(1, "campaign_type", ref=None, detail="0")),
    ("SQL-looking id", Ev(1, "contact", contact_id="1; DROP TABLE contacts")),
]


@pytest.mark.parametrize("event", [c[1] for c in MALFORMED], ids=[c[0] for c in MALFORMED])
async def test_malformed_events_are_reported(event: Ev) -> None:
    with pytest.raises(MalformedEvent):
        await affected_by(event, FakeLookup())
