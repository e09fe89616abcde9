"""Campaign emails (SPEC 5.6, with 5.10's liveness) and campaign configuration checks."""

from __future__ import annotations

from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

from service.planning.anniversaries import FAILED_UNDERWRITING
from service.planning.model import (
    CAMPAIGN_PREFIX,
    CampaignInstance,
    Campaigns,
    CampaignType,
    ContactData,
)
from service.planning.review import ONE_DAY

if TYPE_CHECKING:
    from service.planning.context import ContactContext

TYPE_SKIPS_FAILED_UNDERWRITING = "Failed underwriting (the campaign type skips it)"
"""Skip reason from a type's ``skip_failed_underwriting`` (SPEC 5.6)."""

PENDING = "pending"
MAX_DAYS_BEFORE_EVENT = 36_600
"""A campaign type's ``days_before_event`` beyond a century either way plans nothing."""


def campaign_email_type(type_name: str, instance_id: int) -> str:
    """The ``email_type`` of an instance's emails: ``campaign_<type>_<instance id>`` (5.6)."""
    return f"{CAMPAIGN_PREFIX}{type_name}_{instance_id}"


def parse_targets(text: str | None) -> frozenset[str] | None:
    """A ``target_states``/``target_carriers`` list, upper-cased; None means everyone.

    Comma-separated, case-insensitive, surrounding spaces ignored; empty, NULL
    or a list containing ``ALL`` targets everyone (SPEC 5.6).
    """
    if text is None:
        return None
    items = frozenset(item.strip().upper() for item in text.split(","))
    items = items - {""}
    if not items or "ALL" in items:
        return None
    return items


def plan_campaigns(ctx: ContactContext, data: ContactData, campaigns: Campaigns) -> None:
    """Campaign emails of one contact (SPEC 5.6, 5.10).

    - Instances of unknown or inactive types, instances with unreadable dates
      and instances past ``active_end_date`` plan nothing.
    - ``target_all_contacts`` types: the contact is a recipient if it matches
      ``target_states`` and ``target_carriers`` (case-insensitive) unless a
      list targets everyone. A contact without a known state is never taken
      by a campaign with any targeting, and by a universal one only if
      ``send_without_zipcode_for_universal`` (SPEC 14: the flag excludes only
      contacts without location).
      Other types: each of the contact's ``contact_campaigns`` rows for the
      instance with status ``pending`` (targeting lists are not applied).
    - The desired date, event date and liveness are in :func:`_plan_email`.
    - Failed underwriting: with ``exclude_failed_underwriting_global`` every
      type but ``aep`` gives a skipped row "Failed underwriting"; a type with
      ``skip_failed_underwriting`` skips such contacts too (also ``aep``).
    - Exclusion windows apply when the type has ``respect_exclusion_windows``.
    """
    triggers: dict[int, list[date | None]] | None = None
    if data.targeting:
        triggers = _pending_triggers(data)
    rc = ctx.rc
    horizon_end = ctx.horizon_end
    for inst, ctype, email_type, everyone, states, carriers, fixed in _usable(
        campaigns, ctx.today, ctx.memo.usable
    ):
        if everyone:
            # The recipient test, with the target lists parsed once per run.
            if rc.has_location:
                if states is not None and rc.state not in states:
                    continue
                if carriers is not None and (
                    rc.carrier is None or rc.carrier.upper() not in carriers
                ):
                    continue
            elif states is not None or carriers is not None:
                continue
            elif not ctx.params.send_without_zipcode_for_universal:
                continue
            if fixed is not None and fixed > horizon_end:
                # What _plan_email does with a fixed date beyond the horizon.
                ctx.wake(fixed - ctx.horizon)
                continue
            _plan_email(ctx, inst, ctype, email_type, None, targeted=False)
        elif triggers is not None:
            for trigger in triggers.get(inst.id, ()):
                _plan_email(ctx, inst, ctype, email_type, trigger, targeted=True)


_Usable = tuple[
    CampaignInstance,
    CampaignType,
    str,
    bool,
    frozenset[str] | None,
    frozenset[str] | None,
    date | None,
]


def _usable(
    campaigns: Campaigns, today: date, memo: dict[tuple[int, date], tuple[Any, Any]]
) -> tuple[_Usable, ...]:
    """The instances that can plan anything on ``today``, with their type and targets.

    Worked out once per (campaigns, today) of a run's memo rather than per
    contact. The entry keeps its ``Campaigns`` alive, so the ``id`` it is
    filed under cannot be reused meanwhile.
    """
    key = (id(campaigns), today)
    entry = memo.get(key)
    if entry is not None and entry[0] is campaigns:
        found: tuple[_Usable, ...] = entry[1]
        return found
    usable: list[_Usable] = []
    for inst in campaigns.instances:
        ctype = campaigns.types.get(inst.campaign_type)
        if ctype is None or not ctype.active or inst.errors:
            continue
        if inst.active_end_date is not None and today > inst.active_end_date:
            continue
        everyone = ctype.target_all_contacts
        states = parse_targets(inst.target_states) if everyone else None
        carriers = parse_targets(inst.target_carriers) if everyone else None
        email_type = campaign_email_type(ctype.name, inst.id)
        usable.append(
            (inst, ctype, email_type, everyone, states, carriers, _fixed_date(inst, ctype))
        )
    if len(memo) >= 8:
        memo.clear()
    memo[key] = (campaigns, tuple(usable))
    return memo[key][1]  # type: ignore[no-any-return]


def _fixed_date(inst: CampaignInstance, ctype: CampaignType) -> date | None:
    """The send date shared by every recipient of an all-contacts instance, if any.

    That is ``active_start_date`` when the type does not spread and the date
    is not after ``active_end_date`` (:func:`desired_date`, :func:`_plan_email`).
    """
    if not ctype.target_all_contacts:
        return None
    if (
        ctype.spread_evenly
        and inst.spread_start_date is not None
        and inst.spread_end_date is not None
    ):
        return None
    start, end = inst.active_start_date, inst.active_end_date
    if start is None or (end is not None and start > end):
        return None
    return start


def _pending_triggers(data: ContactData) -> dict[int, list[date | None]]:
    """Trigger dates of the pending targeting rows, by instance, deduplicated and sorted."""
    found: dict[int, set[date | None]] = {}
    for cc in data.targeting:
        if cc.status == PENDING and cc.contact_id == data.contact.id:
            found.setdefault(cc.campaign_instance_id, set()).add(cc.trigger_date)
    return {
        inst: sorted(dates, key=lambda d: (d is None, d or date.min))
        for inst, dates in found.items()
    }


def desired_date(
    inst: CampaignInstance,
    ctype: CampaignType,
    trigger: date | None,
    contact_id: int,
    targeted: bool,
) -> date | None:
    """The campaign's date for one contact before raising and catch-up (SPEC 5.6).

    ``spread_evenly`` with both spread dates: ``spread_start + (contact_id mod
    span_days)`` with ``span_days = (spread_end - spread_start).days + 1``
    (None when the end precedes the start); else targeted: ``trigger_date -
    days_before_event``; else ``active_start_date``. None: no date (also for a
    ``days_before_event`` beyond ``MAX_DAYS_BEFORE_EVENT``, which no calendar
    can hold).
    """
    start, end = inst.spread_start_date, inst.spread_end_date
    if ctype.spread_evenly and start is not None and end is not None:
        span = (end - start).days + 1
        if span <= 0:
            return None
        return start + timedelta(days=contact_id % span)
    if targeted:
        if trigger is None or abs(ctype.days_before_event) > MAX_DAYS_BEFORE_EVENT:
            return None
        return trigger - timedelta(days=ctype.days_before_event)
    return inst.active_start_date


def _failed_underwriting(ctx: ContactContext, ctype: CampaignType) -> str | None:
    if not ctx.rc.failed_underwriting:
        return None
    if ctx.params.exclude_failed_underwriting_global and ctype.name != "aep":
        return FAILED_UNDERWRITING
    if ctype.skip_failed_underwriting:
        return TYPE_SKIPS_FAILED_UNDERWRITING
    return None


def _plan_email(
    ctx: ContactContext,
    inst: CampaignInstance,
    ctype: CampaignType,
    email_type: str,
    trigger: date | None,
    *,
    targeted: bool,
) -> None:
    """One campaign email: dates, liveness and the row (SPEC 5.6, 5.10).

    - The desired date is raised to ``active_start_date``; after
      ``active_end_date`` nothing is planned.
    - Event date: the trigger date for targeted emails (a targeting row
      without a trigger date plans nothing), else the computed date after the
      raise (stable, SPEC 14).
    - Live while desired ≤ today + horizon, today ≤ ``active_end_date`` and,
      for targeted emails, today ≤ trigger date. A targeted email whose date
      falls after its trigger could never be sent in time: not planned.
    - Allowed interval bounded by ``active_end_date`` and, for targeted
      emails, the trigger date.
    """
    if targeted and trigger is None:
        # The event date of a targeted email is its trigger date (5.10): a
        # targeting row without one has no occurrence to plan.
        ctx.notes.append(f"campaign instance {inst.id}: targeting row without a trigger date")
        return
    desired = desired_date(inst, ctype, trigger, ctx.rc.id, targeted)
    if desired is None:
        return
    start, end = inst.active_start_date, inst.active_end_date
    if start is not None and desired < start:
        desired = start
    if end is not None and desired > end:
        return
    upper = end
    event = desired
    if targeted and trigger is not None:
        if desired > trigger:
            ctx.notes.append(
                f"campaign instance {inst.id}: send date {desired.isoformat()} is after "
                f"the trigger date {trigger.isoformat()}; not planned"
            )
            return
        if ctx.today > trigger:
            return
        event = trigger
        if upper is None or trigger < upper:
            upper = trigger
    if desired > ctx.horizon_end:
        ctx.wake(desired - ctx.horizon)
        return
    if upper is not None:
        ctx.wake(upper + ONE_DAY)
    if _already_planned(ctx, email_type, event):
        return
    ctx.emit(
        email_type, event, desired, ctype.priority,
        inst.email_template, windows=ctype.respect_exclusion_windows,
        skip=_failed_underwriting(ctx, ctype), instance_id=inst.id, upper=upper,
    )  # fmt: skip


def _already_planned(ctx: ContactContext, email_type: str, event: date) -> bool:
    # A spread row without trigger can meet a row whose trigger is its date.
    for r in ctx.rows:
        if r.event_date == event and r.email_type == email_type:
            return True
    return False


def campaign_config_errors(campaigns: Campaigns) -> list[str]:
    """Configuration problems that make an instance plan nothing (SPEC 5.6).

    Unknown type, unreadable date columns, an end before a start, and an
    instance that yields no send date (all-contacts, not spread, no
    ``active_start_date``). Each message names the instance and what to fix.
    """
    errors: list[str] = []
    for inst in sorted(campaigns.instances, key=lambda i: i.id):
        label = f"campaign instance {inst.id}"
        if inst.instance_name:
            label += f" ({inst.instance_name})"
        errors.extend(f"{label}: {problem}" for problem in inst.errors)
        ctype = campaigns.types.get(inst.campaign_type)
        if ctype is None:
            errors.append(
                f"{label}: unknown campaign type {inst.campaign_type!r}; add it to "
                "campaign_types or correct campaign_type"
            )
            continue
        errors.extend(f"{label}: {problem}" for problem in _date_problems(inst, ctype))
    return errors


def _date_problems(inst: CampaignInstance, ctype: CampaignType) -> list[str]:
    problems: list[str] = []
    start, end = inst.active_start_date, inst.active_end_date
    if start is not None and end is not None and end < start:
        problems.append(
            f"active_end_date {end.isoformat()} is before active_start_date "
            f"{start.isoformat()}; it never sends: correct the dates"
        )
    s_start, s_end = inst.spread_start_date, inst.spread_end_date
    spread = ctype.spread_evenly and s_start is not None and s_end is not None
    if spread and s_start is not None and s_end is not None and s_end < s_start:
        problems.append(
            f"spread_end_date {s_end.isoformat()} is before spread_start_date "
            f"{s_start.isoformat()}; it plans nothing: correct the dates"
        )
    elif ctype.target_all_contacts and not spread and start is None:
        problems.append(
            "yields no send date (all-contacts type, not spread, no active_start_date); "
            "it plans nothing: set active_start_date or both spread dates"
        )
    return problems
