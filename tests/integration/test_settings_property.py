"""I1 under changing settings (SPEC 4, 11): random sequences of settings changes
(planning keys and in-place edits of the rules file) applied through daemon
restarts, SIGHUP reloads and the commands' bodies (``recompute --all``,
``recompute --contact``), mixed with upstream changes and day advances. After
the daemon has drained, ``export`` equals ``recompute --all --dry-run`` under
the daemon's settings and *today*.

The default profile (8 examples, about 15 s) draws fresh examples on every run;
``.venv/bin/pytest -m slow tests/integration/test_settings_property.py`` runs
a larger one with longer sequences.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service import engine
from service.commands.fingerprint import refuse_if_differs
from service.config import Settings, load_settings
from service.engine import PlanContext
from service.errors import UsageError
from service.store import init_db, open_store
from tests.integration.daemon_helpers import (
    SEED_SQL,
    TODAY,
    assert_plan_is_full_recompute,
    local_noon,
    running_daemon,
    upstream,
)

_HEALTH = [HealthCheck.too_slow, HealthCheck.data_too_large]
EXAMPLES = settings(max_examples=8, deadline=None, suppress_health_check=_HEALTH)
NIGHTLY = settings(max_examples=40, deadline=None, suppress_health_check=_HEALTH)

RULES = {
    "tx_window": '[[rule]]\nstate = "TX"\nkind = "birthday"\nbefore_days = 0\n'
    'after_days = 20\nnote = "t"\n',
    "tx_year_round": '[[rule]]\nstate = "TX"\nkind = "year_round"\nnote = "t"\n',
    "annual": '[[rule]]\nstate = "CA"\nkind = "annual_period"\nfrom = "03-01"\n'
    'to = "04-15"\nnote = "t"\n[[rule]]\nstate = "MO"\nkind = "effective_date"\n'
    'before_days = 30\nafter_days = 33\nnote = "t"\n',
    "builtin_like": '[[rule]]\nstate = "CA"\nkind = "birthday"\nbefore_days = 30\n'
    'after_days = 60\nnote = "t"\n[[rule]]\nstate = "NY"\nkind = "year_round"\nnote = "t"\n',
}

KEYS = st.fixed_dictionaries(
    {
        "horizon_days": st.sampled_from(["60", "90", "30"]),
        "pre_window_buffer_days": st.sampled_from(["60", "20"]),
        "enable_post_window_emails": st.sampled_from(["true", "false"]),
        "daily_cap": st.sampled_from(["3", "2"]),
    }
)

UPSTREAM = [
    "UPDATE contacts SET birth_date = '1950-03-25' WHERE id = 1;",
    "UPDATE contacts SET state = 'CA', zip_code = '90210' WHERE id = 8;",
    "UPDATE contacts SET effective_date = '2020-03-20' WHERE id = 4;",
    "INSERT OR REPLACE INTO contacts (id, email, birth_date, state) VALUES (20, 'n@example.com', "
    "'1951-04-05', 'TX');",
    "DELETE FROM contacts WHERE id = 3;",
    "INSERT INTO email_schedules (contact_id, email_type, scheduled_send_date, status, "
    "actual_send_datetime) VALUES (2, 'birthday', '2026-02-20', 'sent', '2026-02-20 15:00:00');",
]

STEPS = st.one_of(
    st.tuples(st.just("restart"), KEYS),
    st.tuples(st.just("sighup"), KEYS),
    st.tuples(st.just("cli_all"), KEYS),
    st.tuples(st.just("cli_contact"), KEYS, st.sampled_from([1, 2, 4, 8])),
    st.tuples(st.just("rules"), st.sampled_from(sorted(RULES))),
    st.tuples(st.just("upstream"), st.sampled_from(UPSTREAM)),
    st.tuples(st.just("day"), st.integers(1, 20)),
)


@dataclass
class World:
    db: Path
    rules: Path
    keys: dict[str, str] = field(default_factory=dict)
    """The daemon's configuration source: what a restart or SIGHUP reads."""

    def load(self, keys: dict[str, str] | None = None) -> Settings:
        return load_settings(None, {}, {**(keys or self.keys), "state_rules": str(self.rules)})


async def _command_recompute_all(world: World, keys: dict[str, str], today: date) -> None:
    # The body of `mailplan recompute --all` (service.cli.cmd_recompute).
    cfg = world.load(keys)
    async with open_store(world.db) as store:
        await engine.full_recompute(store, PlanContext.from_settings(cfg), today, trigger="cli")


async def _command_recompute_contact(
    world: World, keys: dict[str, str], contact: int, today: date
) -> bool:
    # The body of `mailplan recompute --contact ID`: refused under other settings.
    cfg = world.load(keys)
    async with open_store(world.db) as store:
        try:
            await refuse_if_differs(store, cfg, "mailplan recompute --contact")
        except UsageError:
            return False
        async with store.transaction():
            run_id = await store.start_run("cli-contacts", today)
            ctx = PlanContext.from_settings(cfg)
            await engine.recompute_contacts(store, ctx, [contact], today, run_id)
    return True


Step = tuple[Any, ...]
"""(kind, argument...): see STEPS."""


async def _scenario(world: World, steps: list[Step]) -> None:
    clock_start = local_noon(TODAY)
    pending = list(steps)
    while True:
        cfg = world.load()
        async with running_daemon(
            world.db, cfg, start=clock_start, reload_settings=world.load
        ) as run:
            await run.settle()
            while pending:
                step = pending.pop(0)
                kind = step[0]
                today = run.clock.today()
                if kind == "restart":
                    world.keys = dict(step[1])
                    break
                if kind == "sighup":
                    world.keys = dict(step[1])
                    run.daemon.wake("reload")
                elif kind == "cli_all":
                    await _command_recompute_all(world, dict(step[1]), today)
                elif kind == "cli_contact":
                    await _command_recompute_contact(world, dict(step[1]), step[2], today)
                elif kind == "rules":
                    world.rules.write_text(RULES[str(step[1])])
                elif kind == "upstream":
                    await anyio.to_thread.run_sync(upstream, world.db, str(step[1]))
                elif kind == "day":
                    run.clock.advance(timedelta(days=int(step[1])))
                    run.daemon.wake("tick")
                await run.settle()
            await run.settle()
            await run.settle()
            clock_start = run.clock.now()
            daemon_settings = run.daemon.settings
            final_today = run.clock.today()
        if not pending:
            break
    await assert_plan_is_full_recompute(world.db, daemon_settings, final_today)


def _run(first: dict[str, str], first_rules: str, steps: list[Step]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        world = World(Path(folder) / "org.sqlite3", Path(folder) / "rules.toml", dict(first))
        world.rules.write_text(RULES[first_rules])

        async def main() -> None:
            await init_db(world.db)
            upstream(world.db, SEED_SQL)
            await _scenario(world, steps)

        anyio.run(main)


@EXAMPLES
@given(
    first=KEYS,
    first_rules=st.sampled_from(sorted(RULES)),
    steps=st.lists(STEPS, min_size=2, max_size=7),
)
def test_plan_follows_the_daemons_settings(
    first: dict[str, str], first_rules: str, steps: list[Step]
) -> None:
    _run(first, first_rules, steps)


@pytest.mark.slow
@pytest.mark.timeout(1800)
@NIGHTLY
@given(
    first=KEYS,
    first_rules=st.sampled_from(sorted(RULES)),
    steps=st.lists(STEPS, min_size=4, max_size=16),
)
def test_plan_follows_the_daemons_settings_nightly(
    first: dict[str, str], first_rules: str, steps: list[Step]
) -> None:
    _run(first, first_rules, steps)
