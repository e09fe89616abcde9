"""Cutting a full recompute's read chunk into write transactions (SPEC 8.3, 12)."""

from __future__ import annotations

from itertools import pairwise

from hypothesis import given
from hypothesis import strategies as st

from service.engine.chunks import split_slice, write_slices
from service.store.loaders import MAX_ID, ChunkRows
from service.store.rows import RelatedRows
from service.store.types import Scope
from service.store.writer import Prepared


def _chunk(
    lo: int, hi: int, present: list[int], planned: list[int], skipped_rows: int
) -> tuple[ChunkRows, Prepared]:
    scope = Scope.of_range(lo, hi)
    rows = ChunkRows(scope, [(c, f"c{c}@x") for c in present], RelatedRows(),
                     {c: f"print{c}" for c in present}, seq=7, untidy=False)  # fmt: skip
    prepared = Prepared(
        scope,
        entries={c: [] for c in planned},
        prints={c: f"fp{c}" for c in planned},
        states={c: (None, None, f"state{c}") for c in planned},
        skipped={c for c in present if c not in planned},
        skipped_rows=skipped_rows,
    )
    return rows, prepared


def test_a_chunk_of_seven_planned_contacts_in_slices_of_three() -> None:
    # Range 10..MAX_ID holding contacts 11..20, 11..17 planned. Slices of at
    # most 3 planned contacts end at the 3rd and 6th planned ids (13, 16);
    # the last one (17 alone) reaches to the chunk's end: 10..13, 14..16, 17..MAX_ID.
    rows, prepared = _chunk(10, MAX_ID, list(range(11, 21)), list(range(11, 18)), 9)
    parts = write_slices(rows, prepared, 3)
    assert [(r.scope.lo, r.scope.hi) for r, _ in parts] == [(10, 13), (14, 16), (17, MAX_ID)]
    assert [sorted(p.states) for _, p in parts] == [[11, 12, 13], [14, 15, 16], [17]]
    assert [sorted(p.skipped) for _, p in parts] == [[], [], [18, 19, 20]]
    assert [p.skipped_rows for _, p in parts] == [9, 0, 0]
    assert [[r[0] for r in part.contact_rows] for part, _ in parts] == [
        [11, 12, 13], [14, 15, 16], [17, 18, 19, 20]
    ]  # fmt: skip
    assert all(r.seq == 7 and p.scope == r.scope for r, p in parts)


def test_a_chunk_within_the_size_is_written_whole() -> None:
    rows, prepared = _chunk(1, 50, list(range(1, 51)), [4, 9, 30], 2)
    assert write_slices(rows, prepared, 3) == [(rows, prepared)]


@given(
    st.sets(st.integers(1, 400), max_size=120),
    st.data(),
    st.integers(1, 20),
    st.booleans(),
)
def test_slices_tile_the_range_and_keep_every_contact_once(
    ids: set[int], data: st.DataObject, size: int, last: bool
) -> None:
    present = sorted(ids)
    planned = sorted(data.draw(st.sets(st.sampled_from(present))) if present else set())
    hi = MAX_ID if last else 400
    rows, prepared = _chunk(1, hi, present, planned, 5)
    parts = write_slices(rows, prepared, size)
    # The ranges follow each other without gap or overlap from 1 to the end.
    assert parts[0][0].scope.lo == 1 and parts[-1][0].scope.hi == hi
    for (a, _), (b, _) in pairwise(parts):
        assert b.scope.lo == a.scope.hi + 1
    # Each has at most `size` planned contacts; every contact, plan, state,
    # skip and stored print is in exactly the slice whose range holds it.
    assert all(len(p.states) <= size for _, p in parts)
    for r, p in parts:
        inside = r.scope.contains
        assert p.scope == r.scope
        assert sorted(p.states) == [c for c in planned if inside(c)]
        assert sorted(p.entries) == sorted(p.prints) == sorted(p.states)
        assert sorted(p.skipped) == [c for c in present if inside(c) and c not in planned]
        assert [x[0] for x in r.contact_rows] == [c for c in present if inside(c)]
        assert sorted(r.prints) == [c for c in present if inside(c)]
    assert sum(p.skipped_rows for _, p in parts) == 5
    # No more slices than needed: ceil(planned / size), at least one.
    assert len(parts) == max(1, -(-len(planned) // size))


def test_a_slice_split_where_its_third_planned_contact_ends() -> None:
    # Range 10..MAX_ID holding contacts 11..20, 11..17 planned: three planned
    # contacts for this transaction end at 13, the rest (14..MAX_ID, planned
    # 14..17) waits for the next; the skipped rows' count goes with the first.
    rows, prepared = _chunk(10, MAX_ID, list(range(11, 21)), list(range(11, 18)), 9)
    head, rest = split_slice(rows, prepared, 3)
    assert rest is not None
    assert (head[0].scope.lo, head[0].scope.hi) == (10, 13)
    assert (rest[0].scope.lo, rest[0].scope.hi) == (14, MAX_ID)
    assert sorted(head[1].states) == [11, 12, 13] and sorted(rest[1].states) == [14, 15, 16, 17]
    assert [r[0] for r in head[0].contact_rows] == [11, 12, 13]
    assert [r[0] for r in rest[0].contact_rows] == list(range(14, 21))
    assert (head[1].skipped_rows, rest[1].skipped_rows) == (9, 0)


def test_a_slice_with_no_more_planned_contacts_than_the_size_is_not_split() -> None:
    rows, prepared = _chunk(10, 40, list(range(11, 21)), [12, 15], 0)
    head, rest = split_slice(rows, prepared, 2)
    assert rest is None and head == (rows, prepared)


@given(
    st.lists(st.booleans(), min_size=1, max_size=40),
    st.integers(min_value=1, max_value=12),
)
def test_split_parts_cover_the_range_and_the_head_holds_the_size(
    planned_flags: list[bool], size: int
) -> None:
    present = list(range(100, 100 + len(planned_flags)))
    planned = [c for c, p in zip(present, planned_flags, strict=True) if p]
    rows, prepared = _chunk(90, 500, present, planned, 4)
    head, rest = split_slice(rows, prepared, size)
    if rest is None:
        assert len(planned) <= size
        return
    assert len(head[1].states) == size
    assert head[0].scope.lo == 90 and rest[0].scope.hi == 500
    assert head[0].scope.hi + 1 == rest[0].scope.lo
    assert sorted(head[1].states) + sorted(rest[1].states) == planned
    assert [r[0] for r in head[0].contact_rows + rest[0].contact_rows] == present
