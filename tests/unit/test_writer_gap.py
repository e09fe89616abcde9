"""The store's writer gap (SPEC 12: upstream waits p99 ≤ 50 ms, max ≤ 250 ms)."""

from __future__ import annotations

import pytest

from service.store.base import WRITER_GAP_S, lock_retry_delay, writer_gap_after

# SQLite's busy handler sleeps 1, 2, 5, 10, 15, 20, 25, 25, 25, 50, 50, 100 ms
# between attempts (cumulative 1, 3, 8, 18, 33, 53, 78, 103, 128, 178, 228,
# 328 ms). A writer that has waited as long as our streak is in one of those
# sleeps; the gap must outlast the longest one it can be in, plus 5 ms.


@pytest.mark.parametrize(
    ("streak_s", "gap_s"),
    [
        # 30 ms: the writer is at most in the 15 ms sleep (18 -> 33): 20 ms floor.
        (0.0, WRITER_GAP_S),
        (0.03, WRITER_GAP_S),
        # 100 ms: in the 25 ms sleep (78 -> 103) at most: 25 + 5.
        (0.1, 0.030),
        # 150 ms: the 50 ms sleep (128 -> 178): 55.
        (0.15, 0.055),
        # 300 ms and beyond: the 100 ms sleeps: 105.
        (0.3, 0.105),
        (5.0, 0.105),
    ],
)
def test_the_gap_outlasts_the_busy_handler_sleep_a_writer_can_be_in(
    streak_s: float, gap_s: float
) -> None:
    assert writer_gap_after(streak_s) == pytest.approx(gap_s)


def test_the_daemon_retries_a_lock_on_sqlites_busy_handler_schedule() -> None:
    # SQLite's busy handler (sqliteDefaultBusyCallback) sleeps 1, 2, 5, 10,
    # 15, 20, 25, 25, 25, 50, 50 ms, then 100 ms for every later attempt.
    expected_ms = [1, 2, 5, 10, 15, 20, 25, 25, 25, 50, 50, 100, 100, 100]
    got_ms = [round(lock_retry_delay(attempt) * 1000) for attempt in range(1, 15)]
    assert got_ms == expected_ms
