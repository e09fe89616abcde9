"""Chunk sizes that keep transactions short (service.engine.pacing)."""

from __future__ import annotations

from service.engine.pacing import MIN_CHUNK, ChunkSizer


def test_starts_at_a_quarter_of_the_ceiling() -> None:
    assert ChunkSizer(1000).size == 250
    assert ChunkSizer(100).size == MIN_CHUNK  # 25 is below the floor of 50
    assert ChunkSizer(2).size == 2  # never above the ceiling


def test_shrinks_at_once_and_grows_at_most_twofold() -> None:
    sizer = ChunkSizer(1000, target_s=0.15)
    # 250 contacts in 1.5 s: 0.15 s fits 25, floored at 50.
    sizer.record(250, 1.5)
    assert sizer.size == 50
    # 50 contacts in 0.03 s: 250 would fit, but growth is at most x2.
    sizer.record(50, 0.03)
    assert sizer.size == 100
    # 100 in 0.1 s: 150 fit.
    sizer.record(100, 0.1)
    assert sizer.size == 150
    # Very fast: doubled, then capped at the ceiling.
    for _ in range(5):
        sizer.record(sizer.size, 0.001)
    assert sizer.size == 1000


def test_empty_or_instant_chunks_change_nothing() -> None:
    sizer = ChunkSizer(1000)
    sizer.record(0, 1.0)
    sizer.record(10, 0.0)
    assert sizer.size == 250
