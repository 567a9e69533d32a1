"""The email reader's preferences page, /preferences?t=… ([web] signup): keywords (remove, add),
cadence and zone, and unsubscribe from everything. Every change is a POST carrying the CSRF
token of the page it came from; after it the page is fetched again (303)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aiohttp import web

from bot.config import Config
from bot.deliver.cadence import SettingError
from bot.faces import pages
from bot.faces.commands import CommandError, unsubscribe_address
from bot.faces.settings import change_settings, settings_of
from bot.faces.signup import (
    CHANNEL,
    Ready,
    SignupPages,
    checked,
    subscribe_reader,
)
from bot.faces.signup_form import FormProblems, cadence_fields, field, read_cadence, read_zone
from storage import subscribers as sub_repo
from storage.database import write
from storage.records import Keyword, Subscriber
from storage.store import Store

log = logging.getLogger(__name__)

REASON = "preferences page"
STOPPED = ("This address is unsubscribed from everything. To come back, sign up again on the "
           "sign-up page: a confirmation link is mailed first.")
NOTICES = {
    "welcome": "Confirmed: you are subscribed. Every mail links back to this page.",
    "add": "Keyword added.",
    "remove": "Keyword removed: it is no longer sent to you.",
    "settings": "Delivery saved.",
    "leave": "Unsubscribed from everything: no more mail is sent to this address.",
}


@dataclass
class View:
    """The page's facts; `values` preset the forms."""

    address: str
    keywords: list[str]
    delivery: str
    values: dict[str, str]
    stopped: bool


def stopped(store: Store, address: str) -> bool:
    """Unsubscribed from everything, or deactivated (bounces): only a confirmed sign-up brings
    the address back."""
    sub = sub_repo.find(store.db, CHANNEL, address)
    return (sub_repo.is_suppressed(store.db, CHANNEL, address, sub_repo.ALL) is not None
            or (sub is not None and not sub.active))


def describe(store: Store, cfg: Config, address: str, now: datetime) -> View:
    """For GET: nothing changes."""
    sub = sub_repo.find(store.db, CHANNEL, address)
    shown = settings_of(cfg, sub or Subscriber(0, CHANNEL, address), now)
    keywords = [k.display for k, _ in sub_repo.subscriptions(store.db, sub.id)] if sub else []
    values = {**cadence_fields(shown.setting.cadence), "timezone": shown.setting.zone,
              "keyword": ""}
    return View(address, keywords, shown.describe(), values, stopped(store, address))


def add(store: Store, cfg: Config, address: str, text: str, now: datetime) -> Keyword | None:
    with write(store.db):
        if stopped(store, address):
            raise CommandError(STOPPED)
        return subscribe_reader(store, cfg, address, text, now)


def leave(store: Store, address: str, now: datetime) -> None:
    sub = sub_repo.ensure(store.db, CHANNEL, address, now)
    sub_repo.unsubscribe_all(store.db, sub, now, reason=REASON)


Change = Callable[[Ready, str, Mapping[str, Any]], Awaitable[None]]


class PreferencesPage:
    """GET and POST /preferences?t=…; first looks go through the sign-up pages' tasks."""

    def __init__(self, signup: SignupPages) -> None:
        self.signup = signup
        self._changes: dict[str, Change] = {"add": self._add, "remove": self._remove,
                                            "settings": self._settings, "leave": self._leave}

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/preferences", self.get, allow_head=False),
                web.post("/preferences", self.post)]

    async def get(self, request: web.Request) -> web.Response:
        ready = self.signup.ready_now()
        token = request.query.get("t", "")
        address = checked(ready.tokens.open_preferences, token, "preferences")
        if address is None:
            return self._page("invalid", status=400)
        notice = NOTICES.get(request.query.get("done", ""), "")
        return await self._show(ready, address, token, notice=notice)

    async def _show(self, ready: Ready, address: str, token: str, *, notice: str = "",
                    problems: list[str] | None = None, typed: str = "",
                    status: int = 200) -> web.Response:
        app, now = ready.app, ready.app.now()
        view = await app.store.run(lambda s: describe(s, app.cfg, address, now))
        view.values["keyword"] = typed
        return self._page("stopped" if view.stopped else "show", status, view=view,
                          v=view.values, token=token, notice=notice, problems=problems or [],
                          csrf=ready.tokens.form_token(address, now))

    def _page(self, state: str, status: int = 200, **values: Any) -> web.Response:
        titles = {"invalid": "Invalid link", "stale": "Nothing changed",
                  "stopped": "Unsubscribed", "show": "Your subscription"}
        values.setdefault("problems", [])
        values.setdefault("notice", "")
        return pages.page("preferences.html.j2", status, title=titles[state], state=state,
                          **values)

    async def post(self, request: web.Request) -> web.Response:
        ready = self.signup.ready_now()
        form = await request.post()
        token = request.query.get("t", "") or field(form, "t")
        address = checked(ready.tokens.open_preferences, token, "preferences")
        if address is None:
            return self._page("invalid", status=400)
        if not ready.tokens.form_ok(address, field(form, "csrf"), ready.app.now()):
            log.info("preferences change refused: the form's token is stale or missing")
            return self._page("stale", status=403, token=token)
        action = field(form, "action")
        change = self._changes.get(action)
        if change is None:
            return await self._show(ready, address, token, problems=["Unknown change."],
                                    status=400)
        try:
            await change(ready, address, form)
        except (CommandError, SettingError) as exc:
            problems = [exc.message]
        except FormProblems as exc:
            problems = exc.problems
        else:
            ready.app.wake_dispatcher()  # rows may be due sooner (or later) than they were
            log.info("email %s changed its preferences: %s", address, action)
            raise pages.see_other(f"preferences?t={token}&done={action}")
        return await self._show(ready, address, token, problems=problems, status=400,
                                typed=field(form, "keyword") if action == "add" else "")

    async def _add(self, ready: Ready, address: str, form: Mapping[str, Any]) -> None:
        app, now = ready.app, ready.app.now()
        text = field(form, "keyword")
        if not text.strip():
            raise FormProblems(["Which keyword? For example: video anomaly detection."])
        fresh = await app.store.run(lambda s: add(s, app.cfg, address, text, now))
        if fresh is not None:
            self.signup.look_soon(app, fresh)

    async def _remove(self, ready: Ready, address: str, form: Mapping[str, Any]) -> None:
        now, text = ready.app.now(), field(form, "keyword")
        await ready.app.store.run(lambda s: unsubscribe_address(s, CHANNEL, address, text, now))

    async def _settings(self, ready: Ready, address: str, form: Mapping[str, Any]) -> None:
        app, now = ready.app, ready.app.now()
        digest, zone = read_cadence(form), read_zone(form) or "default"
        await app.store.run(lambda s: change_settings(s, app.cfg, CHANNEL, address, now,
                                                      digest=digest, timezone=zone,
                                                      create=False))

    async def _leave(self, ready: Ready, address: str, form: Mapping[str, Any]) -> None:
        now = ready.app.now()
        await ready.app.store.run(lambda s: leave(s, address, now))
