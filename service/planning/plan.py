"""One contact's complete plan: the whole of SPEC section 5 (and the intervals of 6).

:func:`plan_contact` runs the rules in the SPEC's order: anniversary (5.4),
campaign (5.6) and follow-up (5.7) emails, each with its exclusion decision;
post-window emails for window-caused skips (5.5); same-day campaign conflicts
(5.8); the frequency limit (5.9). Horizon, liveness, catch-up and event dates
(5.10) are applied as each email is produced, and every time-dependent decision
reports the date it flips to the contact's review date (5.11).

It runs for every contact of a million-contact book on a full recompute, so the
common path (no campaign, no history, no occurrence in the horizon) allocates
little: one context object and the result.
"""

from __future__ import annotations

from datetime import date, timedelta

from service.planning.anniversaries import plan_anniversaries
from service.planning.campaigns import campaign_config_errors, plan_campaigns
from service.planning.contacts import ResolvedContact, resolve_contact
from service.planning.dates import parse_date
from service.planning.exclusion import Exclusion, allowed_interval, check_exclusion
from service.planning.followups import plan_followup
from service.planning.limits import apply_frequency_limit, resolve_campaign_conflicts
from service.planning.memo import Memo
from service.planning.model import (
    Campaigns,
    ContactData,
    ContactPlan,
    HistoryEmail,
    PlanRow,
)
from service.planning.params import PlanParams
from service.planning.postwindow import plan_post_windows
from service.planning.review import ONE_DAY, Review
from service.planning.rules import RuleBook

__all__ = ["PlanContext", "campaign_config_errors", "plan_contact"]

_EMPTY_KEYS: frozenset[tuple[str, date]] = frozenset()


class PlanContext(Review):
    """What the rules of one contact share while its plan is built.

    ``emit`` is the single place where an email becomes a row: it applies the
    history check, catch-up (5.10), the failed-underwriting skip, the exclusion
    decision (5.3) and the allowed interval (6) the same way for every kind.
    """

    __slots__ = (
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
        # Review.wake, inlined: the day after is always after today.
        after = desired + ONE_DAY
        if self.review is None or after < self.review:
            self.review = after
        exc = None
        if skip is None and windows and self.excludable:
            exc = check_exclusion(self.rc, desired, self.rules, self.params)
            if exc is not None:
                skip = exc.reason
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
        if high is None or (upper is not None and upper < high):
            high = upper
        self.rows.append(
            PlanRow(
                self.rc.id, email_type, event, desired, "pre-scheduled", None, priority, template,
                instance_id, note, today if low is None or low < today else low, high,
            )
        )  # fmt: skip
        return None


def _horizon(horizon_days: int, today: date) -> tuple[timedelta, date]:
    """``horizon_days`` as a timedelta and the last day it reaches."""
    horizon = timedelta(days=horizon_days)
    return horizon, today + horizon


def plan_contact(
    data: ContactData,
    campaigns: Campaigns,
    rules: RuleBook,
    params: PlanParams,
    today: date,
    memo: Memo | None = None,
) -> ContactPlan:
    """The plan of one contact on ``today``: SPEC section 5, with section 6's intervals.

    ``memo`` holds answers shared by the contacts of one run (see
    :mod:`service.planning.memo`); without one, a fresh one is used.

    Decisions where the SPEC leaves room (each detailed where it is applied):

    - Invalid email: no rows, ``invalid`` set, review date None (5.2). An
      invalid or future birth date gives no birthday emails, an invalid
      effective date no effective-date emails (notes say why); a future birth
      date is reviewed on the day it stops being in the future.
    - Catch-up (5.10) applies to every live email, skipped ones included; the
      exclusion check, conflicts and the frequency limit see the caught-up
      date (:meth:`PlanContext.emit`).
    - An identity already present as a history row is never planned again,
      whatever the kind (5.10).
    - Failed underwriting under ``exclude_failed_underwriting_global`` gives
      skipped rows, not missing ones (anniversaries, campaigns but ``aep``).
    - Post-window emails: one per window occurrence, judged as on the source's
      event date once the source has passed (:mod:`.postwindow`).
    - Campaign recipients, spread and event dates: :mod:`.campaigns`;
      follow-up candidates and kinds: :mod:`.followups`; conflicts and the
      frequency limit: :mod:`.limits`.
    - Rows come back sorted by ``(email_type, event_date)``.
    - Every non-skipped row carries ``allowed_from``/``allowed_to`` (see
      :meth:`PlanContext.emit`); skipped rows keep desired = scheduled and no
      interval.
    - ``review_date`` is the first day after ``today`` on which the result can
      differ through time alone (5.11, see :mod:`service.planning.review`).
      ``allowed_from`` is ``max(today, ...)`` and so follows *today*; it is the
      only field that may move without a review (the balancer clamps to its
      own *today*, so a stored value that lags behind is harmless). Notes may
      mention *today* too; they are explanations, not plan content.
    """
    contact = data.contact
    if memo is None:
        memo = Memo()
    rc = resolve_contact(contact, today, memo)
    if not rc.email_ok:
        reason = rc.problems[0] if rc.problems else "invalid email address"
        return ContactPlan(contact.id, (), None, rc.problems, invalid=reason)
    ctx = PlanContext(rc, rules, params, today, data.history, memo)
    if rc.birth_date is None and contact.birth_date is not None:
        raw_birth = parse_date(contact.birth_date)
        if raw_birth is not None:
            # A birth date after today becomes valid on that day (5.1).
            ctx.wake(raw_birth)
    plan_anniversaries(ctx)
    if campaigns.instances:
        plan_campaigns(ctx, data, campaigns)
    if data.history:
        plan_followup(ctx, data, campaigns)
    if ctx.pw_sources:
        plan_post_windows(ctx)
    rows = ctx.rows
    notes = rc.problems + tuple(ctx.notes) if ctx.notes else rc.problems
    if not rows:
        return ContactPlan(contact.id, (), ctx.review, notes)
    if campaigns.instances and len(rows) > 1:
        resolve_campaign_conflicts(rows)
    if len(rows) + len(data.history) > params.max_emails_per_period:
        # Otherwise every window holds at most the maximum: nothing to skip (5.9).
        apply_frequency_limit(rows, data.history, params)
    if len(rows) > 1:
        rows.sort(key=_row_order)
    return ContactPlan(contact.id, tuple(rows), ctx.review, notes)


def _row_order(row: PlanRow) -> tuple[str, date]:
    return (row.email_type, row.event_date)
