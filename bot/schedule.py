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


def due_at_factory(cfg: Config, now: Callable[[], datetime]) -> Callable[[Subscriber], datetime]:
    """Per subscriber: its own digest time and zone, else its channel's, else at once."""
    channels = {"telegram": cfg.telegram, "slack": cfg.slack, "email": cfg.email}

    def due_at(sub: Subscriber) -> datetime:
        chan = channels.get(sub.channel)
        hhmm = sub.digest_time or (chan.digest_time if chan else "")
        current = now()
        if not hhmm:
            return current
        zone = sub.timezone or (chan.timezone if chan else "UTC")
        return next_digest_time(current, hhmm, zone)

    return due_at
