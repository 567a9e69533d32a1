"""arXiv's announcement calendar: times across DST changes, windows, and what each brought."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from bot.poll.calendar import (
    Announcement,
    announcements_between,
    is_quiet_day,
    last_announcement,
    next_announcement,
    schedule_line,
)
from storage import announcements
from storage.store import Store


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.mark.parametrize(("now", "last", "next_"), [
    # Saturday before DST starts (Sun 2026-03-08): Thursday 20:00 EST = 01:00 UTC, and the
    # Sunday announcement is already summer time: 20:00 EDT = 00:00 UTC Monday.
    (utc(2026, 3, 7, 17), utc(2026, 3, 6, 1), utc(2026, 3, 9, 0)),
    # the Sunday of the change itself, before and at 20:00
    (utc(2026, 3, 8, 23, 59), utc(2026, 3, 6, 1), utc(2026, 3, 9, 0)),
    (utc(2026, 3, 9, 0), utc(2026, 3, 9, 0), utc(2026, 3, 10, 0)),
    # DST ends Sun 2026-11-01: Thursday 2026-10-29 is 00:00 UTC, that Sunday 01:00 UTC
    (utc(2026, 10, 31, 12), utc(2026, 10, 30, 0), utc(2026, 11, 2, 1)),
    (utc(2026, 11, 2, 0, 59), utc(2026, 10, 30, 0), utc(2026, 11, 2, 1)),
    # Friday evening: the next one is Sunday, not Friday
    (utc(2026, 6, 12, 23, 30), utc(2026, 6, 12, 0), utc(2026, 6, 15, 0)),
    # Monday just before 20:00 New York (23:59 UTC in summer)
    (utc(2026, 6, 15, 23, 59), utc(2026, 6, 15, 0), utc(2026, 6, 16, 0)),
])
def test_last_and_next_announcement_across_dst(now: datetime, last: datetime, next_: datetime):
    assert last_announcement(now).at == last
    assert next_announcement(now).at == next_
    assert last_announcement(now).at <= now < next_announcement(now).at


def test_a_week_has_five_announcements_sunday_to_thursday_whatever_the_zone_offset():
    for start in (utc(2026, 3, 1, 12), utc(2026, 10, 27, 12), utc(2026, 7, 1, 12)):
        week = announcements_between(start, start + timedelta(days=7))
        assert len(week) == 5
        assert sorted(a.day.strftime("%a") for a in week) == sorted(
            ["Sun", "Mon", "Tue", "Wed", "Thu"])
        assert all(a.at.astimezone(UTC).hour in (0, 1) for a in week)


def test_submission_windows_follow_the_reference_table():
    monday = Announcement(date(2026, 6, 15))  # announces Fri 14:00 – Mon 14:00
    assert monday.opens == utc(2026, 6, 12, 18)
    assert monday.closes == utc(2026, 6, 15, 18)
    sunday = Announcement(date(2026, 6, 14))  # announces Thu 14:00 – Fri 14:00
    assert (sunday.opens, sunday.closes) == (utc(2026, 6, 11, 18), utc(2026, 6, 12, 18))
    # across the autumn change: Monday 2026-11-02 opens Friday 14:00 EDT, closes 14:00 EST
    after = Announcement(date(2026, 11, 2))
    assert (after.opens, after.closes) == (utc(2026, 10, 30, 18), utc(2026, 11, 2, 19))
    assert after.previous() == Announcement(date(2026, 11, 1))
    assert Announcement(date(2026, 10, 29)).following() == Announcement(date(2026, 11, 1))


def test_quiet_days_and_the_line_readers_see():
    saturday = utc(2026, 3, 7, 15)
    assert is_quiet_day(saturday)
    assert not is_quiet_day(utc(2026, 3, 8, 15))
    assert schedule_line(saturday) == (
        "arXiv announces Sunday to Thursday at 20:00 New York time; the next announcement is "
        "Sunday 20:00 New York time.")
    assert schedule_line(saturday, "Asia/Tokyo").endswith(
        "Sunday 20:00 New York time (Monday 09:00 your time).")
    assert schedule_line(saturday, "Europe/Berlin").endswith("(Monday 01:00 your time).")
    assert schedule_line(saturday, "No/Such_Zone").endswith("Sunday 20:00 New York time.")


# -- what each announcement brought, persisted -----------------------------------------------
@pytest.fixture
def db(tmp_path: Path):
    store = Store(tmp_path / "a.db")
    yield store.db
    store.close()


def test_each_expected_announcement_is_seen_missed_failed_or_unchecked(db):
    week = announcements_between(utc(2026, 3, 1), utc(2026, 3, 6, 2))  # Sun 1 .. Thu 5
    sun, mon, tue, wed, thu = week
    late = thu.at + timedelta(hours=1)
    announcements.record_round(db, sun.key, sun.at, sun.at + timedelta(minutes=30),
                               reached=True, evidence=12)
    announcements.record_round(db, mon.key, mon.at, mon.at + timedelta(minutes=30),
                               reached=True, evidence=0)  # a holiday: nothing new anywhere
    announcements.record_round(db, tue.key, tue.at, tue.at + timedelta(minutes=30),
                               reached=False, evidence=0)  # arXiv down
    # wed: the daemon was not running
    states = {a.key: announcements.settle(db, a.key, a.at, late).state for a in week[:4]}
    assert states == {sun.key: "seen", mon.key: "missed", tue.key: "failed",
                      wed.key: "unchecked"}
    # a late answer with papers from Tuesday's window is the truth: it was announced
    after = announcements.record_round(db, tue.key, tue.at, late, reached=True, evidence=3)
    assert (after.state, after.new_papers, after.attempts, after.reached) == ("seen", 3, 2, 1)
    assert after.visible_at == late
    assert announcements.last_seen(db).day == tue.key
    assert [r.day for r in announcements.recent(db, 2)] == [wed.key, tue.key]


def test_reach_counts_failed_rounds_since_arxiv_last_answered(db):
    a = Announcement(date(2026, 3, 2))
    assert announcements.reach(db) == (None, 0)
    announcements.record_round(db, a.key, a.at, a.at, reached=False, evidence=0)
    announcements.record_round(db, a.key, a.at, a.at + timedelta(hours=1), reached=False,
                               evidence=0)
    assert announcements.reach(db) == (None, 2)
    ok = a.at + timedelta(hours=2)
    announcements.record_round(db, a.key, a.at, ok, reached=True, evidence=0)
    assert announcements.reach(db) == (ok, 0)
    announcements.record_round(db, a.key, a.at, ok + timedelta(hours=1), reached=False,
                               evidence=0)
    assert announcements.reach(db) == (ok, 1)
