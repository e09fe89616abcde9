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

from datetime import date

from service.planning.anniversaries import plan_anniversaries
from service.planning.campaigns import campaign_config_errors, plan_campaigns
from service.planning.contacts import resolve_contact
from service.planning.context import ContactContext
from service.planning.dates import parse_date
from service.planning.followups import plan_followup
from service.planning.limits import apply_frequency_limit, resolve_campaign_conflicts
from service.planning.memo import Memo
from service.planning.model import (
    CAMPAIGN_PREFIX,
    PRE_SCHEDULED,
    Campaigns,
    ContactData,
    ContactPlan,
    PlanRow,
)
from service.planning.params import PlanParams
from service.planning.postwindow import plan_post_windows
from service.planning.review import ONE_DAY
from service.planning.rules import RuleBook

__all__ = ["ContactContext", "campaign_config_errors", "plan_contact"]


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
      date (:meth:`ContactContext.emit`).
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
      :meth:`ContactContext.emit`); skipped rows keep desired = scheduled and no
      interval.
    - ``review_date`` is the first day after ``today`` on which the result can
      differ through time alone from its catch-up move (5.11, see
      :mod:`service.planning.review`: :func:`~service.planning.review.caught_up_move`
      gives the plan of every day before it).
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
    ctx = ContactContext(rc, rules, params, today, data.history, memo)
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
    _apply_limits(ctx, rows, data, campaigns)
    if len(rows) > 1:
        rows.sort(key=_row_order)
    return ContactPlan(contact.id, tuple(rows), ctx.review, notes)


def _apply_limits(
    ctx: ContactContext, rows: list[PlanRow], data: ContactData, campaigns: Campaigns
) -> None:
    """Same-day campaign conflicts (5.8) and the frequency limit (5.9), in place."""
    if campaigns.instances and len(rows) > 1:
        campaign = [r.desired_date for r in rows if r.email_type.startswith(CAMPAIGN_PREFIX)]
        if len(campaign) > 1:
            # Conflicts compare desired dates, and the reason names the day
            # (5.8): from the first catch-up on they can change every day.
            ctx.wake(min(campaign) + ONE_DAY)
        resolve_campaign_conflicts(rows)
    limit = ctx.params.max_emails_per_period
    if len(rows) + len(data.history) > limit:
        # Otherwise every window holds at most the maximum: nothing to skip (5.9).
        live = sum(1 for r in rows if r.status == PRE_SCHEDULED)
        if live and live + sum(1 for h in data.history if h.send_date is not None) > limit:
            # Which rows the limit admits depends on their desired dates: from
            # the first catch-up on they can change every day. (With fewer
            # emails than the maximum it admits every row whatever the dates;
            # which rows are skipped by windows is reported by each row.)
            ctx.wake(min(r.desired_date for r in rows) + ONE_DAY)
        apply_frequency_limit(rows, data.history, ctx.params)


def _row_order(row: PlanRow) -> tuple[str, date]:
    return (row.email_type, row.event_date)
