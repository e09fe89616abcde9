"""An upstream writer process for the concurrency suite (run as a script).

``python writer_proc.py DB SECONDS SEED MAX_ID`` commits small changes to
contacts continuously for SECONDS with an ordinary 5 s busy timeout, like a
CRM would, and prints one JSON line: commits, the longest and the 99th
percentile wait for the lock (ms), and every error it got.
"""

from __future__ import annotations

import json
import random
import sqlite3
import sys
import time


def main() -> None:
    db, seconds, seed, max_id = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    rng = random.Random(seed)
    con = sqlite3.connect(db, timeout=5.0, isolation_level=None)
    waits: list[float] = []
    errors: list[str] = []
    commits = 0
    states = ["TX", "CA", "MO", "NV", "NY", "OK"]
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        started = time.monotonic()
        try:
            con.execute("BEGIN IMMEDIATE")
            waits.append((time.monotonic() - started) * 1000)
            for _ in range(rng.randint(1, 5)):
                con.execute(
                    "UPDATE contacts SET state = ?, birth_date = date('1950-01-01', ?) "
                    "WHERE id = ?",
                    (rng.choice(states), f"+{rng.randrange(4000)} days", rng.randint(1, max_id)),
                )
            con.execute("COMMIT")
            commits += 1
        except sqlite3.OperationalError as exc:
            errors.append(str(exc))
            if con.in_transaction:
                con.execute("ROLLBACK")
        time.sleep(rng.uniform(0.005, 0.03))
    waits.sort()
    p99 = waits[int(len(waits) * 0.99)] if waits else 0.0
    print(
        json.dumps(
            {
                "commits": len(waits) - len(errors),
                "max_wait_ms": round(max(waits or [0]), 1),
                "p99_wait_ms": round(p99, 1),
                "errors": errors[:20],
            }
        )
    )


if __name__ == "__main__":
    main()
