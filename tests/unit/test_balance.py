"""Load balancing (SPEC 6): hand-worked examples and properties.

The examples state the day-by-day sweep in comments; the expected dates are
worked out from the SPEC text, not from the code. The properties compare
:func:`balance` with a deliberately naive transcription of SPEC 6 (sort all
candidates of every day, day after day) and check the invariants the SPEC
promises: determinism, the allowed interval, the cap and the threshold.
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from datetime import date, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.planning.balance import (
    BalanceItem,
    Capacity,
    Sweeper,
    balance,
    capacity,
    pending,
    smooth_date,
    stable_hash,
    step1_dates,
)
from service.planning.model import RowKey
from service.planning.params import BalanceParams

D = date.fromisoformat
ED = "effective_date"
BD = "birthday"


def item(
    cid: int,
    desired: str,
    priority: int = 10,
    etype: str = BD,
    allowed_from: str | None = None,
    allowed_to: str | None = None,
    event: str | None = None,
) -> BalanceItem:
    return BalanceItem(
        (cid, etype, D(event or desired)),
        priority,
        D(desired),
        D(allowed_from) if allowed_from else None,
        D(allowed_to) if allowed_to else None,
    )


def scheduled(result: dict[RowKey, tuple[date, date]]) -> dict[int, str]:
    return {key[0]: sched.isoformat() for key, (_, sched) in result.items()}


# --- capacity --------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "contacts", "expected"),
    [
        # floor(150 x 0.07) = floor(10.5) = 10; T = floor(12.0) = 12;
        # L = min(15, floor(3.0)) = 3.
        (BalanceParams(), 150, Capacity(10, 12, 3, 5)),
        # 1000 contacts: C = 70, T = 84, L = min(15, 21) = 15.
        (BalanceParams(), 1000, Capacity(70, 84, 15, 5)),
        # Nobody with an email: the cap is still 1; T = floor(1.2) = 1; L = 0.
        (BalanceParams(), 0, Capacity(1, 1, 0, 5)),
        # daily_cap overrides the percentage.
        (BalanceParams(daily_cap=40, ed_smoothing_window_days=7), 10, Capacity(40, 48, 12, 7)),
        # A cap of 0 would never send anything: at least 1.
        (BalanceParams(daily_cap=0), 10, Capacity(1, 1, 0, 5)),
        # 100 x 0.29 is 28.999999999999996 in binary floating point; the
        # configured decimal means 29.
        (BalanceParams(daily_send_percentage_cap=0.29), 100, Capacity(29, 34, 8, 5)),
        # A threshold under 1: T = floor(10 x 0.5) = 5 < C.
        (BalanceParams(daily_cap=10, overage_threshold=0.5), 0, Capacity(10, 5, 3, 5)),
    ],
)
def test_capacity(params: BalanceParams, contacts: int, expected: Capacity) -> None:
    assert capacity(params, contacts) == expected


# --- the stable hash -------------------------------------------------------

# BLAKE2b with an 8-byte digest, computed with coreutils `b2sum -l 64` on the
# text (no newline), read as a big-endian integer.
B2SUM = {
    7: 0x6DBFDC9C24934D5A,
    101: 0x183E755F29C0097E,
    102: 0x955A96850C206AF6,
    103: 0x8542BBE893ED210F,
    104: 0x0029B0933681A850,
    105: 0x78398AD6B97072BD,
}


@pytest.mark.parametrize(("cid", "expected"), sorted(B2SUM.items()))
def test_stable_hash_matches_b2sum(cid: int, expected: int) -> None:
    assert stable_hash(cid, ED, 2027) == expected
    # ... and the formula of SPEC 6 as written there.
    text = f"{cid}-{ED}-2027".encode()
    assert expected == int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big")


# --- step 1: smoothing -----------------------------------------------------

# C = 10 -> L = 3, W = 5, so a date with more than 3 effective-date rows is
# smoothed by H mod 5 - 2 days. From the b2sum values above (H mod 5):
#   7: 1 -> -1    101: 1 -> -1    102: 3 -> +1
#   103: 0 -> -2  104: 0 -> -2    105: 4 -> +2
CAP10 = Capacity(cap=10, threshold=12, ed_limit=3, window=5)
SMOOTH_TODAY = D("2027-06-09")
SMOOTH_ROWS = [
    item(7, "2027-06-10", 20, ED),  # -1 -> 06-09, which is today: allowed
    item(101, "2027-06-10", 20, ED, allowed_from="2027-06-10"),  # 06-09 < allowed_from
    item(102, "2027-06-10", 20, ED),  # +1 -> 06-11
    item(103, "2027-06-10", 20, ED),  # -2 -> 06-08, before today: stays
    item(104, "2027-06-10", 20, ED),  # -2 -> 06-08, before today: stays
    item(105, "2027-06-10", 20, ED, allowed_to="2027-06-11"),  # 06-12 > allowed_to
]
SMOOTH_EXPECTED = {
    7: "2027-06-09",
    101: "2027-06-10",
    102: "2027-06-11",
    103: "2027-06-10",
    104: "2027-06-10",
    105: "2027-06-10",
}


def test_smooth_date_moves_by_hash_within_the_rules() -> None:
    got = smooth_date(SMOOTH_ROWS, D("2027-06-10"), CAP10, SMOOTH_TODAY)
    assert {k[0]: d.isoformat() for k, d in got.items()} == SMOOTH_EXPECTED


def test_smoothing_needs_more_than_l_rows() -> None:
    # Exactly L = 3 effective-date rows on the date: nobody moves, even 102
    # whose hash says +1.
    rows = SMOOTH_ROWS[1:4]
    got = smooth_date(rows, D("2027-06-10"), CAP10, SMOOTH_TODAY)
    assert set(got.values()) == {D("2027-06-10")}


def test_smoothing_counts_only_effective_date_rows() -> None:
    # Three effective-date rows plus birthday rows on the same date: 3 <= L.
    rows = [*SMOOTH_ROWS[2:5], item(200, "2027-06-10"), item(201, "2027-06-10")]
    assert step1_dates(rows, CAP10, SMOOTH_TODAY) == [D("2027-06-10")] * 5


def test_balance_uses_step1_dates() -> None:
    # Six ED rows and one birthday row, C = 10: no day is crowded, so every
    # row is sent on its step-1 date; the birthday row is never smoothed.
    rows = [*SMOOTH_ROWS, item(300, "2027-06-10", 10, BD)]
    got = balance(rows, CAP10, SMOOTH_TODAY)
    assert scheduled(got) == {**SMOOTH_EXPECTED, 300: "2027-06-10"}
    assert all(step1 == sched for step1, sched in got.values())


def test_smoothing_hash_uses_the_year_of_the_date() -> None:
    # Same contact, same type, other year: another hash, another shift.
    assert stable_hash(7, ED, 2028) != stable_hash(7, ED, 2027)


# --- step 2: the cap sweep -------------------------------------------------


def test_sweep_carries_over_several_days() -> None:
    # C = 2, T = 3, no smoothing. Letters are contact ids 1..12; pNN = priority.
    #
    # day   | new rows                 | carried in | cand. | > T | kept          | carried out
    # 03-01 | A p10 B p20 C p30 D p30  | -          | 4     | yes | A, B          | C, D
    # 03-02 | E p10                    | C, D       | 3     | no  | C, D, E       | -
    # 03-03 | F p40 G p40 H p50 I p10  | -          | 4     | yes | I, F (F<G id) | G, H
    # 03-04 | J p20 L p40              | G, H       | 4     | yes | J, G          | H, L
    # 03-05 | -                        | H, L       | 2     | no  | H, L          | -
    #
    # On 03-04 G (step-1 03-03) goes before L (step-1 03-04) although L has
    # the smaller contact id: the order is (priority, step-1 date, contact).
    cap = Capacity(cap=2, threshold=3, ed_limit=99, window=1)
    a, b, c, d, e, f, g, h, i, j, l_ = 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 0
    rows = [
        item(a, "2027-03-01", 10),
        item(b, "2027-03-01", 20),
        item(c, "2027-03-01", 30),
        item(d, "2027-03-01", 30),
        item(e, "2027-03-02", 10),
        item(f, "2027-03-03", 40),
        item(g, "2027-03-03", 40),
        item(h, "2027-03-03", 50),
        item(i, "2027-03-03", 10),
        item(j, "2027-03-04", 20),
        item(l_, "2027-03-04", 40),
    ]
    got = balance(rows, cap, D("2027-03-01"))
    assert scheduled(got) == {
        a: "2027-03-01",
        b: "2027-03-01",
        c: "2027-03-02",
        d: "2027-03-02",
        e: "2027-03-02",
        i: "2027-03-03",
        f: "2027-03-03",
        j: "2027-03-04",
        g: "2027-03-04",
        h: "2027-03-05",
        l_: "2027-03-05",
    }
    # Step-1 dates are the desired dates (no effective-date rows).
    assert all(step1 == key[2] for key, (step1, _) in got.items())


def test_rows_whose_interval_ends_stay_even_above_cap() -> None:
    # C = 1, T = 1. On 05-01: X p10, Y p50 and Z p50 whose intervals end on
    # 05-01. 3 > T: Y and Z stay (two rows, above C), the day already holds
    # C rows, so X - the best priority - is carried. 05-02: X alone stays.
    cap = Capacity(cap=1, threshold=1, ed_limit=99, window=1)
    rows = [
        item(1, "2027-05-01", 10),
        item(2, "2027-05-01", 50, allowed_to="2027-05-01"),
        item(3, "2027-05-01", 50, allowed_to="2027-05-01"),
    ]
    got = balance(rows, cap, D("2027-05-01"))
    assert scheduled(got) == {1: "2027-05-02", 2: "2027-05-01", 3: "2027-05-01"}


def test_carried_row_stays_on_the_last_day_of_its_interval() -> None:
    # C = 1, T = 1.
    # 05-01: P p10, Q p20 (allowed to 05-02), R p30: keep P; carry Q, R.
    # 05-02: S p5 arrives; Q's interval ends: Q stays (the day holds C rows,
    #        so S - priority 5 - is carried with R).
    # 05-03: S, R: 2 > T, keep S; carry R.   05-04: R alone stays.
    cap = Capacity(cap=1, threshold=1, ed_limit=99, window=1)
    rows = [
        item(1, "2027-05-01", 10),
        item(2, "2027-05-01", 20, allowed_to="2027-05-02"),
        item(3, "2027-05-01", 30),
        item(4, "2027-05-02", 5),
    ]
    got = balance(rows, cap, D("2027-05-01"))
    assert scheduled(got) == {1: "2027-05-01", 2: "2027-05-02", 3: "2027-05-04", 4: "2027-05-03"}


@pytest.mark.parametrize(
    ("rows_on_day", "expected_on_first_day"),
    [
        # C = 2, T = 3: three candidates are not above T: all stay (above C).
        (3, 3),
        # Four are above T: only C = 2 stay, two are carried.
        (4, 2),
    ],
)
def test_threshold_not_cap_decides_whether_to_carry(
    rows_on_day: int, expected_on_first_day: int
) -> None:
    cap = Capacity(cap=2, threshold=3, ed_limit=99, window=1)
    rows = [item(cid, "2027-01-10") for cid in range(rows_on_day)]
    got = balance(rows, cap, D("2027-01-10"))
    per_day = Counter(sched for _, sched in got.values())
    assert per_day[D("2027-01-10")] == expected_on_first_day
    assert sum(per_day.values()) == rows_on_day


def test_threshold_below_cap() -> None:
    # overage_threshold < 1: C = 3, T = 2. Three candidates > T: the first C
    # stay, which is all of them.
    cap = Capacity(cap=3, threshold=2, ed_limit=99, window=1)
    rows = [item(cid, "2027-01-10") for cid in range(3)]
    assert set(scheduled(balance(rows, cap, D("2027-01-10"))).values()) == {"2027-01-10"}


def test_rows_before_today_compete_from_today() -> None:
    # A desired date already past (no catch-up applied) is sent from today on,
    # ranked by its own (earlier) step-1 date. C = 1, T = 1:
    # 03-05: old row (step-1 03-01, p30) and new row (03-05, p30): old first.
    cap = Capacity(cap=1, threshold=1, ed_limit=99, window=1)
    rows = [item(1, "2027-03-05", 30), item(2, "2027-03-01", 30)]
    got = balance(rows, cap, D("2027-03-05"))
    assert got[(2, BD, D("2027-03-01"))] == (D("2027-03-01"), D("2027-03-05"))
    assert got[(1, BD, D("2027-03-05"))] == (D("2027-03-05"), D("2027-03-06"))


def test_carry_runs_to_the_next_calendar_day_not_the_next_busy_day() -> None:
    # C = 1, T = 1: two rows on 01-01, the next rows on 01-10. The overflow of
    # 01-01 goes to 01-02 (an empty day), not to 01-10 (SPEC 14).
    cap = Capacity(cap=1, threshold=1, ed_limit=99, window=1)
    rows = [item(1, "2027-01-01"), item(2, "2027-01-01"), item(3, "2027-01-10")]
    assert scheduled(balance(rows, cap, D("2027-01-01"))) == {
        1: "2027-01-01",
        2: "2027-01-02",
        3: "2027-01-10",
    }


def test_duplicate_keys_are_refused() -> None:
    with pytest.raises(ValueError, match="unique"):
        balance([item(1, "2027-01-01"), item(1, "2027-01-01")], CAP10, D("2027-01-01"))


def test_sweeper_refuses_to_skip_days_with_rows_carried() -> None:
    cap = Capacity(cap=1, threshold=1, ed_limit=0, window=1)
    sweeper = Sweeper(cap)
    rows = [pending(item(i, "2027-01-01"), D("2027-01-01"), i) for i in range(3)]
    assert len(sweeper.step(D("2027-01-01"), rows)) == 1
    assert len(sweeper) == 2
    with pytest.raises(ValueError, match="skipped"):
        sweeper.step(D("2027-01-03"), [])


# --- properties ------------------------------------------------------------

TODAY = D("2027-01-10")
TYPES = (ED, ED, BD, "post_window", "campaign_aep_1")


def naive_balance(
    items: list[BalanceItem], cap: Capacity, today: date
) -> dict[RowKey, tuple[date, date]]:
    """SPEC 6 transcribed literally: no cleverness, quadratic is fine."""
    ed_count = Counter(it.desired for it in items if it.key[1] == ED)
    step1: dict[RowKey, date] = {}
    for it in items:
        d = it.desired
        step1[it.key] = d
        if it.key[1] == ED and ed_count[d] > cap.ed_limit:
            j = stable_hash(it.key[0], it.key[1], d.year) % cap.window - cap.window // 2
            moved = d + timedelta(days=j)
            ok = moved >= today
            ok = ok and (it.allowed_from is None or moved >= it.allowed_from)
            ok = ok and (it.allowed_to is None or moved <= it.allowed_to)
            if ok:
                step1[it.key] = moved
    out: dict[RowKey, tuple[date, date]] = {}
    carry: list[BalanceItem] = []
    day = today
    last = max([max(step1[it.key], today) for it in items], default=today)
    while day <= last or carry:
        cands = carry + [it for it in items if max(step1[it.key], today) == day]
        carry = []
        if len(cands) > cap.threshold:
            must = [it for it in cands if it.allowed_to is not None and it.allowed_to <= day]
            others = sorted(
                (it for it in cands if it not in must),
                key=lambda it: (it.priority, step1[it.key], *it.key),
            )
            room = max(0, cap.cap - len(must))
            cands, carry = must + others[:room], others[room:]
        for it in cands:
            out[it.key] = (step1[it.key], day)
        day += timedelta(days=1)
    return out


@st.composite
def items_strategy(draw: st.DrawFn, well_formed: bool = True) -> list[BalanceItem]:
    n = draw(st.integers(0, 40))
    out: dict[RowKey, BalanceItem] = {}
    for _ in range(n):
        cid = draw(st.integers(1, 12))
        etype = draw(st.sampled_from(TYPES))
        low = 0 if well_formed else -4
        desired = TODAY + timedelta(days=draw(st.integers(low, 12)))
        event = desired + timedelta(days=draw(st.integers(0, 3)))
        a_from = None
        if draw(st.booleans()):
            a_from = max(TODAY, desired - timedelta(days=draw(st.integers(0, 3))))
            if not well_formed:
                a_from = desired - timedelta(days=draw(st.integers(0, 3)))
        a_to = None
        if draw(st.booleans()):
            a_to = desired + timedelta(days=draw(st.integers(0 if well_formed else -2, 4)))
        prio = draw(st.sampled_from((10, 20, 30, 40, 50)))
        key = (cid, etype, event)
        out[key] = BalanceItem(key, prio, desired, a_from, a_to)
    return list(out.values())


caps = st.builds(
    lambda c, extra, lim, w: Capacity(c, max(0, c + extra), lim, w),
    st.integers(1, 5),
    st.integers(-2, 4),
    st.integers(0, 4),
    st.integers(1, 7),
)


@settings(max_examples=300, deadline=None)
@given(items_strategy(well_formed=False), caps)
def test_balance_equals_the_literal_spec(items: list[BalanceItem], cap: Capacity) -> None:
    assert balance(items, cap, TODAY) == naive_balance(items, cap, TODAY)


@settings(max_examples=100, deadline=None)
@given(items_strategy(), caps, st.randoms(use_true_random=False))
def test_balance_is_deterministic_and_order_free(
    items: list[BalanceItem], cap: Capacity, rnd: random.Random
) -> None:
    first = balance(items, cap, TODAY)
    shuffled = list(items)
    rnd.shuffle(shuffled)
    assert balance(shuffled, cap, TODAY) == first
    assert balance(iter(items), cap, TODAY) == first
    assert set(first) == {it.key for it in items}


@settings(max_examples=200, deadline=None)
@given(items_strategy(), caps)
def test_balance_keeps_rules_cap_and_threshold(items: list[BalanceItem], cap: Capacity) -> None:
    got = balance(items, cap, TODAY)
    by_key = {it.key: it for it in items}
    # Never outside [max(today, allowed_from), allowed_to].
    for key, (step1, sched) in got.items():
        it = by_key[key]
        low = max(TODAY, it.allowed_from or TODAY)
        assert low <= step1 <= sched
        assert it.allowed_to is None or sched <= it.allowed_to
    days = {sched for _, sched in got.values()}
    for day in days:
        on_day = [by_key[k] for k, (_, s) in got.items() if s == day]
        must = [it for it in on_day if it.allowed_to is not None and it.allowed_to <= day]
        # Candidates of the day: arrived by then and not sent before.
        cands = [k for k, (s1, s) in got.items() if max(s1, TODAY) <= day <= s]
        carried_out = len(cands) - len(on_day)
        if len(cands) <= cap.threshold:
            # A day with at most T candidates carries nothing.
            assert carried_out == 0
        else:
            # At most C rows, unless the extra rows' intervals end that day.
            assert len(on_day) <= cap.cap or len(on_day) == len(must)
            if carried_out:
                assert len(on_day) == max(cap.cap, len(must))
