"""The daily history of the console's greylist page: the store's per-day counts (SQLite and a
throwaway MariaDB), ``report.build_history`` (pure: the clock is passed in) and its text form
for ``passerelle greylist report --days`` (``report.format_history_text``)."""

import pytest

from passerelle.greylist.policy import Timing, triplet_key
from passerelle.greylist.report import build_history, format_history_text, read_history
from passerelle.greylist.stats import (
    DAY,
    HISTORY_DAYS,
    HISTORY_DAYS_MAX,
    DayStats,
    day_start,
    history_days,
    proportional_shares,
)
from passerelle.greylist.store import Triplet, open_store

T = Timing(2400, 15 * 3600, 15 * 86400)
MIDNIGHT = 1_764_633_600  # 2025-12-02 00:00:00 UTC
H = 3600


def trip(client: str, sender: str = "a@b.example") -> Triplet:
    return Triplet(triplet_key(client, sender, "c@example.org"), client, sender, "c@example.org")


@pytest.fixture
def store(greylist_store_url):
    s = open_store(greylist_store_url, 5.0)
    yield s
    s.close()


# -- pure ---------------------------------------------------------------------------------


def test_day_start_is_utc_midnight():
    assert day_start(MIDNIGHT) == MIDNIGHT
    assert day_start(MIDNIGHT - 0.001) == MIDNIGHT - DAY
    assert day_start(MIDNIGHT + DAY - 1) == MIDNIGHT


@pytest.mark.parametrize(
    ("asked", "got"),
    [(14, 14), (1, 1), (60, 60), (61, 60), (10_000, 60), (0, 1), (-3, 1), ("7", 14), (None, 14)],
)
def test_history_days_is_bounded(asked, got):
    assert history_days(asked) == got


@pytest.mark.parametrize(
    ("counts", "total", "shares"),
    [
        ([6, 6], 4, [2, 2]),
        ([30, 10], 4, [3, 1]),
        ([7, 1, 1, 7], 5, [2, 1, 0, 2]),  # 2.19, .31, .31, 2.19: the remainders, ties first
        ([5, 0, 0], 3, [3, 0, 0]),
        ([2, 3], 10, [2, 3]),  # fewer than asked: all of them
        ([2, 3], 0, [0, 0]),
        ([], 5, []),
    ],
)
def test_proportional_shares(counts, total, shares):
    assert proportional_shares(counts, total) == shares
    assert sum(shares) == min(total, sum(counts))


def test_build_history_fills_the_days_without_data_with_zeros():
    rows = [DayStats(MIDNIGHT - 2 * DAY, {"new": 3, "early": 1, "delayed": 2}, 5, 1, 2, [2500.0])]
    h = build_history(rows, MIDNIGHT + 10 * H, 4)
    assert h["days"] == 4 and h["since"] == MIDNIGHT - 3 * DAY
    assert [d["date"] for d in h["by_day"]] == [
        "2025-11-29",
        "2025-11-30",
        "2025-12-01",
        "2025-12-02",
    ]
    empty, full = h["by_day"][0], h["by_day"][1]
    assert (empty["greylisted"], empty["passed"], empty["whitelisted"], empty["returned"]) == (
        0,
        0,
        0,
        0,
    )
    assert empty["decisions"] == {} and empty["delays"]["count"] == 0
    assert empty["delays"]["p50"] is None and len(empty["delays"]["buckets"]) == 6
    assert (full["greylisted"], full["passed"], full["whitelisted"], full["returned"]) == (
        4,
        2,
        5,
        1,
    )
    assert full["came_back"] == 2 and full["delays_sampled"] is True  # 2 passed, 1 delay read
    assert full["delays"]["p50"] == 2500.0


def test_build_history_days_end_with_the_day_of_now_at_midnight():
    rows = [DayStats(MIDNIGHT - DAY, {"new": 1}), DayStats(MIDNIGHT, {"new": 2})]
    just_before = build_history(rows, MIDNIGHT - 0.001, 2)
    assert [d["day"] for d in just_before["by_day"]] == [MIDNIGHT - 2 * DAY, MIDNIGHT - DAY]
    assert [d["greylisted"] for d in just_before["by_day"]] == [0, 1]  # tomorrow's row left out
    at = build_history(rows, MIDNIGHT, 2)
    assert [d["day"] for d in at["by_day"]] == [MIDNIGHT - DAY, MIDNIGHT]
    assert [d["greylisted"] for d in at["by_day"]] == [1, 2]


def test_build_history_is_bounded():
    assert build_history([], MIDNIGHT, 1000)["days"] == HISTORY_DAYS_MAX
    assert len(build_history([], MIDNIGHT, 1000)["by_day"]) == HISTORY_DAYS_MAX
    assert len(build_history([], MIDNIGHT)["by_day"]) == HISTORY_DAYS
    many = {f"reason-{i:02}": i for i in range(50)}
    day = build_history([DayStats(MIDNIGHT, many)], MIDNIGHT)["by_day"][-1]
    assert len(day["decisions"]) == 20 and "reason-49" in day["decisions"]


def test_format_history_text_days_without_data():
    assert format_history_text(build_history([], MIDNIGHT + 10 * H, 2)) == (
        "Greylist history by UTC day (2 days, today included):\n"
        "date         delayed    passed  whitelisted  returning   delay p50   delay p90\n"
        "2025-12-01         0         0            0          0           -           -\n"
        "2025-12-02         0         0            0          0           -           -\n"
    )


def test_format_history_text_one_row_per_day_oldest_first():
    today = {"new": 3, "early": 1, "restart": 1, "delayed": 2, "passed": 4}
    rows = [
        DayStats(MIDNIGHT, today, 5, 2, 2, [7300.0, 2500.0]),
        DayStats(MIDNIGHT - 2 * DAY, {"new": 12}, 0, 3, 3, [2500.0]),  # 1 delay read of 3
    ]
    assert format_history_text(build_history(rows, MIDNIGHT + 23 * H, 3)) == (
        "Greylist history by UTC day (3 days, today included):\n"
        "date         delayed    passed  whitelisted  returning   delay p50   delay p90\n"
        "2025-11-30        12         0            0          3     41m40s*     41m40s*\n"
        "2025-12-01         0         0            0          0           -           -\n"
        "2025-12-02         5         6            5          2      41m40s     2h1m40s\n"
        "* 2025-11-30: delays of 1 of the 3 triplets accepted after their delay\n"
    )


# -- the store, on both dialects ----------------------------------------------------------


def test_daily_stats_buckets_at_utc_midnight(store):
    store.add_stats(
        [
            (MIDNIGHT - H, "decision", "new", 3),  # 23:00 the day before
            (MIDNIGHT, "decision", "new", 5),  # 00:00
            (MIDNIGHT, "decision", "passed", 2),
            (MIDNIGHT + 23 * H, "decision", "delayed", 1),  # 23:00, still that day
            (MIDNIGHT + DAY, "decision", "new", 100),  # tomorrow: not asked
            (MIDNIGHT - H, "whitelisted", "192.0.2.9 (client 192.0.2.9)", 4),
            (MIDNIGHT, "whitelisted", "192.0.2.9 (client 192.0.2.9)", 6),
            (MIDNIGHT + H, "whitelisted", "192.0.2.10 (client 192.0.2.10)", 1),
        ]
    )
    # one machine passes two triplets after midnight, one just before, one exactly at midnight
    a1, a2 = trip("198.51.100.0/24", "x@a.example"), trip("198.51.100.0/24", "y@a.example")
    b, c = trip("203.0.113.0/24"), trip("192.0.2.0/24")
    for t, first in ((a1, MIDNIGHT - 2 * H), (a2, MIDNIGHT - H), (b, MIDNIGHT - 3 * H)):
        store.decide(t, first, T)
    store.decide(c, MIDNIGHT - H, T)
    store.decide(a1, MIDNIGHT + 1800, T)  # back 2.5 h later
    store.decide(a2, MIDNIGHT + 1800, T)  # 1.5 h later
    store.decide(b, MIDNIGHT - 0.5, T)  # 3 h later, half a second before midnight
    store.decide(c, MIDNIGHT, T)  # 1 h later, exactly at midnight: that day
    days = store.daily_stats(MIDNIGHT - 2 * DAY + 5, 3)
    assert [d.day for d in days] == [MIDNIGHT - 2 * DAY, MIDNIGHT - DAY, MIDNIGHT]
    empty, before, day = days
    assert empty == DayStats(MIDNIGHT - 2 * DAY)
    assert before.decisions == {"new": 3} and before.whitelisted == 4
    assert (before.returned, before.passed, before.delays) == (1, 1, [3 * H - 0.5])
    assert day.decisions == {"new": 5, "passed": 2, "delayed": 1} and day.whitelisted == 7
    assert (day.returned, day.passed) == (2, 3)
    assert sorted(day.delays) == [H, 1.5 * H, 2.5 * H]


def test_daily_stats_is_bounded(store):
    for i in range(5):
        t = trip(f"192.0.2.{i}/32")
        store.decide(t, MIDNIGHT, T)
        store.decide(t, MIDNIGHT + H + i, T)
    days = store.daily_stats(MIDNIGHT - 100 * DAY, 10_000, delays_per_day=3)
    assert len(days) == HISTORY_DAYS_MAX and days[0].day == MIDNIGHT - 100 * DAY
    assert all(d == DayStats(d.day) for d in days)  # today is past the 60 days asked
    (today,) = store.daily_stats(MIDNIGHT, 1, delays_per_day=3)
    assert (today.returned, today.passed, len(today.delays)) == (5, 5, 3)


def test_a_sampled_days_delays_come_from_all_its_hours(store):
    # A busy day: 6 machines pass at 00:xx after 2 h, 6 at 18:xx after 1 h; 4 delays read.
    # The sample spreads over the day's hours (not whatever rows the database reads first).
    for i in range(6):
        early, late = trip(f"192.0.2.{i}/32"), trip(f"198.51.100.{i}/32")
        store.decide(early, MIDNIGHT - 2 * H + i, T)
        store.decide(early, MIDNIGHT + i, T)
        store.decide(late, MIDNIGHT + 17 * H + i, T)
        store.decide(late, MIDNIGHT + 18 * H + i, T)
    (day,) = store.daily_stats(MIDNIGHT, 1, delays_per_day=4)
    assert day.passed == 12 and 2 <= len(day.delays) <= 4
    assert set(day.delays) == {2 * H, H}
    assert store.daily_stats(MIDNIGHT, 1, delays_per_day=4)[0].delays == day.delays
    (whole,) = store.daily_stats(MIDNIGHT, 1, delays_per_day=12)  # not sampled: every delay
    assert sorted(whole.delays) == [H] * 6 + [2 * H] * 6
    # never more than asked, even when every hour has passes
    for h in range(24):
        t = trip(f"203.0.113.{h}/32")
        store.decide(t, MIDNIGHT + h * H - 2400, T)
        store.decide(t, MIDNIGHT + h * H + 10, T)
    (busy,) = store.daily_stats(MIDNIGHT, 1, delays_per_day=5)
    assert busy.passed == 36 and len(busy.delays) == 5


def test_read_history_from_the_store(store):
    store.add_stats([(MIDNIGHT + 2 * H, "decision", "new", 7)])
    h = read_history(store, MIDNIGHT + 5 * H, 3)
    assert [d["greylisted"] for d in h["by_day"]] == [0, 0, 7]
    assert h["by_day"][-1]["date"] == "2025-12-02"
