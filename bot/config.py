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

from bot.deliver.cadence import ACCEPTED, SettingError, is_zone, parse_cadence, shown

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
    max_keywords: int = 500  # 50,000 with source = "harvest" unless set
    schedule: str = "announcements"  # or "interval": every poll_interval seconds
    announce_delay: int = 30  # minutes after 20:00 New York time
    source: str = "search"  # or "harvest": OAI-PMH once per announcement + local matching
    oai_url: str = "https://oaipmh.arxiv.org/oai"
    harvest_sets: list[str] = field(default_factory=lambda: ["cs"])  # [] = all of arXiv


HARVEST_MAX_KEYWORDS = 50_000


@dataclass
class StorageConfig:
    path: Path = Path("daily-papers.db")


@dataclass
class DigestConfig:
    path: Path | None = Path("README.md")
    abstract_chars: int = 600
    max_bytes: int = 500_000
    html_path: Path | None = None  # the digest as a page, also served at /; "" (default): off
    feeds_dir: Path | None = None  # the public Atom feeds as static files; "" (default): off


class AddressError(ValueError):
    """Not an address of its channel; `message` says what is wrong, after what was given
    (an option, a config key, a chat command)."""

    @property
    def message(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class Recipient:
    """One recipient that config.toml subscribes itself (`where` within its section)."""

    where: str  # e.g. "channels[0]"
    address_key: str  # e.g. "channel"
    address: str
    keywords: list[str]
    digest: str = ""  # this recipient's own cadence; "" leaves it to the reader and the channel
    timezone: str = ""


@dataclass
class ChannelConfig:
    """What every channel's [section] holds: its default cadence and its send overlap.

    A subclass is one channel's section; `address` is that channel's one address rule, used
    for config.toml, the CLI and chat alike.
    """

    digest_time: str = ""
    timezone: str = "UTC"
    max_in_flight: int = 1

    @staticmethod
    def address(text: str) -> str:
        """The address as stored; raises AddressError with what is wrong."""
        return text

    def recipients(self) -> list[Recipient]:
        return []

    def problems(self, section: str) -> typing.Iterator[str]:
        """Value rules of the section the types cannot express."""
        yield from _range(f"{section}.max_in_flight", self.max_in_flight, 1, 64)
        yield from _cadence(f"{section}.digest_time", self.digest_time)
        yield from _zone(f"{section}.timezone", self.timezone)
        for r in self.recipients():
            yield from _address(self, f"{section}.{r.where}.{r.address_key}", r.address)
            if r.digest:
                yield from _cadence(f"{section}.{r.where}.digest", r.digest)
            if r.timezone:
                yield from _zone(f"{section}.{r.where}.timezone", r.timezone)


@dataclass
class TelegramConfig(ChannelConfig):
    api_url: str = "https://api.telegram.org/bot"
    max_subscriptions_per_chat: int = 50
    group_admins_only: bool = True
    allowed_chats: list[int] = field(default_factory=list)

    @staticmethod
    def address(text: str) -> str:
        """A numeric chat ID (negative for groups and channels), as Telegram gives it."""
        if not _TELEGRAM_CHAT_ID.match(text.strip()):
            raise AddressError(f"takes a numeric chat ID, not {text!r}")
        return text.strip()

    def problems(self, section: str) -> typing.Iterator[str]:
        yield from super().problems(section)
        yield from _url(f"{section}.api_url", self.api_url)
        yield from _range(f"{section}.max_subscriptions_per_chat",
                          self.max_subscriptions_per_chat, 1, 10_000)


@dataclass
class Listed:
    """A recipient config.toml lists itself: its keywords and, if it chose them, its own
    cadence and zone ("" leaves them to the reader's later choice and the section's default)."""

    keywords: list[str] = field(default_factory=list)
    digest: str = ""
    timezone: str = ""

    def recipient(self, where: str, address_key: str) -> Recipient:
        return Recipient(where, address_key, getattr(self, address_key), self.keywords,
                         self.digest, self.timezone)


@dataclass
class SlackChannel(Listed):
    channel: str = ""  # a channel ID


@dataclass
class EmailSubscriber(Listed):
    address: str = ""


@dataclass
class AppriseTarget(Listed):
    name: str = ""  # how status and logs name it: the subscriber's address
    url_env: str = ""  # the environment variable holding the apprise URL (it carries credentials)


@dataclass
class SlackConfig(ChannelConfig):
    api_url: str = "https://slack.com/api/"
    allowed_channels: list[str] = field(default_factory=list)
    channels: list[SlackChannel] = field(default_factory=list)

    @staticmethod
    def address(text: str) -> str:
        """A channel ID: names change and are not unique, IDs are what the API takes."""
        if text.startswith("#"):
            raise AddressError(
                f"is a name ({text}); use the channel ID: in Slack open the channel, click its "
                "name, and copy the ID at the bottom (it looks like C0123456789)")
        if not _SLACK_CHANNEL_ID.match(text):
            raise AddressError(f"must be a Slack channel ID like C0123456789, not {text!r}")
        return text

    def recipients(self) -> list[Recipient]:
        return [ch.recipient(f"channels[{i}]", "channel") for i, ch in enumerate(self.channels)]

    def problems(self, section: str) -> typing.Iterator[str]:
        yield from super().problems(section)
        yield from _url(f"{section}.api_url", self.api_url)
        for i, ch in enumerate(self.allowed_channels):
            yield from _address(self, f"{section}.allowed_channels[{i}]", ch)


@dataclass
class EmailConfig(ChannelConfig):
    host: str = ""
    port: int = 587
    security: str = "starttls"
    username: str = ""
    sender: str = ""
    return_path: str = ""
    max_per_minute: int = 60
    max_bounces: int = 3
    ca_file: str = ""  # extra CA bundle for private relays (and the tests' local server)
    subscribers: list[EmailSubscriber] = field(default_factory=list)

    @staticmethod
    def address(text: str) -> str:
        """Syntax checked offline (no DNS), domain lower-cased."""
        from email_validator import EmailNotValidError, validate_email  # only when asked

        candidate = text.strip() if isinstance(text, str) else ""
        try:
            return validate_email(candidate, check_deliverability=False).normalized
        except EmailNotValidError as exc:
            raise AddressError(f"{candidate!r} is not a usable email address: {exc}") from None

    def recipients(self) -> list[Recipient]:
        return [sub.recipient(f"subscribers[{i}]", "address")
                for i, sub in enumerate(self.subscribers)]

    def from_address(self) -> str:
        """The From header: `sender`, else a `username` that is an address; raises
        AddressError when neither holds a usable address."""
        from email.utils import getaddresses  # only with email on: `--help` stays light

        sender = self.sender or (self.username if "@" in self.username else "")
        address = getaddresses([sender])[0][1] if sender else ""
        self.address(address)
        return sender

    def sender_problem(self, section: str = "email") -> str | None:
        """What is wrong with the From address while email is on, or None."""
        if not self.host:
            return None
        try:
            self.from_address()
        except AddressError as exc:
            return (f"'{section}.sender' must be an address like "
                    f"\"Daily Papers <papers@example.org>\" when {section}.host is set "
                    f"({exc.message})")
        return None

    def problems(self, section: str) -> typing.Iterator[str]:
        yield from super().problems(section)
        if problem := self.sender_problem(section):
            yield problem
        yield from _range(f"{section}.port", self.port, 1, 65535)
        yield from _range(f"{section}.max_per_minute", self.max_per_minute, 1, 100_000)
        yield from _range(f"{section}.max_bounces", self.max_bounces, 1, 1000)
        if self.security not in ("starttls", "tls", "none"):
            yield f"'{section}.security' must be \"starttls\", \"tls\" or \"none\""


@dataclass
class AppriseConfig(ChannelConfig):
    """Targets of the apprise library (Discord, Matrix, Teams, ntfy, JSON webhooks, …); each
    is one subscriber, named in config.toml, its URL read from the environment only."""

    targets: list[AppriseTarget] = field(default_factory=list)

    @staticmethod
    def address(text: str) -> str:
        """A target's name as config.toml gives it."""
        if not _TARGET_NAME.match(text):
            raise AddressError("must be a target name of letters, digits, '.', '_' or '-' "
                               f"(at most 64, like lab-discord), not {text!r}")
        return text

    def recipients(self) -> list[Recipient]:
        return [t.recipient(f"targets[{i}]", "name") for i, t in enumerate(self.targets)]

    def urls(self, env: typing.Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
        """(name → URL of each target whose variable holds one, name → why another is skipped)."""
        urls = {t.name: env.get(t.url_env, "").strip() for t in self.targets}
        skipped = {t.name: f"{t.url_env} is not set" if not urls[t.name] else
                   f"{t.url_env} holds no apprise URL such as discord://…"
                   for t in self.targets if "://" not in urls[t.name]}
        return {n: u for n, u in urls.items() if n not in skipped}, skipped

    def problems(self, section: str) -> typing.Iterator[str]:
        yield from super().problems(section)
        seen: set[str] = set()
        for i, t in enumerate(self.targets):
            if not _ENV_NAME.match(t.url_env):
                yield (f"'{section}.targets[{i}].url_env' must name an environment variable "
                       f"(like DISCORD_WEBHOOK_URL), not {t.url_env!r}")
            if t.name in seen:
                yield f"'{section}.targets[{i}].name' {t.name!r} names two targets"
            seen.add(t.name)


def normalize_address(text: str) -> str:
    """An email address as stored (the email channel's address rule)."""
    return EmailConfig.address(text)


@dataclass
class WebConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    public_url: str = "http://localhost:8080"
    signup: bool = False  # /subscribe and /preferences: email readers serve themselves
    signup_mails_per_address: int = 3  # confirmation mails to one address per day
    signup_per_client: int = 20  # sign-ups from one client address per hour
    signup_max_keywords: int = 50  # keywords one address may follow through the pages

    def problems(self, email: EmailConfig) -> typing.Iterator[str]:
        yield from _url("web.public_url", self.public_url)
        yield from _range("web.port", self.port, 0, 65535)
        yield from _range("web.signup_mails_per_address", self.signup_mails_per_address, 1, 1000)
        yield from _range("web.signup_per_client", self.signup_per_client, 1, 100_000)
        yield from _range("web.signup_max_keywords", self.signup_max_keywords, 1, 10_000)
        if self.signup and not email.host:
            yield ("'web.signup' needs email on: set [email] host (and sender), the sign-up "
                   "page sends its confirmation links by mail")


NOT_A_KEY = types.MappingProxyType({"key": False})  # a Config field that config.toml cannot set


@dataclass
class Config:
    path: Path = field(default=Path("config.toml"), metadata=NOT_A_KEY)
    written: frozenset[str] = field(default=frozenset(), metadata=NOT_A_KEY)  # its [sections]
    arxiv: ArxivConfig = field(default_factory=ArxivConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    digest: DigestConfig = field(default_factory=DigestConfig)
    telegram: TelegramConfig = field(default_factory=TelegramConfig)
    slack: SlackConfig = field(default_factory=SlackConfig)
    email: EmailConfig = field(default_factory=EmailConfig)
    apprise: AppriseConfig = field(default_factory=AppriseConfig)
    web: WebConfig = field(default_factory=WebConfig)

    def channel_sections(self) -> dict[str, ChannelConfig]:
        """Every channel's section by its name (the channel's name too)."""
        sections = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {k: v for k, v in sections.items() if isinstance(v, ChannelConfig)}

    def channel_section(self, channel: str) -> ChannelConfig | None:
        return self.channel_sections().get(channel)


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


def config_named_by(cli_path: str | None) -> str | None:
    """Who named the file, which must then exist ("--config", "$DAILY_PAPERS_CONFIG"), or None
    for the implicit ./config.toml, which may be absent."""
    if cli_path:
        return "--config"
    return "$DAILY_PAPERS_CONFIG" if os.environ.get("DAILY_PAPERS_CONFIG") else None


def load_config(path: Path, *, named_by: str | None = None) -> Config:
    """Read and validate the file; a missing file means all defaults, unless it was named."""
    raw: dict[str, typing.Any] = {}
    if named_by and not path.exists():
        raise ConfigError(f"{path}: no such config file (named by {named_by}); give the path of "
                          "an existing file, or create it (README.md lists every key)")
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
    cfg.written = frozenset(raw)
    arxiv_raw = raw.get("arxiv") if isinstance(raw.get("arxiv"), dict) else {}
    if cfg.arxiv.source == "harvest" and "max_keywords" not in arxiv_raw:
        cfg.arxiv.max_keywords = HARVEST_MAX_KEYWORDS  # harvest cost does not grow with them
    base = path.resolve().parent
    cfg.storage.path = _resolve(base, cfg.storage.path)
    cfg.digest.path = None if digest_off else _resolve(base, cfg.digest.path or Path("README.md"))
    cfg.digest.html_path = _optional_path(base, raw.get("digest"), "html_path")
    cfg.digest.feeds_dir = _optional_path(base, raw.get("digest"), "feeds_dir")
    if cfg.email.ca_file:
        cfg.email.ca_file = str(_resolve(base, Path(cfg.email.ca_file)))
    _check_values(cfg, path)
    return cfg


def _optional_path(base: Path, section: typing.Any, key: str) -> Path | None:
    """A path key whose "" (the default) turns its output off; else relative to config.toml."""
    value = section.get(key, "") if isinstance(section, dict) else ""
    return _resolve(base, Path(value)) if value else None


def _resolve(base: Path, p: Path) -> Path:
    p = p.expanduser()
    return p if p.is_absolute() else base / p


def _build(cls: type, raw: typing.Any, path: Path, prefix: str) -> typing.Any:
    where = prefix.rstrip(".") or "the top level"
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: [{where}] must be a table")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.metadata.get("key", True)}
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


_TELEGRAM_CHAT_ID = re.compile(r"^-?[0-9]{1,20}$")
_SLACK_CHANNEL_ID = re.compile(r"^[CGD][A-Z0-9]{6,}$")
_TARGET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SET_SPEC = re.compile(r"^[a-z][a-z-]*(:[a-z][a-z-]*(:[A-Za-z][A-Za-z-]*)?)?$")


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
    yield from _choice("arxiv.schedule", a.schedule, ("announcements", "interval"))
    yield from _choice("arxiv.source", a.source, ("search", "harvest"))
    yield from _range("arxiv.announce_delay", a.announce_delay, 0, 24 * 60)
    yield from _url("arxiv.oai_url", a.oai_url)
    for i, spec in enumerate(a.harvest_sets):
        if not _SET_SPEC.match(spec):
            yield (f"'arxiv.harvest_sets[{i}]' must be an OAI set spec like \"cs\", "
                   f"\"physics:hep-th\" or \"cs:cs:AI\", not {spec!r}")
    if a.contact and "@" not in a.contact:
        yield "'arxiv.contact' must be an email address (arXiv asks for one in the User-Agent)"
    yield from _range("digest.abstract_chars", cfg.digest.abstract_chars, 0, 100_000)
    yield from _range("digest.max_bytes", cfg.digest.max_bytes, 10_000, 100_000_000)
    yield from cfg.web.problems(cfg.email)
    for name, section in cfg.channel_sections().items():
        yield from section.problems(name)
    yield from _keyword_problems(cfg)


def _keyword_problems(cfg: Config) -> typing.Iterator[str]:
    """Every keyword config.toml names parses, so `status` reports what would stop `run`."""
    from bot.fetch.keywords import KeywordError, parse_keyword  # only when a file is loaded

    named = [(f"arxiv.keywords[{i}]", t) for i, t in enumerate(cfg.arxiv.keywords)]
    for name, section in cfg.channel_sections().items():
        named += [(f"{name}.{r.where}.keywords[{j}]", t)
                  for r in section.recipients() for j, t in enumerate(r.keywords)]
    for key, text in named:
        try:
            parse_keyword(text)
        except KeywordError as exc:
            yield f"{key}: keyword {text!r}: {exc.message}"


def _address(section: ChannelConfig, key: str, value: str) -> typing.Iterator[str]:
    try:
        section.address(value)
    except AddressError as exc:
        yield f"'{key}' {exc.message}"


def _choice(key: str, value: str, allowed: tuple[str, ...]) -> typing.Iterator[str]:
    if value not in allowed:
        names = " or ".join(f'"{a}"' for a in allowed)
        yield f"'{key}' must be {names}, not {value!r}"


def _cadence(key: str, value: str) -> typing.Iterator[str]:
    try:
        parse_cadence(value)
    except SettingError:
        yield (f"'{key}' must be \"\" or a time like \"08:00\", or one of {ACCEPTED}; "
               f"not '{shown(value)}'")


def _zone(key: str, value: str) -> typing.Iterator[str]:
    if not is_zone(value):
        yield f"'{key}' '{shown(value)}' is not a known time zone (e.g. \"Europe/Berlin\")"


def _range(key: str, value: float, low: float, high: float) -> typing.Iterator[str]:
    if not low <= value <= high:
        yield f"'{key}' must be between {low:g} and {high:g}, not {value:g}"


def _url(key: str, value: str) -> typing.Iterator[str]:
    parts = urlparse(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        yield f"'{key}' must be an http(s) URL, not {value!r}"
