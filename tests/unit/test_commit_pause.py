"""The pause of a rebalance that saves in parts: it commits before the lock
has been held 25 ms, its COMMIT included (SPEC 12: upstream write waits)."""

from __future__ import annotations

import pytest

from service.engine import core
from service.engine.core import _CommitPause


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FakeStore:
    """Holds the lock from ``locked_at``; a COMMIT takes ``commit_factor``
    times as long as the hold before it (rows spread over the table)."""

    def __init__(self, clock: FakeClock, commit_factor: float) -> None:
        self.clock = clock
        self.factor = commit_factor
        self.locked_at = 0.0
        self.last_commit_s = 0.0
        self.holds: list[float] = []
        """Each transaction's whole hold: statements and COMMIT."""

    def held_s(self) -> float:
        return self.clock.now - self.locked_at

    async def commit_and_resume(self, seconds: float | None = None) -> None:
        held = self.held_s()
        self.last_commit_s = held * self.factor
        self.holds.append(held + self.last_commit_s)
        # The commit, then the writer gap; the next transaction starts after it.
        self.clock.now += self.last_commit_s + 0.020
        self.locked_at = self.clock.now


async def _run(
    commit_factor: float, step_s: float, mark: float | None = None, first: object = None
) -> tuple[_CommitPause, FakeStore]:
    """60 steps of ``step_s`` with a pause after each; the pause and the store."""
    clock = FakeClock()
    store = FakeStore(clock, commit_factor=commit_factor)
    pause = _CommitPause(store, first=first, clock=clock, mark=mark)  # type: ignore[arg-type]
    for _ in range(60):
        clock.now += step_s
        await pause()
    return pause, store


async def test_commits_before_its_commit_would_hold_the_lock_past_the_mark(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Steps of 2 ms between pause points; every COMMIT takes twice as long as
    # the statements before it. Committing once the statements alone had held
    # the lock 25 ms held it 75 ms a transaction. The first commit is
    # predicted as long as the statements (held 12 ms + 24 ms); after it, the
    # pause knows a commit costs twice the statements and commits at 8 ms
    # (8 + 16 = 24 ms, under 25 ms: one more step would have made 30 ms).
    monkeypatch.setattr(core, "COMMIT_EVERY_S", 0.025)
    pause, store = await _run(2.0, 0.002)
    assert pause.commits == len(store.holds) >= 5
    assert store.holds[0] == pytest.approx(0.036)
    assert all(h == pytest.approx(0.024) for h in store.holds[1:])


async def test_a_cheap_commit_lets_a_transaction_run_longer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Steps of 3 ms; a COMMIT a quarter as long as the statements (rows on
    # few pages): after the first commit the statements hold the lock 18 ms
    # (18 + 4.5 ms; at 15 ms one more step with its commit made 22.5 ms, at
    # 18 ms it would make 26.25 ms, past the mark).
    monkeypatch.setattr(core, "COMMIT_EVERY_S", 0.025)
    _, store = await _run(0.25, 0.003)
    assert store.holds[1:] and all(h == pytest.approx(0.0225) for h in store.holds[1:])


async def test_the_first_commit_runs_the_first_hook(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(core, "COMMIT_EVERY_S", 0.025)
    calls: list[object] = []

    async def first(s: object) -> None:
        calls.append(s)

    pause, store = await _run(1.0, 0.002, first=first)
    assert pause.commits >= 2 and calls == [store]


async def test_a_global_rebalance_aims_at_its_own_mark(monkeypatch: pytest.MonkeyPatch) -> None:
    # Steps of 3 ms, commits twice as long as the statements. The global
    # rebalance's pause aims at 30 ms (GLOBAL_COMMIT_EVERY_S): after the
    # first commit it commits at 9 ms of statements (9 + 18 = 27 ms; at 6 ms
    # one more step with its commit made 27 ms, at 9 ms it would make
    # 36 ms). The daemon's, at 25 ms, commits at 6 ms (6 + 12 = 18 ms).
    monkeypatch.setattr(core, "COMMIT_EVERY_S", 0.025)
    monkeypatch.setattr(core, "GLOBAL_COMMIT_EVERY_S", 0.030)
    _, global_store = await _run(2.0, 0.003, mark=core.GLOBAL_COMMIT_EVERY_S)
    _, daemon_store = await _run(2.0, 0.003)
    assert global_store.holds[1:]
    assert all(h == pytest.approx(0.027) for h in global_store.holds[1:])
    assert daemon_store.holds[1:]
    assert all(h == pytest.approx(0.018) for h in daemon_store.holds[1:])
