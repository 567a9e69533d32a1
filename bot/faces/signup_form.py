"""Reading what a reader typed into the sign-up and preferences forms: address, keywords,
cadence and zone, checked by the same rules as chat and the CLI, each problem in one sentence."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from bot.config import AddressError, normalize_address
from bot.deliver.cadence import WEEKDAYS, Cadence, SettingError, parse_cadence, shown
from bot.faces.commands import CommandError, parse_or_refuse
from bot.faces.settings import clean_zone

KINDS = ("instant", "daily", "weekly")
DEFAULT_TIME = "08:00"
HONEYPOT = "website"  # hidden from people; a bot that fills every field fills it
MAX_KEYWORD_LINES = 1000  # lines read at all: the body cap allows about 64 KB


class FormProblems(Exception):
    """What is wrong with the form, one sentence each; nothing was changed."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Choices:
    """A checked sign-up: address as stored, keywords as displayed, cadence and zone as stored."""

    address: str
    keywords: tuple[str, ...]
    digest: str
    timezone: str | None  # None: the email channel's zone


def field(form: Mapping[str, object], name: str) -> str:
    """One text field; a missing field or a file upload reads as empty."""
    value = form.get(name, "")
    return value if isinstance(value, str) else ""


def filled_honeypot(form: Mapping[str, object]) -> bool:
    return bool(field(form, HONEYPOT).strip())


def read_address(form: Mapping[str, object]) -> str:
    try:
        return normalize_address(field(form, "address"))
    except AddressError as exc:
        raise FormProblems([f"Email address: {exc.message.rstrip('.')}."]) from None


def read_keywords(text: str, limit: int) -> tuple[str, ...]:
    """One keyword a line; blank lines and repeats (by identity) are dropped."""
    lines = [line.strip() for line in text.splitlines()[:MAX_KEYWORD_LINES + 1]]
    lines = [line for line in lines if line]
    if not lines:
        raise FormProblems(["Keywords: give at least one, e.g. video anomaly detection."])
    if len(lines) > limit:
        raise FormProblems([f"Keywords: at most {limit} at once, not {len(lines)}."])
    seen: dict[str, str] = {}
    problems = []
    for line in lines:
        try:
            parsed = parse_or_refuse(line)
        except CommandError as exc:
            problems.append(f"Keyword '{shown(line)}': {exc.message}")
            continue
        seen.setdefault(parsed.canonical, parsed.display)
    if problems:
        raise FormProblems(problems)
    return tuple(seen.values())


def read_cadence(form: Mapping[str, object]) -> str:
    """The three controls (kind, time, day) as one cadence text, checked; raises FormProblems."""
    kind = field(form, "cadence")
    time = field(form, "time").strip() or DEFAULT_TIME
    if kind not in KINDS:
        raise FormProblems(["Delivery: choose as soon as they are found, one digest a day or "
                            "one a week."])
    if kind != "instant" and len(time.split()) != 1:
        raise FormProblems([f"Delivery: '{shown(time)}' is not a time of day like 08:00."])
    typed = {"instant": "instant", "daily": f"daily {time}",
             "weekly": f"weekly {field(form, 'day')} {time}"}[kind]
    try:
        return str(parse_cadence(typed))
    except SettingError as exc:
        raise FormProblems([f"Delivery: {exc.message}"]) from None


def read_zone(form: Mapping[str, object]) -> str | None:
    """An IANA zone (a city alone resolves); empty: the channel's. Raises FormProblems."""
    typed = field(form, "timezone").strip()
    if not typed:
        return None
    try:
        return clean_zone(typed)
    except SettingError as exc:
        raise FormProblems([f"Time zone: {exc.message}"]) from None


def read_signup(form: Mapping[str, object], max_keywords: int) -> Choices:
    """Every field checked; all problems at once."""
    problems: list[str] = []
    values: dict[str, object] = {}
    readers = {"address": lambda: read_address(form),
               "keywords": lambda: read_keywords(field(form, "keywords"), max_keywords),
               "digest": lambda: read_cadence(form), "timezone": lambda: read_zone(form)}
    for name, read in readers.items():
        try:
            values[name] = read()
        except FormProblems as exc:
            problems += exc.problems
    if problems:
        raise FormProblems(problems)
    return Choices(**values)  # type: ignore[arg-type]


def cadence_fields(cadence: Cadence) -> dict[str, str]:
    """The controls preset to a cadence in force (the preferences page)."""
    return {"cadence": cadence.kind, "time": cadence.hhmm if not cadence.instant else DEFAULT_TIME,
            "day": WEEKDAYS[cadence.weekday or 0]}
