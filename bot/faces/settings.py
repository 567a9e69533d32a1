"""A reader's delivery settings (cadence and time zone), shown and changed the same way from chat,
the CLI and the email preferences page; a change moves the reader's pending rows with it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from bot.config import Config
from bot.deliver.cadence import SettingError, parse_cadence, resolve_zone
from bot.deliver.schedule import Setting, due_at_factory, due_for, settings_factory
from storage import subscribers as sub_repo
from storage.database import write
from storage.records import Subscriber
from storage.store import Store

DEFAULT = "default"  # `/digest default`, `--timezone default`: back to the channel's
CHANGE_HINT = ("Change it with /digest instant, /digest daily 08:00 or /digest weekly mon 08:00, "
               "and the zone with /timezone Europe/Berlin.")


@dataclass(frozen=True)
class Settings:
    """One subscriber's settings in force, when its next digest is due, and rows a change moved."""

    subscriber: Subscriber
    setting: Setting
    next_due: datetime | None  # None: instant delivery
    moved: int = 0

    def describe(self) -> str:
        """"as one digest a day at 08:00 (Asia/Tokyo time); the next on Tuesday 2 December at
        08:00", after "papers arrive here"."""
        s = self.setting
        text = s.cadence.describe(s.zone)
        if not s.own_cadence:
            text += " (this channel's default)"
        if self.next_due is not None:
            local = self.next_due.astimezone(ZoneInfo(s.zone))
            text += f"; the next on {local:%A} {local.day} {local:%B} at {local:%H:%M}"
        return text


    def lines(self) -> list[str]:
        """For the CLI: one fact a line."""
        s, sub = self.setting, self.subscriber
        own = {True: "its own", False: "the channel's default"}
        where = sub.address + (f" topic {sub.topic}" if sub.topic else "")
        lines = [f"{sub.channel} {where}", f"  cadence: {s.cadence} ({own[s.own_cadence]})",
                 f"  time zone: {s.zone} ({own[s.own_zone]})"]
        if self.next_due is not None:
            local = self.next_due.astimezone(ZoneInfo(s.zone))
            lines.append(f"  next digest: {local:%A %Y-%m-%d %H:%M} {s.zone} time "
                         "(if new papers arrived)")
        if self.moved:
            lines.append(f"  {self.moved} waiting paper{'s' if self.moved != 1 else ''} "
                         "moved to this setting")
        return lines


def clean_digest(text: str) -> str | None:
    """A cadence as stored, or None for the channel's; raises SettingError."""
    if text.strip().casefold() == DEFAULT:
        return None
    return str(parse_cadence(text))


def clean_zone(text: str) -> str | None:
    """An IANA zone (a city alone resolves), or None for the channel's; raises SettingError."""
    if isinstance(text, str) and text.strip().casefold() == DEFAULT:
        return None
    return resolve_zone(text)


def settings_of(cfg: Config, sub: Subscriber, now: datetime, moved: int = 0) -> Settings:
    setting = settings_factory(cfg)(sub)
    due = None if setting.cadence.instant else due_for(sub, setting, now)
    return Settings(sub, setting, due, moved)


def read_settings(store: Store, cfg: Config, channel: str, address: str, now: datetime,
                  topic: str | None = None) -> Settings | None:
    sub = sub_repo.find(store.db, channel, address, topic)
    return settings_of(cfg, sub, now) if sub is not None else None


def change_settings(store: Store, cfg: Config, channel: str, address: str, now: datetime, *,
                    digest: str | None = None, timezone: str | None = None,
                    topic: str | None = None, create: bool = True) -> Settings:
    """Set what is given (`digest`, `timezone` as typed), in one transaction with moving the
    subscriber's pending rows. Bad values raise SettingError before anything changes; an
    unknown address raises it too unless `create`."""
    changes: dict[str, str | None] = {}
    if digest is not None:
        changes["digest_time"] = clean_digest(digest)
    if timezone is not None:
        changes["timezone"] = clean_zone(timezone)
    with write(store.db):
        sub = sub_repo.find(store.db, channel, address, topic)
        if sub is None and not create:
            raise SettingError(f"{channel} {address} is not a subscriber here: subscribe it "
                               "to a keyword first.")
        if sub is None:
            sub = sub_repo.ensure(store.db, channel, address, now, topic)
        sub, moved = sub_repo.change_settings(store.db, sub.id, changes,
                                              due_at_factory(cfg, lambda: now))
    return settings_of(cfg, sub, now, moved)
