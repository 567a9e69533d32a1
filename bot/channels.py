"""The one list of channels (deliver stage's recipients): each channel's name, config section,
what turns it on, how the daemon builds it, its address rule and its CLI option.

The daemon, the CLI, config sync, status and metrics read this list; none of them names a
channel. Faces and notifiers are imported only when a channel is built, so `--help` and
`status` stay light.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bot.config import ChannelConfig, Config, EmailConfig, Secrets, SlackConfig, TelegramConfig

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


CHANNELS: tuple[Channel, ...] = (
    Channel("telegram", TelegramConfig, "CHAT_ID", "A Telegram chat ID.",
            "TELEGRAM_BOT_TOKEN", lambda cfg, s: bool(s.telegram_bot_token),
            face=_telegram_face),
    Channel("slack", SlackConfig, "CHANNEL_ID", "A Slack channel ID.",
            "SLACK_BOT_TOKEN", lambda cfg, s: bool(s.slack_bot_token), face=_slack_face),
    Channel("email", EmailConfig, "ADDR", "An email address.",
            "[email] host", lambda cfg, s: bool(cfg.email.host), face=_email_face,
            warning=_email_warning),
)


def registered() -> tuple[Channel, ...]:
    return CHANNELS


def names() -> list[str]:
    return [c.name for c in CHANNELS]


def named(name: str) -> Channel:
    return next(c for c in CHANNELS if c.name == name)


def switched_on(cfg: Config, secrets: Secrets) -> list[Channel]:
    return [c for c in CHANNELS if c.on(cfg, secrets)]


def states(cfg: Config, secrets: Secrets) -> list[str]:
    """Each channel on, or off with what would turn it on (for status)."""
    return [f"{c.name} on" if c.on(cfg, secrets) else f"{c.name} off (set {c.switch})"
            for c in CHANNELS]


def warnings(cfg: Config, secrets: Secrets) -> list[str]:
    """What the channels that are on say about settings that hurt their readers."""
    found = (c.warning(cfg) for c in switched_on(cfg, secrets) if c.warning is not None)
    return [w for w in found if w]
