"""Poll stage: `schedule = "announcements"` — which keywords to poll (or whether to harvest)
now, when to look again, and what each round tells the announcement calendar.

Each keyword is polled once per announcement, `announce_delay` minutes after it (a harvest no
earlier than 22:30 New York time, when OAI-PMH shows it); a failed poll is retried at backoff
until it succeeds or the next announcement comes; a keyword without a baseline goes at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlite_utils import Database

from bot.config import ArxivConfig
from bot.poll.calendar import (
    OAI_READY,
    SCHEDULE,
    Announcement,
    last_announcement,
    local_time,
)
from bot.poll.keyword import EMPTY_CONFIRMATION, needs_baseline
from storage import announcements
from storage import keywords as kw_repo
from storage.records import AnnouncementRecord, Keyword

RETRY_FIRST = timedelta(minutes=5)
RETRY_MAX = timedelta(hours=2)
HARVEST_RETRY = timedelta(minutes=30)  # until the day's records appear…
HARVEST_GIVE_UP = timedelta(hours=6)  # …or 04:30 New York passed without them: no announcement


def round_start(a: Announcement, arxiv: ArxivConfig) -> datetime:
    delay = timedelta(minutes=arxiv.announce_delay)
    return a.at + (max(delay, OAI_READY) if arxiv.source == "harvest" else delay)


def current(now: datetime, arxiv: ArxivConfig) -> Announcement:
    """The latest announcement whose round has begun."""
    a = last_announcement(now)
    while round_start(a, arxiv) > now:
        a = a.previous()
    return a


@dataclass(frozen=True)
class Plan:
    announcement: Announcement
    keywords: list[Keyword]  # to poll through the search API now
    harvest: bool  # a harvest is due now
    wake: datetime  # when to plan again if nothing is due


def plan(db: Database, arxiv: ArxivConfig, now: datetime) -> Plan:
    cur = current(now, arxiv)
    start = round_start(cur, arxiv)
    following = round_start(cur.following(), arxiv)
    wakes = [following]
    due: list[Keyword] = []
    for kw in kw_repo.to_poll(db):
        when = _due_at(kw, arxiv, start, now)
        if when is not None and when <= now:
            due.append(kw)
        elif when is not None:
            wakes.append(when)
    harvest = False
    if arxiv.source == "harvest":
        when = _harvest_due_at(announcements.get(db, cur.key), start)
        harvest = when is not None and when <= now
        if when is not None and when > now:
            wakes.append(when)
    return Plan(cur, due, harvest, min(wakes))


def _due_at(kw: Keyword, arxiv: ArxivConfig, start: datetime,
            now: datetime) -> datetime | None:
    """When this keyword should next be polled by search in this round (None: not before
    the next announcement)."""
    baseline = needs_baseline(kw, arxiv.max_papers, now)
    if kw.empty_since is not None and baseline and kw.last_poll is not None:
        return kw.last_poll + EMPTY_CONFIRMATION
    if kw.consecutive_failures and kw.last_poll is not None:
        backoff = min(RETRY_FIRST * 2 ** (kw.consecutive_failures - 1), RETRY_MAX)
        return kw.last_poll + backoff
    if baseline:
        return now
    if arxiv.source == "harvest":
        return None  # after its baseline, a keyword's papers come from harvests
    return now if kw.last_success is None or kw.last_success < start else None


def _harvest_due_at(record: AnnouncementRecord | None, start: datetime) -> datetime | None:
    if record is None or record.last_attempt is None or record.last_attempt < start:
        return start
    if record.state == "seen" or record.last_attempt >= start + HARVEST_GIVE_UP:
        return None
    return record.last_attempt + HARVEST_RETRY


def evidence(published: Sequence[datetime], a: Announcement) -> int:
    """Papers submitted after the announcement's window opened: only it can have shown them."""
    return sum(1 for when in published if when > a.opens)


def record(db: Database, arxiv: ArxivConfig, now: datetime, *, reached: bool,
           published: Sequence[datetime]) -> AnnouncementRecord:
    """One round into the calendar; the announcement before the current one is settled."""
    cur = last_announcement(now)
    before = cur.previous()
    announcements.settle(db, before.key, before.at, now)
    return announcements.record_round(db, cur.key, cur.at, now, reached=reached,
                                      evidence=evidence(published, cur))


def describe(record: AnnouncementRecord | None, now: datetime, zone: str | None = None) -> str:
    """What arXiv last did and will do next, for status, logs and readers."""
    cur = last_announcement(now)
    text = f"last announcement {local_time(cur.at, zone)} ({cur.day:%Y-%m-%d})"
    if record is not None and record.day == cur.key:
        text += {
            "seen": f": {record.new_papers} new papers",
            "missed": ": no new papers anywhere (an arXiv holiday?)",
            "failed": ": arXiv could not be reached",
            "unchecked": ": not checked (the daemon was not running)",
        }.get(record.state, ": not read yet" if not record.reached else ": nothing new yet")
    nxt = cur.following()
    return f"{text}; next {local_time(nxt.at, zone)} ({nxt.day:%Y-%m-%d})"


def quiet_line(now: datetime) -> str:
    """What `run --once` says when it found nothing: a quiet day is not a fault."""
    cur = last_announcement(now)
    return (f"no announcement since {cur} ({cur.at:%Y-%m-%d %H:%M} UTC); {SCHEDULE}, "
            f"the next is {cur.following()}")
