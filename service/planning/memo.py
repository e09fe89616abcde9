"""Memoised work of one planning run, passed explicitly (no module-level state).

A full recompute plans a million contacts with the same *today*, rules and
campaigns, and a book holds far fewer distinct date texts and (state, ZIP)
pairs than contacts: the planner keeps those answers in a :class:`Memo` that
its caller owns and hands in. The engine keeps one per planning context, so
it lives as long as the settings it was made for; a caller that passes none
gets a fresh one per call (the answers are the same, only slower).

Every entry is a pure function of its key, so sharing a memo can never change
a plan; each table is bounded and starts over when full.
"""

from __future__ import annotations

from datetime import date
from typing import Any

LIMIT = 100_000
"""Entries of each table before it starts over (bounds its memory)."""


class Memo:
    """Tables of pure answers, each keyed by all of its inputs."""

    __slots__ = ("changes", "dates", "locations", "reach", "usable")

    def __init__(self) -> None:
        self.dates: dict[str, date | None] = {}
        """Date text -> :func:`~service.planning.dates.parse_date` of it."""
        self.locations: dict[tuple[str | None, str | None], Any] = {}
        """(state text, ZIP text) -> the resolved location and its problems."""
        self.reach: dict[int, tuple[Any, dict[tuple[str, int], int]]] = {}
        """id of a rule book -> (the book, (state, buffer) -> how far its windows reach)."""
        self.usable: dict[tuple[int, date], tuple[Any, Any]] = {}
        """(id of the campaigns, today) -> (the campaigns, their usable instances)."""
        self.changes: dict[int, tuple[Any, dict[str, tuple[date, ...]]]] = {}
        """id of a rule book -> (the book, state -> the days its rules change)."""
