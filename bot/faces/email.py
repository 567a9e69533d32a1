"""The email face: the SMTP notifier (deliver stage) and its pages on the web server (unsubscribe;
with [web] signup the sign-up and preferences pages)."""

from __future__ import annotations

import logging
import ssl
from datetime import datetime
from urllib.parse import urlparse

from aiohttp import web

from bot.app import App
from bot.config import ConfigError, EmailConfig, WebConfig
from bot.faces.feed_tokens import feed_tokens
from bot.faces.preferences import PreferencesPage
from bot.faces.signup import SignupPages
from bot.faces.signup_tokens import SignupTokens
from bot.faces.tokens import Signer, unsubscribe_url
from bot.faces.unsubscribe import UnsubscribePage
from notifiers.base import Outcome
from notifiers.email import EmailNotifier, SmtpSettings
from storage.records import Subscriber
from storage.store import AsyncStore

log = logging.getLogger(__name__)

_LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", "0.0.0.0", "[::1]"}


def public_url_warning(web_cfg: WebConfig) -> str | None:
    """Unsubscribe links must reach this server from the recipient's mail provider."""
    parts = urlparse(web_cfg.public_url)
    host = (parts.hostname or "").lower()
    if host in _LOCAL_HOSTS or host.endswith(".localhost"):
        return (f"web.public_url {web_cfg.public_url!r} names this machine: unsubscribe links in "
                "emails will not work for recipients; set it to the public https address")
    if parts.scheme != "https":
        return (f"web.public_url {web_cfg.public_url!r} is not https: mail providers offer "
                "one-click unsubscribe only for https links")
    return None


def _sender(cfg: EmailConfig) -> str:
    """load_config has checked it; a face built from a hand-made config checks again."""
    if problem := cfg.sender_problem():
        raise ConfigError(problem)
    return cfg.from_address()


class EmailFace:
    """Email in the daemon: on when [email] host is set."""

    name = "email"

    def __init__(self, cfg: EmailConfig, web: WebConfig, password: str, *,
                 tls_context: ssl.SSLContext | None = None) -> None:
        self.cfg = cfg
        self.web = web
        settings = SmtpSettings(
            host=cfg.host, port=cfg.port, security=cfg.security, username=cfg.username,
            password=password, sender=_sender(cfg), return_path=cfg.return_path,
            max_per_minute=cfg.max_per_minute, max_bounces=cfg.max_bounces,
            max_in_flight=cfg.max_in_flight, ca_file=cfg.ca_file)
        self.notifier = EmailNotifier(settings, tls_context=tls_context)
        self._app: App | None = None
        self._signer: Signer | None = None
        self._page = UnsubscribePage(self._store, lambda: self._signer, self._now)
        self.signup = SignupPages(web, self.notifier) if web.signup else None
        self.preferences = PreferencesPage(self.signup) if self.signup else None

    def _store(self) -> AsyncStore | None:
        return self._app.store if self._app else None

    def _now(self) -> datetime:
        return self.notifier.now()  # the app's clock once started

    def link(self, address: str, keyword: str | None = None) -> str:
        """The unsubscribe URL for everything (None) or one keyword's display text."""
        assert self._signer is not None, "EmailFace.start sets the unsubscribe key"
        token = (self._signer.token(address) if keyword is None
                 else self._signer.keyword_token(address, keyword))
        return unsubscribe_url(self.web.public_url, token)

    def routes(self) -> list[web.RouteDef]:
        if self.signup is None or self.preferences is None:
            return self._page.routes()
        return [*self._page.routes(), *self.signup.routes(), *self.preferences.routes()]

    async def start(self, app: App) -> None:
        self._app = app
        self._signer = Signer(app.unsubscribe_secret)
        self.notifier.links = self.link
        self.notifier.feed = feed_tokens(app.unsubscribe_secret, self.web.public_url).url
        self.notifier.now = app.now
        if self.signup is not None:
            tokens = SignupTokens(self._signer, self.web.public_url)
            self.signup.start(app, tokens)
            self.notifier.manage = tokens.preferences_url

    async def stop(self) -> None:
        if self.signup is not None:
            await self.signup.stop()
        await self.notifier.close()

    async def tell(self, sub: Subscriber, text: str) -> None:
        """A one-off note to one address; failures are logged, never raised."""
        delivery = await self.notifier.tell(sub, "Daily Papers: a note about your subscription",
                                            text)
        if delivery.outcome is not Outcome.SENT:
            log.warning("email note to %s not sent: %s", sub.address, delivery.reason)
