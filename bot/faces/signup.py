"""Email self-service sign-up, where email readers enter the pipeline themselves ([web] signup):
GET /subscribe is a form; its POST mails a confirmation link and subscribes nothing (double
opt-in); the link (/subscribe/confirm?t=…, 48 hours) asks on GET and subscribes on POST.

Every valid POST gets the same page whether or not the address is known or over its limit, and
the mail goes from a background task, so neither the answer nor its timing tells anything.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from aiohttp import web

from bot.app import App
from bot.config import Config, WebConfig
from bot.deliver.cadence import SettingError, parse_cadence
from bot.faces import pages
from bot.faces.commands import CommandError, first_look, subscribe_address
from bot.faces.settings import change_settings
from bot.faces.signup_form import (
    HONEYPOT,
    FormProblems,
    cadence_fields,
    field,
    filled_honeypot,
    read_signup,
)
from bot.faces.signup_tokens import LINK_LIFETIME, SignupTokens
from bot.faces.tokens import InvalidToken
from bot.poll.keyword import needs_baseline
from notifiers.base import Outcome
from notifiers.email import EmailNotifier
from storage import signups
from storage.database import write
from storage.records import Keyword
from storage.signups import Signup, SignupRequest, Verdict
from storage.store import Store

log = logging.getLogger(__name__)

CHANNEL = "email"
SUBJECT = "Daily Papers: confirm your subscription"
RETRY_DELAYS = (10.0, 60.0)  # a confirmation mail the SMTP server deferred is tried again
STARTING = "starting up, try again in a moment"


@dataclass(frozen=True)
class Ready:
    """What the pages need once the daemon runs."""

    app: App
    tokens: SignupTokens


T = TypeVar("T")


def checked(open_token: Callable[[str], T], token: str, what: str) -> T | None:
    """What an authentic token names, or None (logged without the token: 400 for the caller)."""
    try:
        return open_token(token)
    except InvalidToken as exc:
        log.info("%s refused: %s", what, exc)
        return None


def delivery_of(cfg: Config, digest: str | None, zone: str | None) -> str:
    """"as one digest a day at 08:00 (Europe/Berlin time)", for the mail and the pages."""
    cadence = parse_cadence(digest or cfg.email.digest_time)
    return cadence.describe(zone or cfg.email.timezone)


def client_address(request: web.BaseRequest) -> str:
    """Who is asking, for the per-client limit: a reverse proxy on this host names the client
    in X-Forwarded-For (its last entry is the one it added); anyone else is taken as is."""
    remote = request.remote or ""
    forwarded = request.headers.get("X-Forwarded-For", "")
    try:
        local = ipaddress.ip_address(remote).is_loopback
    except ValueError:
        local = False
    last = forwarded.rsplit(",", 1)[-1].strip()
    return last if local and last else remote


def confirm_signup(store: Store, cfg: Config, signup_id: int, address: str,
                   now: datetime) -> list[Keyword] | None:
    """Subscribe what the sign-up asked for, in one transaction (a refusal changes nothing).
    None: expired or unknown; else the keywords that want a first look now."""
    db = store.db
    with write(db):
        signup = signups.get(db, signup_id)
        if signup is None or signup.address != address or now - signup.created_at > LINK_LIFETIME:
            return None
        if signup.confirmed_at is not None:
            return []  # a second click: already done
        fresh = [kw for kw in (subscribe_reader(store, cfg, address, text, now)
                               for text in signup.keywords) if kw is not None]
        change_settings(store, cfg, CHANNEL, address, now, digest=signup.digest,
                        timezone=signup.timezone)
        signups.confirmed(db, signup_id, now)
        return fresh


def subscribe_reader(store: Store, cfg: Config, address: str, text: str,
                     now: datetime) -> Keyword | None:
    """One keyword by chat's rules (keyword and instance limits); the keyword when it wants a
    first look now, as a chat's new subscription gets."""
    result = subscribe_address(store, cfg, CHANNEL, address, text, now,
                               max_subscriptions=cfg.web.signup_max_keywords)
    kw = result.keyword
    fresh = result.created_keyword or needs_baseline(kw, cfg.arxiv.max_papers, now)
    return kw if result.new_subscription and fresh and not kw.rejected else None


def blank(cfg: Config) -> dict[str, str]:
    """The sign-up form's first values: the email channel's default cadence."""
    fields = cadence_fields(parse_cadence(cfg.email.digest_time))
    return {"address": "", "keywords": "", **fields, "timezone": ""}


class SignupPages:
    """GET/POST /subscribe and GET/POST /subscribe/confirm."""

    def __init__(self, web_cfg: WebConfig, notifier: EmailNotifier) -> None:
        self.cfg = web_cfg
        self.notifier = notifier
        self.retry_delays = RETRY_DELAYS
        self._ready: Ready | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self, app: App, tokens: SignupTokens) -> None:
        self._ready = Ready(app, tokens)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await self.idle()

    async def idle(self) -> None:
        """Until the mails and first looks under way are done (or cancelled)."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/subscribe", self.form, allow_head=False),
                web.post("/subscribe", self.submit),
                web.get("/subscribe/confirm", self.ask, allow_head=False),
                web.post("/subscribe/confirm", self.confirm)]

    def ready_now(self) -> Ready:
        """The daemon's context; before the face started, 503."""
        if self._ready is None:
            raise web.HTTPServiceUnavailable(text=STARTING)
        return self._ready

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- the form ------------------------------------------------------------------------------

    async def form(self, request: web.Request) -> web.Response:
        ready = self.ready_now()
        return self._form_page(blank(ready.app.cfg))

    def _form_page(self, values: dict[str, str], problems: list[str] | None = None,
                   status: int = 200) -> web.Response:
        return pages.page("subscribe.html.j2", status, title="Sign up", state="form",
                          v=values, problems=problems or [], notice="", honeypot=HONEYPOT)

    async def submit(self, request: web.Request) -> web.Response:
        ready = self.ready_now()
        form = await request.post()
        sent = pages.page("subscribe.html.j2", title="Check your inbox", state="sent",
                          address=field(form, "address").strip()[:254], problems=[], notice="")
        if filled_honeypot(form):
            log.info("sign-up ignored: the hidden field was filled (a bot)")
            return sent
        try:
            choices = read_signup(form, self.cfg.signup_max_keywords)
        except FormProblems as exc:
            values = {k: field(form, k) for k in blank(ready.app.cfg)}
            return self._form_page(values, exc.problems, status=400)
        req = SignupRequest(choices.address, choices.keywords, choices.digest, choices.timezone,
                            ready.tokens.client(client_address(request)))
        limits = signups.Limits(self.cfg.signup_mails_per_address, self.cfg.signup_per_client)
        now = ready.app.now()
        verdict, signup = await ready.app.store.call(signups.admit, req, limits, now)
        if verdict is Verdict.CLIENT_LIMIT:
            log.warning("sign-up refused: %d sign-ups from one client this hour",
                        self.cfg.signup_per_client)
            return pages.page("subscribe.html.j2", 429, title="Try again later", state="busy",
                              problems=[], notice="")
        if signup is None:
            log.info("sign-up for %s: no mail sent, it had its %d for today", choices.address,
                     self.cfg.signup_mails_per_address)
        else:
            self._spawn(self._mail_link(ready, signup))
        return sent

    async def _mail_link(self, ready: Ready, signup: Signup) -> None:
        text = pages.text("link-mail.txt.j2", signup=signup,
                          url=ready.tokens.confirm_url(signup.address, signup.id),
                          delivery=delivery_of(ready.app.cfg, signup.digest, signup.timezone))
        for wait in (*self.retry_delays, None):
            delivery = await self.notifier.mail(signup.address, SUBJECT, text)
            if delivery.outcome is Outcome.SENT:
                log.info("sign-up: confirmation link mailed to %s", signup.address)
                return
            if delivery.outcome is not Outcome.RETRY or wait is None:
                break
            await asyncio.sleep(wait)
        log.warning("sign-up: confirmation link to %s not sent: %s", signup.address,
                    delivery.reason)

    # -- the mailed link -------------------------------------------------------------------------

    async def ask(self, request: web.Request) -> web.Response:
        ready = self.ready_now()
        token = request.query.get("t", "")
        opened = checked(ready.tokens.open_confirm, token, "sign-up confirmation")
        if opened is None:
            return self._confirm_page("invalid", 400)
        address, signup_id = opened
        signup = await ready.app.store.call(signups.get, signup_id)
        now = ready.app.now()
        if signup is None or signup.address != address or \
                now - signup.created_at > LINK_LIFETIME:
            return self._confirm_page("expired", 410)
        if signup.confirmed_at is not None:
            raise self._to_preferences(ready, address)
        delivery = delivery_of(ready.app.cfg, signup.digest, signup.timezone)
        return self._confirm_page("ask", signup=signup, token=token, delivery=delivery)

    def _confirm_page(self, state: str, status: int = 200, problems: list[str] | None = None,
                      **values: Any) -> web.Response:
        titles = {"ask": "Confirm your subscription", "expired": "Link expired",
                  "invalid": "Invalid link", "refused": "Not subscribed"}
        return pages.page("confirm.html.j2", status, title=titles[state], state=state,
                          problems=problems or [], notice="", **values)

    def _to_preferences(self, ready: Ready, address: str) -> web.HTTPSeeOther:
        token = ready.tokens.preferences_token(address)
        return pages.see_other(f"../preferences?t={token}&done=welcome")

    async def confirm(self, request: web.Request) -> web.Response:
        ready = self.ready_now()
        token = request.query.get("t", "") or field(await request.post(), "t")
        opened = checked(ready.tokens.open_confirm, token, "sign-up confirmation")
        if opened is None:
            return self._confirm_page("invalid", 400)
        address, signup_id = opened
        app, now = ready.app, ready.app.now()
        try:
            fresh = await app.store.run(
                lambda s: confirm_signup(s, app.cfg, signup_id, address, now))
        except (CommandError, SettingError) as exc:
            return self._confirm_page("refused", 409, problems=[exc.message])
        if fresh is None:
            return self._confirm_page("expired", 410)
        log.info("sign-up confirmed by %s", address)
        app.wake_dispatcher()
        for kw in fresh:
            self.look_soon(app, kw)
        raise self._to_preferences(ready, address)

    def look_soon(self, app: App, kw: Keyword) -> None:
        """The new keyword's baseline now, so the reader's first digest need not wait a cycle."""
        async def look() -> None:
            reply = await first_look(app, kw)
            log.debug("email reader's first look: %s", reply.text)

        self._spawn(look())
