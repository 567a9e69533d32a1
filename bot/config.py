"""Configuration: config.toml read with tomllib, every key defaulted and validated.

A bad file stops the program with one line naming the file, the key and what is wrong.
Secrets never live here: they come from the environment (see `Secrets`).
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DEFAULT_KEYWORDS = [
    "Video Anomaly Detection",
    "Video Understanding",
    "Vision Language Model",
    "Multimodal Large Language Model",
]


class ConfigError(Exception):
    """The config file is unusable; the message is the one line the operator sees."""


@dataclass
class ArxivConfig:
    api_url: str = "https://export.arxiv.org/api/query"
    keywords: list[str] = field(default_factory=lambda: list(DEFAULT_KEYWORDS))
    max_papers: int = 100
    poll_interval: float = 3600
    request_interval: float = 3.0
    timeout: float = 30
    contact: str = ""
    notify_max_age_days: int = 14
    max_keywords: int = 500


@dataclass
class StorageConfig:
    path: Path = Path("daily-papers.db")


@dataclass
class DigestConfig:
    path: Path | None = Path("README.md")
    abstract_chars: int = 600
    max_bytes: int = 500_000


@dataclass
class TelegramConfig:
    api_url: str = "https://api.telegram.org/bot"
    max_subscriptions_per_chat: int = 50
    group_admins_only: bool = True
    allowed_chats: list[int] = field(default_factory=list)
    digest_time: str = ""
    timezone: str = "UTC"
    max_in_flight: int = 1


@dataclass
class SlackChannel:
    channel: str = ""
    keywords: list[str] = field(default_factory=list)


@dataclass
class SlackConfig:
    api_url: str = "https://slack.com/api/"
    allowed_channels: list[str] = field(default_factory=list)
    digest_time: str = ""
    timezone: str = "UTC"
    max_in_flight: int = 1
    channels: list[SlackChannel] = field(default_factory=list)


@dataclass
class EmailSubscriber:
    address: str = ""
    keywords: list[str] = field(default_factory=list)


@dataclass
class EmailConfig:
    host: str = ""
    port: int = 587
    security: str = "starttls"
    username: str = ""
    sender: str = ""
    return_path: str = ""
    digest_time: str = ""
    timezone: str = "UTC"
    max_per_minute: int = 60
    max_bounces: int = 3
    max_in_flight: int = 1
    ca_file: str = ""  # extra CA bundle for private relays (and the tests' local server)
    subscribers: list[EmailSubscriber] = field(default_factory=list)


@dataclass
class WebConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    public_url: str = "http://localhost:8080"


@dataclass
class Config:
    path: Path = Path("config.toml")
    arxiv: ArxivConfig = field(default_factory=ArxivConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    digest: DigestConfig = field(default_factory=DigestConfig)
    telegram: TelegramConfig = field(default_factory=TelegramConfig)
    slack: SlackConfig = field(default_factory=SlackConfig)
    email: EmailConfig = field(default_factory=EmailConfig)
    web: WebConfig = field(default_factory=WebConfig)


@dataclass(frozen=True)
class Secrets:
    """Secrets from the environment only; never written to a file or a log."""

    telegram_bot_token: str = ""
    slack_bot_token: str = ""
    slack_signing_secret: str = ""
    slack_app_token: str = ""
    smtp_password: str = ""
    daily_papers_secret: str = ""
    daily_papers_metrics_token: str = ""  # /metrics from other hosts (bearer token)

    @classmethod
    def from_env(cls, env: typing.Mapping[str, str] | None = None) -> Secrets:
        env = os.environ if env is None else env
        return cls(**{f.name: env.get(f.name.upper(), "") for f in dataclasses.fields(cls)})

    def values(self) -> list[str]:
        return [v for v in dataclasses.astuple(self) if v]


def config_path(cli_path: str | None) -> Path:
    """--config, else $DAILY_PAPERS_CONFIG, else ./config.toml."""
    return Path(cli_path or os.environ.get("DAILY_PAPERS_CONFIG") or "config.toml")


def load_config(path: Path) -> Config:
    """Read and validate the file; a missing file means all defaults."""
    raw: dict[str, typing.Any] = {}
    if path.exists():
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    raw.pop("path", None)
    digest_off = isinstance(raw.get("digest"), dict) and raw["digest"].get("path") == ""
    cfg = _build(Config, raw, path, "")
    cfg.path = path
    base = path.resolve().parent
    cfg.storage.path = _resolve(base, cfg.storage.path)
    cfg.digest.path = None if digest_off else _resolve(base, cfg.digest.path or Path("README.md"))
    if cfg.email.ca_file:
        cfg.email.ca_file = str(_resolve(base, Path(cfg.email.ca_file)))
    _check_values(cfg, path)
    return cfg


def _resolve(base: Path, p: Path) -> Path:
    p = p.expanduser()
    return p if p.is_absolute() else base / p


def _build(cls: type, raw: typing.Any, path: Path, prefix: str) -> typing.Any:
    where = prefix.rstrip(".") or "the top level"
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: [{where}] must be a table")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.name != "path" or cls is not Config}
    for key in raw:
        if key not in names:
            known = ", ".join(sorted(names))
            raise ConfigError(f"{path}: unknown key '{prefix}{key}' (known keys: {known})")
    values = {}
    for name in names:
        if name in raw:
            values[name] = _convert(hints[name], raw[name], path, f"{prefix}{name}")
    return cls(**values)


def _convert(tp: typing.Any, value: typing.Any, path: Path, key: str) -> typing.Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, path, key + ".")
    if origin in (types.UnionType, typing.Union):  # only "X | None" is used
        inner = next(a for a in typing.get_args(tp) if a is not type(None))
        return _convert(inner, value, path, key)
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{path}: '{key}' must be a list, not {_kind(value)}")
        return [_convert(item, v, path, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is Path:
        return Path(_convert(str, value, path, key))
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float, str, bool) and (type(value) is not tp):
        raise ConfigError(f"{path}: '{key}' must be {_NAMES[tp]}, not {_kind(value)}")
    return value


_NAMES = {int: "a whole number", float: "a number", str: "a string", bool: "true or false"}


def _kind(value: typing.Any) -> str:
    kinds = {bool: "true/false", int: "a number", float: "a number", str: "a string",
             list: "a list", dict: "a table"}
    return kinds.get(type(value), type(value).__name__)


_TIME = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")
_CHANNEL_ID = re.compile(r"^[CGD][A-Z0-9]{6,}$")


def _check_values(cfg: Config, path: Path) -> None:
    """Value rules the types cannot express; the first failure is the message."""
    for problem in _problems(cfg):
        raise ConfigError(f"{path}: {problem}")


def _problems(cfg: Config) -> typing.Iterator[str]:
    a = cfg.arxiv
    yield from _url("arxiv.api_url", a.api_url)
    yield from _range("arxiv.max_papers", a.max_papers, 1, 2000)
    yield from _range("arxiv.poll_interval", a.poll_interval, 1, 7 * 86400)
    yield from _range("arxiv.request_interval", a.request_interval, 0, 600)
    yield from _range("arxiv.timeout", a.timeout, 0.1, 600)
    yield from _range("arxiv.notify_max_age_days", a.notify_max_age_days, 1, 365)
    yield from _range("arxiv.max_keywords", a.max_keywords, 1, 100_000)
    if a.contact and "@" not in a.contact:
        yield "'arxiv.contact' must be an email address (arXiv asks for one in the User-Agent)"
    yield from _range("digest.abstract_chars", cfg.digest.abstract_chars, 0, 100_000)
    yield from _range("digest.max_bytes", cfg.digest.max_bytes, 10_000, 100_000_000)
    yield from _url("telegram.api_url", cfg.telegram.api_url)
    yield from _url("slack.api_url", cfg.slack.api_url)
    yield from _url("web.public_url", cfg.web.public_url)
    yield from _range("web.port", cfg.web.port, 0, 65535)
    yield from _range("telegram.max_subscriptions_per_chat",
                      cfg.telegram.max_subscriptions_per_chat, 1, 10_000)
    yield from _range("email.port", cfg.email.port, 1, 65535)
    yield from _range("email.max_per_minute", cfg.email.max_per_minute, 1, 100_000)
    yield from _range("email.max_bounces", cfg.email.max_bounces, 1, 1000)
    if cfg.email.security not in ("starttls", "tls", "none"):
        yield "'email.security' must be \"starttls\", \"tls\" or \"none\""
    for section in ("telegram", "slack", "email"):
        sec = getattr(cfg, section)
        yield from _range(f"{section}.max_in_flight", sec.max_in_flight, 1, 64)
        if sec.digest_time and not _TIME.match(sec.digest_time):
            yield (f"'{section}.digest_time' must be \"\" or a time like \"08:00\", "
                   f"not {sec.digest_time!r}")
        try:
            ZoneInfo(sec.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            yield (f"'{section}.timezone' {sec.timezone!r} is not a known time zone "
                   "(e.g. \"Europe/Berlin\")")
    for i, ch in enumerate(cfg.slack.channels):
        yield from _slack_channel(f"slack.channels[{i}].channel", ch.channel)
    for i, ch in enumerate(cfg.slack.allowed_channels):
        yield from _slack_channel(f"slack.allowed_channels[{i}]", ch)


def _slack_channel(key: str, value: str) -> typing.Iterator[str]:
    if value.startswith("#"):
        yield (f"'{key}' is a name ({value}); use the channel ID: in Slack open the channel, "
               "click its name, and copy the ID at the bottom (it looks like C0123456789)")
    elif not _CHANNEL_ID.match(value):
        yield f"'{key}' must be a Slack channel ID like C0123456789, not {value!r}"


def _range(key: str, value: float, low: float, high: float) -> typing.Iterator[str]:
    if not low <= value <= high:
        yield f"'{key}' must be between {low:g} and {high:g}, not {value:g}"


def _url(key: str, value: str) -> typing.Iterator[str]:
    parts = urlparse(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        yield f"'{key}' must be an http(s) URL, not {value!r}"
