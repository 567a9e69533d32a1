"""The delivery clock: when outbox rows become due — at cycle end, or at the subscriber's next
daily or weekly digest in its own zone — and which local day or week a digest belongs to."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo

from bot.deliver.cadence import INSTANT, Cadence, SettingError, is_zone, parse_cadence
from storage.records import DigestMark, Subscriber


class ChannelDefaults(Protocol):
    """A channel's [section]: the cadence and zone of readers who chose none."""

    digest_time: str
    timezone: str


class Channels(Protocol):
    """The config (bot.config.Config): every channel's section by its name."""

    def channel_sections(self) -> Mapping[str, ChannelDefaults]: ...


@dataclass(frozen=True)
class Setting:
    """A subscriber's cadence and zone in force, and whether each is its own or its channel's."""

    cadence: Cadence
    zone: str
    own_cadence: bool = False
    own_zone: bool = False


def next_slot(now: datetime, cadence: Cadence, zone: str) -> datetime:
    """The first moment at or after `now` whose local time in `zone` is the cadence's time, on
    its weekday for a weekly one (UTC result).

    In a DST gap the wall time that does not exist maps forward; in a repeated hour the first
    occurrence counts, so a local date never gets the time twice.
    """
    tz = ZoneInfo(zone)
    start = now.astimezone(UTC)
    day = start.astimezone(tz).date()
    for offset in range(9):
        local_day = day + timedelta(days=offset)
        if cadence.weekday is not None and local_day.weekday() != cadence.weekday:
            continue
        candidate = datetime.combine(local_day, time(cadence.hour, cadence.minute), tz)
        as_utc = candidate.replace(fold=0).astimezone(UTC)
        if as_utc >= start:
            return as_utc
    raise AssertionError("unreachable: a weekday's wall time recurs within nine days")


def next_digest_time(now: datetime, hhmm: str, zone: str) -> datetime:
    """A daily digest's next moment (see `next_slot`)."""
    return next_slot(now, parse_cadence(f"daily {hhmm}"), zone)


def local_date(when: datetime, zone: str) -> str:
    return when.astimezone(ZoneInfo(zone)).date().isoformat()


def local_week(when: datetime, zone: str) -> str:
    """The local ISO week, "2025-W43": sorts in time order as text."""
    year, week, _ = when.astimezone(ZoneInfo(zone)).date().isocalendar()
    return f"{year}-W{week:02d}"


def period(setting: Setting, when: datetime) -> DigestMark | None:
    """The local date (daily) or ISO week (weekly) a digest due at `when` is sent for."""
    if setting.cadence.kind == "daily":
        return DigestMark(date=local_date(when, setting.zone))
    if setting.cadence.kind == "weekly":
        return DigestMark(week=local_week(when, setting.zone))
    return None


def _had_digest(sub: Subscriber, mark: DigestMark | None) -> bool:
    if mark is None:
        return False
    if mark.date is not None:
        return bool(sub.last_digest_date) and mark.date <= (sub.last_digest_date or "")
    return bool(sub.last_digest_week) and (mark.week or "") <= (sub.last_digest_week or "")


def due_for(sub: Subscriber, setting: Setting, now: datetime) -> datetime:
    """At once (instant), or the next digest moment in a local date or week that had none yet:
    a digest time moved later the same day (week) does not bring a second one."""
    if setting.cadence.instant:
        return now
    when = next_slot(now, setting.cadence, setting.zone)
    while _had_digest(sub, period(setting, when)):
        when = next_slot(when + timedelta(minutes=1), setting.cadence, setting.zone)
    return when


def settings_factory(cfg: Channels) -> Callable[[Subscriber], Setting]:
    """Per subscriber: its own cadence and zone, else its channel's defaults (config.toml).

    A stored value that no longer reads (written by hand) falls back to the channel's."""
    sections = cfg.channel_sections()

    def setting_of(sub: Subscriber) -> Setting:
        section = sections.get(sub.channel)
        default = _cadence(section.digest_time if section else "") or INSTANT
        own = _cadence(sub.digest_time) if sub.digest_time else None
        own_zone = bool(sub.timezone) and is_zone(sub.timezone or "")
        zone = (sub.timezone if own_zone else section.timezone if section else "UTC") or "UTC"
        return Setting(own or default, zone, own is not None, own_zone)

    return setting_of


def due_at_factory(cfg: Channels, now: Callable[[], datetime]) -> Callable[[Subscriber], datetime]:
    """For the outbox release: each subscriber's rows' due time, read from `now()`."""
    setting_of = settings_factory(cfg)
    return lambda sub: due_for(sub, setting_of(sub), now())


DigestPeriod = Callable[[Subscriber, datetime], DigestMark | None]


def digest_period_factory(cfg: Channels) -> DigestPeriod:
    """For the dispatcher: the local date or week a subscriber's rows due at `due_at` belong
    to (None for instant delivery), recorded with the message so it gets no second digest."""
    setting_of = settings_factory(cfg)
    return lambda sub, due_at: period(setting_of(sub), due_at)


def _cadence(text: str | None) -> Cadence | None:
    try:
        return parse_cadence(text or "")
    except SettingError:
        return None
