"""The crash suite (SPEC 11 I5, 13): the daemon as a process, SIGKILLed at random instants.

The daemon drains bursts of real upstream changes (see ``crashkit``) and is
killed with SIGKILL at a random instant, at least 20 times a run, and
restarted each time; every few lives the date moves on a day. Afterwards the
plan equals a full recompute for the last date, no event is left, no plan
identity is duplicated and no history row ever seen has changed. The same
for inbox ingestion: every record of every file is applied exactly once or
listed in ``rejected/``, every file ends in ``done/`` exactly once.

The default run is bounded (20 kills); ``FAULTS_CRASH_KILLS`` and
``FAULTS_CRASH_SEED`` change the count and the seed, and the ``slow``
variants run 200 kills (``pytest -m slow tests/faults/test_crash.py``).
The seed is printed; a failure is replayed with ``FAULTS_CRASH_SEED``.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import sqlite3
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

from tests.faults.blackbox import DaemonProcess, wait_for
from tests.faults.crashkit import (
    assert_final_state,
    book,
    burst,
    history,
    max_contact_id,
)
from tests.integration.daemon_helpers import TODAY, pending_events

pytestmark = pytest.mark.timeout(1800)


def _seed() -> int:
    return int(os.environ.get("FAULTS_CRASH_SEED") or random.SystemRandom().randrange(10**6))


def _kills(default: int) -> int:
    return int(os.environ.get("FAULTS_CRASH_KILLS") or default)


def _drain_and_stop(
    daemon: DaemonProcess, db: Path, today_text: str, also: Callable[[], bool] = lambda: True
) -> None:
    """Start the last life; stop it gracefully once everything is drained."""
    started_before = len(daemon.events("daemon_started"))
    daemon.start()
    wait_for(lambda: len(daemon.events("daemon_started")) > started_before, 60, "the last start")

    def settled() -> bool:
        con = sqlite3.connect(db, timeout=10)
        try:
            tick = con.execute(
                "SELECT value FROM scheduler_state WHERE key = 'last_tick'"
            ).fetchone()
            fan = con.execute("SELECT count(*) FROM scheduler_state WHERE key = 'fanout'")
            idle = pending_events(db) == 0 and tick == (today_text,) and fan.fetchone() == (0,)
            return idle and also()
        finally:
            con.close()

    wait_for(settled, 120, "the final drain")
    code, _ = daemon.terminate()
    assert code == 0, daemon.stderr()


def _work_lines(daemon: DaemonProcess) -> int:
    """Committed units of work the daemon logged so far (batches, chunks, ticks)."""
    kinds = ("batch_applied", "fanout_chunk_applied", "tick_done", "inbox_file_applied")
    return sum(len(daemon.events(kind)) for kind in kinds)


def _wait_ready(daemon: DaemonProcess, before: int) -> None:
    wait_for(lambda: daemon.notify.readies() > before, 60, "READY")


def _inbox_file(rng: random.Random, n: int, base: int) -> tuple[bytes, list[int], dict[int, str]]:
    """(content, line numbers that must be rejected, id -> e-mail it sets)."""
    lines: list[bytes] = []
    bad: list[int] = []
    sets: dict[int, str] = {}
    for i, cid in enumerate(rng.sample(range(base, base + 2000), n)):
        r = rng.random()
        if r < 0.1:
            lines.append(b'{"op":"upsert","contact":{"id":"x1","email":"bad"}}')
            bad.append(i + 1)
        elif r < 0.15:
            lines.append(b"not json at all")
            bad.append(i + 1)
        else:
            email = f"f{rng.randrange(10**9)}@example.com"
            state = rng.choice(["TX", "CA", "MO"])
            contact = {"id": cid, "email": email, "birth_date": "1950-03-20", "state": state}
            record = {"op": "upsert", "contact": contact}
            lines.append(json.dumps(record).encode())
            sets[cid] = email
    return b"\n".join(lines) + b"\n", bad, sets


def _drop(inbox: Path, name: str, content: bytes) -> None:
    inbox.mkdir(exist_ok=True)
    tmp = inbox / f".{name}.tmp"
    tmp.write_bytes(content)
    tmp.rename(inbox / name)


def run_crashes(
    tmp_path: Path, kills: int, contacts: int, *, files: bool, serving_share: float = 0.5
) -> dict[str, int]:
    """``kills`` lives of the daemon, each ended by SIGKILL at a random instant
    while upstream writes bursts (and, with ``files``, drops inbox files)."""
    seed = _seed()
    print(f"crash suite: seed={seed} kills={kills} contacts={contacts} files={files}")
    rng = random.Random(seed)
    db = book(tmp_path / "org.sqlite3", contacts, seed, TODAY)
    inbox = tmp_path / "inbox"
    seen = history(db)
    first_max = max_contact_id(db)
    next_id = [first_max + 1000]
    base = first_max + 100_000  # ids of the inbox's contacts: none of the bursts' ids
    daemon = DaemonProcess(db, tmp_path, inbox=inbox if files else None)
    dropped: dict[str, tuple[str, list[int]]] = {}
    expected_email: dict[int, str] = {}
    changes = with_batch = 0
    day = TODAY
    for life in range(kills):
        day = TODAY + timedelta(days=life // 5)
        daemon.today = day.isoformat()
        applied_before = _work_lines(daemon)
        ready_before = daemon.notify.readies()
        daemon.start()
        serving = rng.random() < serving_share
        if serving:
            # Once it serves (READY), kill it while it drains what follows.
            _wait_ready(daemon, ready_before)
        changes += burst(db, rng, next_id, rng.randint(2, 8), first_max)
        if files:
            for _ in range(rng.randint(1, 2)):
                name = f"crm-{len(dropped):04d}.ndjson"
                content, bad, sets = _inbox_file(rng, rng.randint(50, 300), base)
                _drop(inbox, name, content)
                dropped[name] = (hashlib.sha256(content).hexdigest(), bad)
                expected_email.update(sets)
        # Serving: mid-drain; else anywhere in start-up (imports, opening,
        # inbox recovery, the tick) or the first batches.
        time.sleep(rng.uniform(0.0, 0.3) if serving else rng.uniform(0.0, 2.5))
        daemon.kill()
        with_batch += _work_lines(daemon) > applied_before
        seen.update(history(db))

    def all_files_done() -> bool:
        return not files or len(list((inbox / "done").iterdir())) >= len(dropped)

    try:
        _drain_and_stop(daemon, db, day.isoformat(), all_files_done)
    finally:
        daemon.close()
    if files:
        _assert_inbox_outcome(db, inbox, dropped, expected_email, base)
    assert_final_state(db, seen, day)
    figures = {"seed": seed, "kills": kills, "upstream_changes": changes,
               "lives_that_committed_work": with_batch, "files": len(dropped)}  # fmt: skip
    print(f"crash suite: survived {json.dumps(figures)}")
    return figures


def _assert_inbox_outcome(
    db: Path,
    inbox: Path,
    dropped: dict[str, tuple[str, list[int]]],
    expected_email: dict[int, str],
    base: int,
) -> None:
    # Every file in done/ exactly once, with the content that was dropped.
    done = sorted(hashlib.sha256(p.read_bytes()).hexdigest() for p in (inbox / "done").iterdir())
    assert done == sorted(d for d, _ in dropped.values())
    assert [p.name for p in inbox.iterdir() if p.is_file()] == []
    assert list((inbox / ".processing").iterdir()) == []
    # Every rejected record listed exactly once, with its line.
    for name, (_, bad) in dropped.items():
        lists = sorted((inbox / "rejected").glob(f"{name}*.ndjson"))
        lines = [json.loads(t)["line"] for p in lists for t in p.read_text().splitlines()]
        assert sorted(lines) == sorted(bad), name
    # Every valid record applied, the files in the order they were dropped.
    con = sqlite3.connect(db)
    emails = dict(con.execute("SELECT id, email FROM contacts WHERE id >= ?", (base,)).fetchall())
    con.close()
    assert emails == expected_email


def test_crash_bursts_and_inbox(tmp_path: Path) -> None:
    # Most lives end during start-up (cheap), a third after READY, mid-drain.
    figures = run_crashes(tmp_path, _kills(20), contacts=100, files=True, serving_share=0.35)
    assert figures["kills"] >= 20


@pytest.mark.slow
def test_crash_database_bursts_long(tmp_path: Path) -> None:
    run_crashes(tmp_path, _kills(200), contacts=2000, files=False)


@pytest.mark.slow
def test_crash_inbox_ingestion_long(tmp_path: Path) -> None:
    run_crashes(tmp_path, _kills(120), contacts=500, files=True)
