"""When outbox rows become due: at cycle end, or at the subscriber's next daily digest time."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from bot.config import Config
from storage.records import Subscriber


def next_digest_time(now: datetime, hhmm: str, zone: str) -> datetime:
    """The first moment at or after `now` whose local time in `zone` is `hhmm` (UTC result).

    Once per local date: in a DST gap the wall time that does not exist maps forward; in a
    repeated hour the first occurrence counts.
    """
    tz = ZoneInfo(zone)
    hour, minute = (int(x) for x in hhmm.split(":"))
    local_now = now.astimezone(tz)
    day = local_now.date()
    for offset in range(3):
        candidate = datetime.combine(day + timedelta(days=offset), time(hour, minute), tz)
        candidate = candidate.replace(fold=0)
        as_utc = candidate.astimezone(UTC)
        if as_utc >= now.astimezone(UTC):
            return as_utc
    raise AssertionError("unreachable: a wall time recurs within three days")


DigestDate = Callable[[Subscriber, datetime], str | None]


def _slot(cfg: Config) -> Callable[[Subscriber], tuple[str, str] | None]:
    """Per subscriber: (HH:MM, zone) of its daily digest — its own, else its channel's — or
    None for delivery at every cycle end."""
    sections = cfg.channel_sections()

    def slot(sub: Subscriber) -> tuple[str, str] | None:
        chan = sections.get(sub.channel)
        hhmm = sub.digest_time or (chan.digest_time if chan else "")
        if not hhmm:
            return None
        return hhmm, sub.timezone or (chan.timezone if chan else "UTC")

    return slot


def due_at_factory(cfg: Config, now: Callable[[], datetime]) -> Callable[[Subscriber], datetime]:
    """Per subscriber: at once, or its next digest time on a local date that had no digest yet
    (`last_digest_date`: a digest time moved later the same day does not bring a second one)."""
    slot_of = _slot(cfg)

    def due_at(sub: Subscriber) -> datetime:
        current = now()
        slot = slot_of(sub)
        if slot is None:
            return current
        hhmm, zone = slot
        when = next_digest_time(current, hhmm, zone)
        while sub.last_digest_date and local_date(when, zone) <= sub.last_digest_date:
            when = next_digest_time(when + timedelta(minutes=1), hhmm, zone)
        return when

    return due_at


def digest_date_factory(cfg: Config) -> DigestDate:
    """For the dispatcher: the local date a daily subscriber's rows due at `due_at` belong to
    (None for instant delivery), recorded with the message so that date gets no second one."""
    slot_of = _slot(cfg)

    def digest_date(sub: Subscriber, due_at: datetime) -> str | None:
        slot = slot_of(sub)
        return None if slot is None else local_date(due_at, slot[1])

    return digest_date


def local_date(when: datetime, zone: str) -> str:
    return when.astimezone(ZoneInfo(zone)).date().isoformat()
