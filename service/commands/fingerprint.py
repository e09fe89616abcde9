"""What the commands do about the settings the stored plan follows (SPEC 4).

The database records the planning fingerprint (and the settings as JSON) of
the settings that built the stored plan. A command runs with its own
settings, read from the same sources as the daemon's units; when they differ:

- a writing ``recompute --contact`` refuses (exit code 2), naming the keys:
  its rows would be planned under other settings than the rest of the plan;
- a writing ``recompute --all`` rebuilds everything under its own settings
  and records them (``engine.full_recompute``); a daemon with other settings
  then rebuilds the plan its way;
- read-only commands (``explain``, ``status``, ``plot``, dry runs) warn.
"""

from __future__ import annotations

from typing import TextIO

import structlog

from service.config import Settings, differing_keys
from service.errors import UsageError
from service.store import Store

log = structlog.get_logger(__name__)


async def settings_difference(store: Store, settings: Settings) -> list[str] | None:
    """The keys in which ``settings`` differ from the stored plan's, or None
    when the stored plan follows them."""
    basis = await store.plan_basis()
    if basis.fingerprint == settings.fingerprint():
        return None
    return differing_keys(basis.settings_json, settings.planning_json())


async def refuse_if_differs(store: Store, settings: Settings, command: str) -> None:
    """A writing command that plans part of the book refuses to mix settings."""
    keys = await settings_difference(store, settings)
    if keys is None:
        return
    raise UsageError(
        f"`{command}` refused: these settings differ from the ones the stored plan was "
        f"built with: {'; '.join(keys)}. Run it with the daemon's settings (the same "
        "--config, /etc/mailplan/mailplan.env or MAILPLAN_ENV_FILE), or rebuild the whole "
        "plan with `mailplan recompute --all`"
    )


async def warn_if_differs(store: Store, settings: Settings, command: str, err: TextIO) -> None:
    """A read-only command says when its settings are not the plan's."""
    keys = await settings_difference(store, settings)
    if keys is None:
        return
    log.warning("settings_differ_from_plan", command=command, keys=keys)
    err.write(
        f"mailplan: warning: {command} runs with settings that differ from the ones the "
        f"stored plan was built with: {'; '.join(keys)}\n"
    )
