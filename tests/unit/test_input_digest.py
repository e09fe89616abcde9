"""The input digest (SPEC 12: skip planning a contact whose inputs did not
change): a chunk planned again skips exactly the contacts whose rows are the
same, never a changed one, and nothing under other settings or campaigns, nor
on a later day (the daily catch-up move changes plans before their review
date)."""

from __future__ import annotations

from datetime import date, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from service.config import Settings
from service.engine import PlanContext
from service.engine.chunks import Task, input_key, plan_chunk
from service.planning.model import Campaigns, CampaignType
from service.store.loaders import MAX_ID, ChunkRows
from service.store.rows import RelatedRows
from service.store.types import Scope
from service.store.writer import WriteOptions

TODAY = date(2026, 11, 29)
CTX = PlanContext.from_settings(Settings())
CAMPAIGNS = Campaigns()
STATES = ("CA", "TX", "NY", "MO", "CT", None)

contact = st.tuples(
    st.dates(date(1940, 1, 1), date(1962, 12, 31)),
    st.dates(date(2015, 1, 1), date(2026, 6, 30)),
    st.sampled_from(STATES),
    st.booleans(),
)
# A change to one contact: a new birth date, a new state, or a click.
change = st.one_of(
    st.tuples(st.just("birth"), st.dates(date(1940, 1, 1), date(1962, 12, 31))),
    st.tuples(st.just("state"), st.sampled_from(STATES)),
    st.tuples(st.just("click"), st.integers(0, 20)),
)


def _rows(
    people: list[tuple[date, date, str | None, bool]], clicks: list[tuple[int, str]]
) -> ChunkRows:
    contacts = [
        (i + 1, f"p{i}@example.com", b.isoformat(), e.isoformat(), s, "10001", None, int(fu))
        for i, (b, e, s, fu) in enumerate(people)
    ]
    return ChunkRows(Scope.of_range(1, MAX_ID), contacts, RelatedRows(clicks=list(clicks)), {}, 0)


def _plan(rows: ChunkRows, today: date, key: bytes | None, prints: dict[int, str | None]):  # type: ignore[no-untyped-def]
    rows = ChunkRows(rows.scope, rows.contact_rows, rows.related, prints, rows.seq)
    return plan_chunk(CTX, CAMPAIGNS, Task(rows, today, key, WriteOptions("1", today=today)))


@settings(max_examples=60, deadline=None)
@given(
    people=st.lists(contact, min_size=1, max_size=8),
    changes=st.dictionaries(st.integers(1, 8), change, max_size=4),
    later=st.integers(1, 400),
)
def test_only_contacts_with_the_same_inputs_are_skipped(
    people: list[tuple[date, date, str | None, bool]],
    changes: dict[int, tuple[str, object]],
    later: int,
) -> None:
    key = input_key(CTX, CAMPAIGNS)
    assert key is not None
    before = _rows(people, [])
    first = _plan(before, TODAY, key, {})
    assert first.skipped == set()
    prints = {cid: state[2] for cid, state in first.states.items()}

    edited = list(people)
    clicks: list[tuple[int, str]] = []
    for cid, (kind, value) in changes.items():
        if cid > len(people):
            continue
        b, e, s, fu = edited[cid - 1]
        if kind == "birth":
            edited[cid - 1] = (value, e, s, fu)  # type: ignore[assignment]
        elif kind == "state":
            edited[cid - 1] = (b, e, value, fu)  # type: ignore[assignment]
        else:
            clicks.append(
                (
                    cid,
                    f"{TODAY - timedelta(days=value if isinstance(value, int) else 0)} 10:00:00",
                )
            )
    after = _rows(edited, clicks)
    # Worked out from the rows, not from the digest: a contact is unchanged
    # when its row is the same and it got no click.
    clicked = {c for c, _ in clicks}
    same = {
        r[0]
        for r, old in zip(after.contact_rows, before.contact_rows, strict=True)
        if r == old and r[0] not in clicked
    }
    second = _plan(after, TODAY, key, prints)
    assert second.skipped == same
    # Changed contacts are planned and get their new state.
    assert set(second.states) == {r[0] for r in after.contact_rows} - same
    # Other settings (or campaigns) make another key: nothing is skipped.
    other = input_key(CTX, Campaigns(types={"aep": CampaignType("aep")}))
    assert _plan(after, TODAY, other, prints).skipped == set()
    assert _plan(after, TODAY, None, prints).skipped == set()
    # A later day skips nothing.
    day = TODAY + timedelta(days=later)
    assert _plan(after, day, key, prints).skipped == set()


def test_the_same_day_keeps_the_plan_and_the_next_day_plans_again() -> None:
    # Worked example: planned on TODAY; planned again on TODAY with the same
    # inputs it is skipped; on TODAY + 1 it is planned, even though its review
    # date is later (the catch-up move may change it before then).
    rows = _rows([(date(1950, 3, 10), date(2020, 5, 1), "TX", False)], [])
    key = input_key(CTX, CAMPAIGNS)
    first = _plan(rows, TODAY, key, {})
    review = first.states[1][0]
    assert review is not None and date.fromisoformat(review) > TODAY + timedelta(days=1)
    prints = {1: first.states[1][2]}
    assert _plan(rows, TODAY, key, prints).skipped == {1}
    assert _plan(rows, TODAY + timedelta(days=1), key, prints).skipped == set()
