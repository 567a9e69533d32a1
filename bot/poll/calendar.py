"""Poll stage: arXiv's announcement calendar, which says when new papers can appear at all.

arXiv announces Sunday to Thursday at 20:00 New York time; each announcement carries the
submissions of one window that closes at 14:00 New York time on the last weekday before it.
Holidays are not listed here: an expected announcement that brings nothing is learned as one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

NEW_YORK = ZoneInfo("America/New_York")
ANNOUNCE_AT = time(20, 0)
CUTOFF_AT = time(14, 0)
ANNOUNCE_WEEKDAYS = frozenset({6, 0, 1, 2, 3})  # Sunday to Thursday (Monday is 0)
SCHEDULE = "arXiv announces Sunday to Thursday at 20:00 New York time"
# OAI-PMH shows an announcement "typically around" 22:30 New York time (reference notes §2).
OAI_READY = timedelta(minutes=150)


@dataclass(frozen=True, order=True)
class Announcement:
    """One expected announcement, named by its New York date."""

    day: date

    @property
    def at(self) -> datetime:
        """When it is made, in UTC (20:00 New York is 00:00 UTC in summer, 01:00 in winter)."""
        return _utc(self.day, ANNOUNCE_AT)

    @property
    def closes(self) -> datetime:
        """The end of its submission window: 14:00 on the last weekday up to its date."""
        day = self.day
        while day.weekday() >= 5:
            day -= timedelta(days=1)
        return _utc(day, CUTOFF_AT)

    @property
    def opens(self) -> datetime:
        """The start of its submission window: where the previous announcement's closed.

        A paper submitted after this that is visible before the next announcement was
        announced by this one."""
        return self.previous().closes

    @property
    def key(self) -> str:
        return self.day.isoformat()

    def previous(self) -> Announcement:
        return _scan(self.day - timedelta(days=1), -1)

    def following(self) -> Announcement:
        return _scan(self.day + timedelta(days=1), 1)

    def __str__(self) -> str:
        return f"{self.day:%A %Y-%m-%d} 20:00 New York time"


def _utc(day: date, at: time) -> datetime:
    return datetime.combine(day, at, NEW_YORK).astimezone(UTC)


def _scan(day: date, step: int) -> Announcement:
    while day.weekday() not in ANNOUNCE_WEEKDAYS:
        day += timedelta(days=step)
    return Announcement(day)


def last_announcement(now: datetime) -> Announcement:
    """The latest expected announcement made at or before `now`."""
    candidate = _scan(now.astimezone(NEW_YORK).date(), -1)
    return candidate if candidate.at <= now else candidate.previous()


def next_announcement(now: datetime) -> Announcement:
    """The first expected announcement after `now`."""
    return last_announcement(now).following()


def announcements_between(start: datetime, end: datetime) -> list[Announcement]:
    """Expected announcements made in (start, end]."""
    found: list[Announcement] = []
    current = last_announcement(end)
    while current.at > start:
        found.append(current)
        current = current.previous()
    return found[::-1]


def is_quiet_day(now: datetime) -> bool:
    """Friday and Saturday in New York: no announcement is expected today."""
    return now.astimezone(NEW_YORK).weekday() not in ANNOUNCE_WEEKDAYS


def local_time(when: datetime, zone: str | None) -> str:
    """`Sunday 20:00` in New York time, with the reader's own time in brackets when known."""
    ny = when.astimezone(NEW_YORK)
    text = f"{ny:%A %H:%M}"
    if not zone:
        return f"{text} New York time"
    try:
        local = when.astimezone(ZoneInfo(zone))
    except (ValueError, KeyError):
        return f"{text} New York time"
    return f"{text} New York time ({local:%A %H:%M} your time)"


def schedule_line(now: datetime, zone: str | None = None) -> str:
    """One sentence for readers: the rhythm and the next announcement."""
    return (f"{SCHEDULE}; the next announcement is "
            f"{local_time(next_announcement(now).at, zone)}.")
