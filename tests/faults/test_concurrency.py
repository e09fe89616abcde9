"""The concurrency suite (SPEC 8.3, 13): upstream writers are never refused.

Two upstream writer processes commit small changes continuously with an
ordinary 5 s busy timeout while the daemon (a process) starts up, runs its
calendar tick, drains a burst, and while ``mailplan recompute --all`` runs
beside it. No writer may ever get "database is locked"; the longest wait is
printed (``-s``); afterwards the plan equals a full recompute.
``FAULTS_CONCURRENCY_SECONDS`` and ``FAULTS_CONCURRENCY_CONTACTS`` scale
it; the ``slow`` variant runs 60 s on 20,000 contacts.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest

from tests.faults.blackbox import ENV, ROOT, DaemonProcess, wait_for
from tests.faults.crashkit import assert_final_state, book, burst, history, max_contact_id
from tests.integration.daemon_helpers import TODAY, pending_events

pytestmark = pytest.mark.timeout(900)
WRITER = Path(__file__).with_name("writer_proc.py")


def _writers(db: Path, seconds: float, max_id: int) -> list[subprocess.Popen[str]]:
    return [
        subprocess.Popen(
            [sys.executable, str(WRITER), str(db), str(seconds), str(seed), str(max_id)],
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        for seed in (1, 2)
    ]


def run_concurrency(tmp_path: Path, seconds: float, contacts: int) -> list[dict[str, object]]:
    db = book(tmp_path / "org.sqlite3", contacts, 7, TODAY)
    seen = history(db)
    max_id = max_contact_id(db)
    rng = random.Random(7)
    # A burst waiting before start, and a new day: start-up, tick and drain
    # all happen while the writers write.
    burst(db, rng, [max_id + 1000], 40, max_id)
    day = TODAY + timedelta(days=1)
    writers = _writers(db, seconds, max_id)
    daemon = DaemonProcess(db, tmp_path, today=day.isoformat())
    try:
        daemon.start()
        time.sleep(seconds / 3)
        env = {**os.environ, **ENV}
        recompute = subprocess.run(
            [
                sys.executable,
                "-m",
                "service",
                "recompute",
                "--db",
                str(db),
                "--all",
                "--today",
                day.isoformat(),
            ],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env=env,
            timeout=600,
            check=False,
        )
        assert recompute.returncode == 0, recompute.stderr
        results = []
        for proc in writers:
            out, _ = proc.communicate(timeout=seconds + 120)
            results.append(json.loads(out))
        wait_for(lambda: pending_events(db) == 0, 120, "the drain")
        code, _ = daemon.terminate()
        assert code == 0, daemon.stderr()
    finally:
        for proc in writers:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        daemon.close()
    load = os.getloadavg()
    print(f"concurrency suite: {contacts} contacts, {seconds} s, load {load[0]:.1f}: {results}")
    for result in results:
        assert result["errors"] == [], result
        assert isinstance(result["commits"], int) and result["commits"] > 0
    assert_final_state(db, seen, day)
    return results


def test_writers_are_never_refused(tmp_path: Path) -> None:
    seconds = float(os.environ.get("FAULTS_CONCURRENCY_SECONDS") or 12)
    contacts = int(os.environ.get("FAULTS_CONCURRENCY_CONTACTS") or 2000)
    run_concurrency(tmp_path, seconds, contacts)


@pytest.mark.slow
def test_writers_are_never_refused_long(tmp_path: Path) -> None:
    run_concurrency(tmp_path, 60, 20_000)
