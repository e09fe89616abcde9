"""``mailplan plot``: daily volume by email type against the cap, as one HTML file.

The chart is inline SVG written by hand: no plotting library, no scripts, no
network, so the file opens anywhere and can be mailed as it is. It starts a
week before *today* (the emails sent then, from the history) and shows the
planned emails stacked by type, the skipped ones (never sent) as a line, the
daily cap and the threshold above which a day is rebalanced, *today* and the
planning horizon. The SVG scales to the width of the window.
"""

from __future__ import annotations

import html
import sys
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from service import engine
from service.commands.fingerprint import warn_if_differs
from service.errors import UsageError
from service.store import open_store

GROUPS = ("birthday", "effective_date", "post_window", "campaign", "followup")
COLOURS = {
    "birthday": "#4e79a7",
    "effective_date": "#f28e2b",
    "post_window": "#59a14f",
    "campaign": "#b07aa1",
    "followup": "#76b7b2",
}
SENT = "#9e9e9e"
CAP, THRESHOLD, SKIPPED, MARK = "#d62728", "#ff7f0e", "#222", "#555"
PAST_DAYS = 7
LEFT, TOP, HEIGHT, RIGHT, BOTTOM = 64, 24, 320, 110, 56


@dataclass(frozen=True, slots=True)
class Chart:
    """Everything drawn, by day."""

    today: date
    cap: int | None
    threshold: int | None = None
    horizon: date | None = None
    planned: Mapping[date, Mapping[str, int]] = field(default_factory=dict)
    skipped: Mapping[date, int] = field(default_factory=dict)
    sent: Mapping[date, int] = field(default_factory=dict)


def group_of(email_type: str) -> str:
    """The chart series of an email type (campaign and follow-up kinds are pooled)."""
    if email_type.startswith("campaign_"):
        return "campaign"
    if email_type.startswith("followup_"):
        return "followup"
    return email_type if email_type in COLOURS else "campaign"


def render_html(
    volumes: Iterable[tuple[date, str, int]],
    cap: int | None,
    title: str,
    today: date,
    *,
    threshold: int | None = None,
    horizon: date | None = None,
    skipped: Mapping[date, int] | None = None,
    sent: Mapping[date, int] | None = None,
    days: int | None = None,
) -> str:
    """A page with a stacked bar per day and the cap, threshold, today and horizon."""
    per_day: dict[date, dict[str, int]] = defaultdict(lambda: dict.fromkeys(GROUPS, 0))
    for day, email_type, count in volumes:
        per_day[day][group_of(email_type)] += count
    chart = Chart(today, cap, threshold, horizon, per_day, skipped or {}, sent or {})
    span = _day_range(chart, days)
    total = sum(sum(v.values()) for v in per_day.values())
    legend = "".join(
        f'<span class="key"><i style="background:{COLOURS[g]}"></i>{g}</span>' for g in GROUPS
    )
    legend += (
        f'<span class="key"><i style="background:{SENT}"></i>sent (history)</span>'
        f'<span class="key"><i class="line" style="border-color:{SKIPPED}"></i>'
        "skipped (never sent)</span>"
        f'<span class="key"><i class="line" style="border-color:{CAP}"></i>cap</span>'
        f'<span class="key"><i class="line dots" style="border-color:{THRESHOLD}"></i>'
        "threshold</span>"
    )
    cap_text = "unknown" if cap is None else str(cap)
    limit = "" if threshold is None else f", rebalanced above {threshold} (threshold)"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }}
.key {{ margin-right: 1.2em; white-space: nowrap; display: inline-block; }}
.key i {{ display: inline-block; width: .9em; height: .9em; margin-right: .3em; }}
.key i.line {{ height: 0; width: 1.4em; border-top: 2px dashed; vertical-align: middle; }}
.key i.dots {{ border-top-style: dotted; }}
svg {{ width: 100%; height: auto; display: block; }}
svg text {{ font-size: 11px; fill: #444; }}
svg text.title {{ font-size: 13px; fill: #222; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>{total} planned emails from {span[0].isoformat()} to {span[-1].isoformat()} (today
{today.isoformat()}); daily cap {cap_text}{limit}.</p>
<p>{legend}</p>
{"<p>No planned emails.</p>" if not total else ""}
{_svg(span, chart)}
</body></html>
"""


def _day_range(chart: Chart, days: int | None) -> list[date]:
    first = chart.today - timedelta(days=PAST_DAYS)
    known = [*chart.planned, *chart.skipped]
    last = max([*known, chart.horizon or chart.today, chart.today])
    if days is not None:
        last = min(last, chart.today + timedelta(days=days))
    return [first + timedelta(days=k) for k in range((last - first).days + 1)]


def _svg(days: list[date], c: Chart) -> str:
    n = len(days)
    # Narrower bars for long ranges keep the chart about 1,200 units wide, so its
    # text stays readable when the page scales it to the window.
    bar = max(4, min(12, 1000 // max(n, 1)))
    plot_w = bar * n
    width = LEFT + plot_w + RIGHT
    heights = [sum(c.planned.get(d, {}).values()) + c.sent.get(d, 0) for d in days]
    peak = max([*heights, *c.skipped.values(), c.cap or 0, c.threshold or 0, 1])
    scale = HEIGHT / (peak * 1.08)
    base = TOP + HEIGHT

    def y_of(value: float) -> float:
        return base - value * scale

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} '
        f'{TOP + HEIGHT + BOTTOM}" role="img" aria-label="daily volume">'
    ]
    for k in range(5):
        value = round(peak * k / 4)
        y = y_of(value)
        parts.append(
            f'<line x1="{LEFT}" x2="{LEFT + plot_w}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e4e4e4"/>'
        )
        parts.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{value}</text>')
    for i, day in enumerate(days):
        parts += _bars(LEFT + i * bar, bar, day, c, y_of)
        if day.day in (1, 15) or (i == 0 and _room_for_label(day)):
            parts.append(
                f'<line x1="{LEFT + i * bar}" x2="{LEFT + i * bar}" y1="{base}" '
                f'y2="{base + 4}" stroke="#888"/>'
                f'<text x="{LEFT + i * bar}" y="{base + 16}">{day.isoformat()}</text>'
            )
    parts += _skipped_line(days, c, bar, y_of)
    parts += _marker(days, c.today, "today", bar, MARK)
    if c.horizon is not None:
        parts += _marker(days, c.horizon, "horizon", bar, MARK)
    lines: list[tuple[int | None, str, str, str]] = [
        (c.cap, CAP, "6 4", "cap"),
        (c.threshold, THRESHOLD, "2 3", "threshold"),
    ]
    for mark, colour, dash, label in lines:
        if mark is None:
            continue
        y = y_of(mark)
        parts.append(
            f'<line x1="{LEFT}" x2="{LEFT + plot_w}" y1="{y:.1f}" y2="{y:.1f}" '
            f'stroke="{colour}" stroke-dasharray="{dash}" stroke-width="1.5"/>'
            f'<text x="{LEFT + plot_w + 6}" y="{y + 4:.1f}">{label} {mark}</text>'
        )
    parts.append(
        f'<text class="title" x="{LEFT + plot_w / 2:.0f}" y="{base + 40}" '
        'text-anchor="middle">scheduled send date</text>'
    )
    parts.append(
        f'<text class="title" transform="translate(16 {TOP + HEIGHT / 2:.0f}) '
        'rotate(-90)" text-anchor="middle">emails per day</text>'
    )
    parts.append("</svg>")
    return "\n".join(parts)


def _room_for_label(first: date) -> bool:
    """Whether the first day's date label clears the next 1st or 15th."""
    return all((first + timedelta(days=k)).day not in (1, 15) for k in range(1, 9))


def _bars(x: int, bar: int, day: date, c: Chart, y_of: Any) -> list[str]:
    out: list[str] = []
    level = 0
    stack = [("sent", c.sent.get(day, 0), SENT)]
    stack += [(g, c.planned.get(day, {}).get(g, 0), COLOURS[g]) for g in GROUPS]
    for name, count, colour in stack:
        if not count:
            continue
        top, bottom = y_of(level + count), y_of(level)
        out.append(
            f'<rect x="{x}" y="{top:.1f}" width="{bar - 1}" height="{bottom - top:.1f}" '
            f'fill="{colour}"><title>{day.isoformat()} {name}: {count}</title></rect>'
        )
        level += count
    return out


def _skipped_line(days: list[date], c: Chart, bar: int, y_of: Any) -> list[str]:
    if not c.skipped:
        return []
    points = " ".join(
        f"{LEFT + i * bar + bar / 2:.1f},{y_of(c.skipped.get(d, 0)):.1f}"
        for i, d in enumerate(days)
    )
    return [
        f'<polyline points="{points}" fill="none" stroke="{SKIPPED}" stroke-width="1.2" '
        'stroke-dasharray="3 2"><title>skipped emails (never sent)</title></polyline>'
    ]


def _marker(days: list[date], day: date, label: str, bar: int, colour: str) -> list[str]:
    if not days or not days[0] <= day <= days[-1]:
        return []
    x = LEFT + (day - days[0]).days * bar
    return [
        f'<line x1="{x}" x2="{x}" y1="{TOP - 8}" y2="{TOP + HEIGHT}" stroke="{colour}" '
        f'stroke-width="1"/><text x="{x + 3}" y="{TOP - 10}">{label} '
        f"{day.isoformat()}</text>"
    ]


async def command(args: Any, settings: Any, db: Any) -> int:
    """``mailplan plot``: write the page to ``--out``."""
    today: date = args.today
    start, end = today - timedelta(days=PAST_DAYS), today + timedelta(days=args.days)
    ctx = engine.PlanContext.from_settings(settings)
    async with open_store(db, readonly=True) as store:
        await warn_if_differs(store, settings, "plot", sys.stderr)
        capacity = await engine.capacity_for(store, ctx, today, save=False)
        volumes = await store.daily_load(today, end)
        skipped = await store.skipped_load(start, end)
        sent = await store.sent_load(start, today - timedelta(days=1))
    horizon = today + timedelta(days=settings.horizon_days)
    page = render_html(
        volumes,
        capacity.cap,
        f"mailplan: daily volume of {db.name}",
        today,
        threshold=capacity.threshold,
        horizon=horizon,
        skipped=skipped,
        sent=sent,
        days=args.days,
    )
    try:
        args.out.write_text(page, encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot write {args.out}: {exc.strerror}; choose another --out") from None
    sys.stdout.write(
        f"wrote {args.out} ({len(volumes)} day/type counts, cap {capacity.cap}, "
        f"threshold {capacity.threshold})\n"
    )
    return 0
