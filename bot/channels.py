"""The one list of channels (deliver stage's recipients): each channel's name, config section,
what turns it on, how the daemon builds it, its address rule and its CLI option.

The daemon, the CLI, config sync, status and metrics read this list; none of them names a
channel. Faces and notifiers are imported only when a channel is built, so `--help` and
`status` stay light.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bot.config import (
    AppriseConfig,
    ChannelConfig,
    Config,
    EmailConfig,
    Secrets,
    SlackConfig,
    TelegramConfig,
)
from bot.logs import redactor

if TYPE_CHECKING:
    from aiohttp import web

    from bot.app import App, Face
    from notifiers.base import Notifier


@dataclass(frozen=True)
class Channel:
    """One channel. It has a face (commands, routes, its own notifier) or only a notifier."""

    name: str  # subscribers.channel, the [section] of config.toml, the CLI's --NAME
    config: type[ChannelConfig]
    metavar: str  # what an address is called on the command line
    help: str
    switch: str  # what turns it on, for status
    on: Callable[[Config, Secrets], bool]
    face: Callable[[Config, Secrets], Face] | None = None
    notifier: Callable[[Config, Secrets], Notifier] | None = None
    warning: Callable[[Config], str | None] | None = None  # a setting that hurts readers
    loggers: tuple[str, ...] = ()  # its libraries' loggers: WARNING even with --verbose

    @property
    def option(self) -> str:
        return f"--{self.name}"

    def address(self, text: str) -> str:
        """The channel's one address rule; raises AddressError (bot.config)."""
        return self.config.address(text)

    def build(self, cfg: Config, secrets: Secrets) -> Face:
        if self.face is not None:
            return self.face(cfg, secrets)
        assert self.notifier is not None, f"channel {self.name} has neither face nor notifier"
        return NotifierOnly(self.name, self.notifier(cfg, secrets))


class NotifierOnly:
    """The daemon's face for a channel without one: it delivers, and takes no commands."""

    def __init__(self, name: str, notifier: Notifier) -> None:
        self.name = name
        self.notifier = notifier

    def routes(self) -> list[web.RouteDef]:
        return []

    async def start(self, app: App) -> None:
        """The notifier starts with the dispatcher's channels."""

    async def stop(self) -> None:
        """The daemon closes notifiers itself."""


def _telegram_face(cfg: Config, secrets: Secrets) -> Face:
    from bot.faces.telegram import TelegramFace

    return TelegramFace(cfg.telegram, secrets.telegram_bot_token)


def _slack_face(cfg: Config, secrets: Secrets) -> Face:
    from bot.faces.slack import SlackFace

    return SlackFace(cfg.slack, cfg.web, secrets.slack_bot_token, secrets.slack_signing_secret,
                     secrets.slack_app_token)


def _email_face(cfg: Config, secrets: Secrets) -> Face:
    from bot.faces.email import EmailFace

    return EmailFace(cfg.email, cfg.web, secrets.smtp_password)


def _email_warning(cfg: Config) -> str | None:
    from bot.faces.email import public_url_warning

    return public_url_warning(cfg.web)


def _apprise_notifier(cfg: Config, secrets: Secrets) -> Notifier:
    """Each URL (and the keys in it) goes to the log redactor before apprise reads it."""
    from notifiers.apprise import AppriseNotifier, url_secrets

    urls, unset = cfg.apprise.urls(os.environ)
    for url in urls.values():
        for secret in url_secrets(url):
            redactor().add(secret)
    return AppriseNotifier(urls, unset, max_in_flight=cfg.apprise.max_in_flight)


def _apprise_warning(cfg: Config) -> str | None:
    _, unset = cfg.apprise.urls(os.environ)
    skipped = [f"apprise target '{name}' is skipped, its papers wait: {why}"
               for name, why in unset.items()]
    return "; ".join(skipped) or None


CHANNELS: tuple[Channel, ...] = (
    Channel("telegram", TelegramConfig, "CHAT_ID", "A Telegram chat ID.",
            "TELEGRAM_BOT_TOKEN", lambda cfg, s: bool(s.telegram_bot_token),
            face=_telegram_face, loggers=("telegram", "apscheduler")),
    Channel("slack", SlackConfig, "CHANNEL_ID", "A Slack channel ID.",
            "SLACK_BOT_TOKEN", lambda cfg, s: bool(s.slack_bot_token), face=_slack_face,
            loggers=("slack_sdk", "slack_bolt")),
    Channel("email", EmailConfig, "ADDR", "An email address.",
            "[email] host", lambda cfg, s: bool(cfg.email.host), face=_email_face,
            warning=_email_warning),
    Channel("apprise", AppriseConfig, "NAME", "An apprise target, by its name in config.toml.",
            "[[apprise.targets]]", lambda cfg, s: bool(cfg.apprise.targets),
            notifier=_apprise_notifier, warning=_apprise_warning,
            loggers=("apprise", "requests", "urllib3")),
)


def registered() -> tuple[Channel, ...]:
    return CHANNELS


def names() -> list[str]:
    return [c.name for c in CHANNELS]


def named(name: str) -> Channel:
    return next(c for c in CHANNELS if c.name == name)


def loggers() -> list[str]:
    """Every channel's library loggers, for the log setup."""
    return [name for c in CHANNELS for name in c.loggers]


def switched_on(cfg: Config, secrets: Secrets) -> list[Channel]:
    return [c for c in CHANNELS if c.on(cfg, secrets)]


def states(cfg: Config, secrets: Secrets) -> list[str]:
    """Each channel on, or off with what would turn it on (for status)."""
    return [f"{c.name} on" if c.on(cfg, secrets) else f"{c.name} off (set {c.switch})"
            for c in CHANNELS]


def off_note(name: str, cfg: Config, secrets: Secrets) -> str | None:
    """For a channel that is off: that it is, and what turns it on; None when it is on."""
    channel = named(name)
    if channel.on(cfg, secrets):
        return None
    where = "config.toml" if channel.switch.startswith("[") else "the daemon's environment"
    return f"{name} is off: set {channel.switch} in {where} and restart the daemon"


def warnings(cfg: Config, secrets: Secrets) -> list[str]:
    """What the channels that are on say about settings that hurt their readers."""
    found = (c.warning(cfg) for c in switched_on(cfg, secrets) if c.warning is not None)
    return [w for w in found if w]
