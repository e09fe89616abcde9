"""What the rules of one contact share while its plan is built (SPEC 5, 6).

:func:`service.planning.plan.plan_contact` makes one :class:`ContactContext`
per contact and hands it to each rule module in the SPEC's order; the rules
add rows through :meth:`ContactContext.emit`, the one place where an email
becomes a row.
"""

from __future__ import annotations

from datetime import date, timedelta

from service.planning.contacts import ResolvedContact
from service.planning.exclusion import Exclusion, allowed_interval, check_exclusion
from service.planning.memo import Memo
from service.planning.model import HistoryEmail, PlanRow
from service.planning.params import PlanParams
from service.planning.review import (
    ONE_DAY,
    Review,
    excluded_run_end,
    free_run_end,
    next_rule_change,
)
from service.planning.rules import RuleBook

_EMPTY_KEYS: frozenset[tuple[str, date]] = frozenset()


class ContactContext(Review):
    """What the rules of one contact share while its plan is built.

    ``emit`` is the single place where an email becomes a row: it applies the
    history check, catch-up (5.10), the failed-underwriting skip, the exclusion
    decision (5.3) and the allowed interval (6) the same way for every kind.
    """

    __slots__ = (
        "caught_up",
        "excludable",
        "history_keys",
        "horizon",
        "horizon_end",
        "memo",
        "notes",
        "params",
        "pw_sources",
        "rc",
        "rows",
        "rules",
    )

    def __init__(
        self,
        rc: ResolvedContact,
        rules: RuleBook,
        params: PlanParams,
        today: date,
        history: tuple[HistoryEmail, ...] = (),
        memo: Memo | None = None,
    ) -> None:
        super().__init__(today)
        self.rc = rc
        self.rules = rules
        self.params = params
        self.memo = memo if memo is not None else Memo()
        self.horizon, self.horizon_end = _horizon(params.horizon_days, today)
        self.history_keys = (
            frozenset((h.email_type, h.event_date) for h in history if h.event_date is not None)
            if history
            else _EMPTY_KEYS
        )
        self.rows: list[PlanRow] = []
        self.notes: list[str] = []
        # (window end, event date) of birthday/effective-date emails skipped by a window (5.5).
        self.pw_sources: list[tuple[date, date]] = []
        # Unknown states, and states without any rule, skip the exclusion machinery.
        self.excludable = rc.state is not None and bool(rules.rules_for(rc.state))
        # Whether a row was caught up (plan.plan_contact's frequency and conflict wakes).
        self.caught_up = False

    def in_history(self, email_type: str, event: date) -> bool:
        """True if this identity is a history row: it is never planned again (5.10)."""
        return (email_type, event) in self.history_keys

    def emit(
        self,
        email_type: str,
        event: date,
        desired: date,
        priority: int,
        template: str | None,
        *,
        windows: bool,
        skip: str | None = None,
        instance_id: int | None = None,
        upper: date | None = None,
        interval: bool = False,
    ) -> Exclusion | None:
        """Add the live email ``(email_type, event)`` as a plan row.

        - already a history row: nothing is planned (5.10);
        - catch-up (5.10): a desired date before *today* becomes *today*, noted
          in ``catchup_note``; every later rule sees the caught-up date. This
          applies to skipped rows as well, so their desired date moves daily;
        - ``skip`` (a failed-underwriting reason, 5.2/5.6) makes the row
          skipped without an exclusion check;
        - ``windows``: the row is checked against the contact's exclusion
          windows (5.3) and skipped with the rule's reason when inside one;
        - a row that is not skipped gets its allowed interval (SPEC 6):
          ``allowed_from = max(today, first day of the exclusion-free run
          around the desired date)``, ``allowed_to = min(last day of that run,
          upper)``; rows not checked against windows use ``today`` and
          ``upper`` only, unless ``interval`` (post-window emails: never
          checked, but never moved into a window either). Skipped rows carry
          no interval.

        Returns the exclusion that skipped the row (post-window emails, 5.5).
        """
        if self.history_keys and (email_type, event) in self.history_keys:
            return None
        today = self.today
        note = None
        if desired < today:
            note = f"caught up from {desired.isoformat()}"
            desired = today
            self.caught_up = True
        if not interval and upper is not None:
            # Its last live day (5.10); until then, once caught up, the row
            # only follows today (review.caught_up_move).
            self.wake(upper + ONE_DAY)
        elif interval:
            # A post-window email is never caught up: it ends when its date passes.
            self.wake(desired + ONE_DAY)
        exc = None
        if skip is None and windows and self.excludable:
            exc = check_exclusion(self.rc, desired, self.rules, self.params)
            if exc is not None:
                skip = exc.reason
                # From its desired date on (caught up or not) the row keeps
                # this decision until the window or the rule changes.
                self._wake_rules(desired)
                self.wake(excluded_run_end(self.rc, desired, exc, self.rules, self.params))
        if skip is not None:
            self.rows.append(
                PlanRow(
                    self.rc.id, email_type, event, desired, "skipped", skip, priority, template,
                    instance_id, note,
                )
            )  # fmt: skip
            return exc
        low: date | None = None
        high: date | None = None
        if (windows or interval) and self.excludable:
            low, high = allowed_interval(self.rc, desired, self.rules, self.params)
            if not interval:
                self._wake_rules(desired)
                self.wake(free_run_end(desired, high, upper))
        if high is None or (upper is not None and upper < high):
            high = upper
        self.rows.append(
            PlanRow(
                self.rc.id, email_type, event, desired, "pre-scheduled", None, priority, template,
                instance_id, note, today if low is None or low < today else low, high,
            )
        )  # fmt: skip
        return None

    def _wake_rules(self, desired: date) -> None:
        """Once caught up, a row's exclusion decision follows the rules in
        force on *today*: report the next day after its desired date on which
        they change (SPEC 5.3, 5.11)."""
        state = self.rc.state
        assert state is not None
        change = next_rule_change(self.rules, state, desired, self.memo.changes)
        if change is not None:
            self.wake(change)


def _horizon(horizon_days: int, today: date) -> tuple[timedelta, date]:
    """``horizon_days`` as a timedelta and the last day it reaches."""
    horizon = timedelta(days=horizon_days)
    return horizon, today + horizon
