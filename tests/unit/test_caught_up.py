"""Rows found to catch up, carried from read snapshots to the move (SPEC 5.11)."""

from __future__ import annotations

from service.store.catchup import NOTHING_CAUGHT_UP, CaughtUp


def test_rows_of_a_later_read_join_with_the_earlier_reads_basis() -> None:
    # The others' changes only grow: if nothing changed since the first read,
    # nothing changed since the second one either, so the joined rows are
    # still as read exactly when the first read's basis still holds.
    first = CaughtUp([(1, 10, True), (2, 10, False)], (5, 7))
    later = CaughtUp([(3, 11, True)], (6, 7))
    joined = first.then(later)
    assert joined.ids == [1, 2, 3]
    assert joined.basis == (5, 7)


def test_nothing_read_yet_takes_the_later_reads_basis() -> None:
    later = CaughtUp([(3, 11, True)], (6, 7))
    assert NOTHING_CAUGHT_UP.then(later) == later
    # No rows left from an earlier read: its basis no longer matters.
    rest = CaughtUp([], (4, 7))
    assert rest.then(later).basis == (6, 7)


def test_split_keeps_the_basis_on_both_parts() -> None:
    found = CaughtUp([(1, 10, True), (2, 10, False), (3, 11, True)], (5, 7))
    head, tail = found.split(2)
    assert (head.ids, tail.ids) == ([1, 2], [3])
    assert head.basis == tail.basis == (5, 7)
    assert len(head) == 2 and len(tail) == 1
