"""A reader's cadence (instant, daily HH:MM, weekly DAY HH:MM) and time zone, as typed in chat,
the CLI, config.toml or the preferences page: read once here, then used by the delivery clock.
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from dataclasses import dataclass
from functools import cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
ACCEPTED = "instant, daily HH:MM (e.g. daily 08:00) or weekly DAY HH:MM (e.g. weekly mon 08:00)"
SHOWN = 40  # characters of a refused value quoted back

_TIME = re.compile(r"([01]?\d|2[0-3]):([0-5]\d)")


class SettingError(ValueError):
    """A cadence or zone we refuse; `message` names the value and what is accepted."""

    @property
    def message(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class Cadence:
    """When a reader's papers go: at each cycle end, once a local day, or once a local week."""

    kind: str  # "instant", "daily", "weekly"
    hour: int = 0
    minute: int = 0
    weekday: int | None = None  # 0 = Monday; weekly only

    @property
    def instant(self) -> bool:
        return self.kind == "instant"

    @property
    def hhmm(self) -> str:
        return f"{self.hour:02d}:{self.minute:02d}"

    def __str__(self) -> str:
        """The canonical text, stored and accepted back: "weekly mon 08:00"."""
        if self.kind == "daily":
            return f"daily {self.hhmm}"
        if self.kind == "weekly":
            return f"weekly {WEEKDAYS[self.weekday or 0]} {self.hhmm}"
        return "instant"

    def describe(self, zone: str) -> str:
        """In words, after "papers arrive", for replies and pages."""
        if self.kind == "daily":
            return f"as one digest a day at {self.hhmm} ({zone} time)"
        if self.kind == "weekly":
            day = DAY_NAMES[self.weekday or 0]
            return f"as one digest a week, {day} at {self.hhmm} ({zone} time)"
        return "as soon as a poll finds new papers"


INSTANT = Cadence("instant")


def parse_cadence(text: str) -> Cadence:
    """"instant" (or ""), "daily 08:00" (or "08:00"), "weekly mon 08:00"; any case.

    Raises SettingError naming the value and what is accepted.
    """
    words = text.strip().lower().split() if isinstance(text, str) else ["?"]
    if not words or words == ["instant"]:
        return INSTANT
    if words[0] == "daily" and len(words) == 2:
        return _at("daily", words[1], None, text)
    if len(words) == 1 and words[0][:1].isdigit():
        return _at("daily", words[0], None, text)
    if words[0] == "weekly" and len(words) == 3:
        return _at("weekly", words[2], _weekday(words[1], text), text)
    raise _refused(text)


def _at(kind: str, hhmm: str, weekday: int | None, text: str) -> Cadence:
    m = _TIME.fullmatch(hhmm)
    if m is None:
        raise _refused(text, f"'{shown(hhmm)}' is not a time of day like 08:00")
    return Cadence(kind, int(m.group(1)), int(m.group(2)), weekday)


def _weekday(word: str, text: str) -> int:
    for i, (short, full) in enumerate(zip(WEEKDAYS, DAY_NAMES, strict=True)):
        if word in (short, full.lower()):
            return i
    raise _refused(text, f"'{shown(word)}' is not a day (mon, tue, wed, thu, fri, sat, sun)")


def _refused(text: str, why: str = "") -> SettingError:
    reason = f" ({why})" if why else ""
    return SettingError(f"'{shown(text)}' is not a cadence{reason}; use {ACCEPTED}.")


def shown(text: object) -> str:
    """A refused value quoted back: at most SHOWN characters, controls, invisible characters
    and broken surrogates as "�" (a reply must be sendable and readable)."""
    value = (text if isinstance(text, str) else repr(text)).strip()
    clean = "".join("\ufffd" if unicodedata.category(c) in ("Cc", "Cf", "Cs") else c
                    for c in value[:SHOWN])
    return clean + ("…" if len(value) > SHOWN else "")


# --- time zones --------------------------------------------------------------------------------


@cache
def _all_zones() -> dict[str, str]:
    """Every IANA name zoneinfo knows, by its case-folded form."""
    return {z.casefold(): z for z in available_timezones() if z not in ("localtime", "Factory")}


@cache
def _zones() -> tuple[str, ...]:
    """The names worth suggesting: places, not Etc/GMT+5 offsets or old SystemV aliases."""
    return tuple(sorted(z for z in _all_zones().values()
                        if "/" in z and not z.startswith(("Etc/", "SystemV/"))))


def zone_names() -> tuple[str, ...]:
    """The zones a form offers to pick from (places, sorted)."""
    return _zones()


def is_zone(name: str) -> bool:
    """An exact IANA name zoneinfo knows."""
    if not isinstance(name, str) or not name or name != name.strip():
        return False
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return False
    return True


def resolve_zone(text: str) -> str:
    """An IANA name as typed ("Europe/Berlin", any case), or a city alone ("Berlin", "new york")
    when exactly one zone ends with it. Raises SettingError with the closest valid names."""
    typed = text.strip() if isinstance(text, str) else ""
    if not typed:
        raise SettingError("Which time zone? Give an IANA name such as Europe/Berlin, "
                           "America/New_York or Asia/Tokyo.")
    key = typed.replace(" ", "_").casefold()
    if key in _all_zones():
        return _all_zones()[key]
    cities = [z for z in _zones() if z.casefold().endswith("/" + key)]
    if len(cities) == 1:
        return cities[0]
    close = cities or _closest(key)
    hint = f" Did you mean {_either(close)}?" if close else ""
    raise SettingError(f"'{shown(typed)}' is not a time zone I know.{hint} Use an IANA name "
                       "such as Europe/Berlin or Asia/Tokyo.")


def _closest(key: str) -> list[str]:
    zones = _zones()
    by_key = {z.casefold(): z for z in zones}
    found = difflib.get_close_matches(key, list(by_key), n=3, cutoff=0.6)
    cities = {z.rsplit("/", 1)[-1].casefold(): z for z in zones}
    found += [cities[c] for c in difflib.get_close_matches(key, list(cities), n=3, cutoff=0.75)]
    names = [by_key.get(f, f) for f in found]
    return list(dict.fromkeys(names))[:3]


def _either(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]
