"""``mailplan plot``: daily volume by email type against the cap, as one HTML file.

The chart is inline SVG written by hand: no plotting library, no scripts, no
network, so the file opens anywhere and can be mailed as it is.
"""

from __future__ import annotations

import html
from collections import defaultdict
from collections.abc import Iterable
from datetime import date, timedelta

GROUPS = ("birthday", "effective_date", "post_window", "campaign", "followup")
COLOURS = {
    "birthday": "#4e79a7",
    "effective_date": "#f28e2b",
    "post_window": "#59a14f",
    "campaign": "#b07aa1",
    "followup": "#76b7b2",
}


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
) -> str:
    """A page with a stacked bar per day (planned, non-skipped rows) and the cap line."""
    per_day: dict[date, dict[str, int]] = defaultdict(lambda: dict.fromkeys(GROUPS, 0))
    for day, email_type, count in volumes:
        per_day[day][group_of(email_type)] += count
    days = _day_range(per_day, today)
    body = _svg(days, per_day, cap) if days else "<p>No planned emails.</p>"
    total = sum(sum(v.values()) for v in per_day.values())
    legend = "".join(
        f'<span class="key"><i style="background:{COLOURS[g]}"></i>{g}</span>' for g in GROUPS
    )
    cap_text = "unknown" if cap is None else str(cap)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }}
.key {{ margin-right: 1.2em; white-space: nowrap; }}
.key i {{ display: inline-block; width: .9em; height: .9em; margin-right: .3em; }}
svg text {{ font-size: 11px; fill: #444; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>{total} planned emails over {len(days)} days from {today.isoformat()};
daily cap {cap_text} (dashed line).</p>
<p>{legend}<span class="key"><i style="background:#d62728"></i>cap</span></p>
{body}
</body></html>
"""


def _day_range(per_day: dict[date, dict[str, int]], today: date) -> list[date]:
    if not per_day:
        return []
    first = min(min(per_day), today)
    last = max(per_day)
    return [first + timedelta(days=k) for k in range((last - first).days + 1)]


def _svg(days: list[date], per_day: dict[date, dict[str, int]], cap: int | None) -> str:
    bar = max(2, min(14, 1100 // len(days)))
    left, top, height = 60, 10, 320
    width = left + bar * len(days) + 20
    peak = max([sum(per_day[d].values()) for d in days if d in per_day] + [cap or 0, 1])
    scale = height / (peak * 1.05)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{top + height + 40}" role="img">'
    ]
    for k in range(5):
        value = round(peak * k / 4)
        y = top + height - value * scale
        parts.append(
            f'<line x1="{left}" x2="{width - 20}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>'
        )
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{value}</text>')
    for i, day in enumerate(days):
        x = left + i * bar
        y = top + height
        counts = per_day.get(day, {})
        for g in GROUPS:
            n = counts.get(g, 0)
            if not n:
                continue
            h = n * scale
            y -= h
            parts.append(
                f'<rect x="{x}" y="{y:.1f}" width="{max(bar - 1, 1)}" height="{h:.1f}" '
                f'fill="{COLOURS[g]}"><title>{day.isoformat()} {g}: {n}</title></rect>'
            )
        if day.day == 1 or i == 0:
            parts.append(f'<text x="{x}" y="{top + height + 14}">{day.isoformat()}</text>')
    if cap is not None:
        y = top + height - cap * scale
        parts.append(
            f'<line x1="{left}" x2="{width - 20}" y1="{y:.1f}" y2="{y:.1f}" '
            'stroke="#d62728" stroke-dasharray="6 4" stroke-width="1.5"/>'
        )
    parts.append("</svg>")
    return "\n".join(parts)
