"""Email unsubscribe, the deliver stage's way back: the page behind the signed links
(bot/faces/tokens.py). GET only shows, POST stops.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import jinja2
from aiohttp import web

from bot.faces.tokens import Claim, InvalidToken, Signer
from storage import keywords as kw_repo
from storage import subscribers as sub_repo
from storage.database import write
from storage.store import AsyncStore, Store

log = logging.getLogger(__name__)

CHANNEL = "email"
REASON = "unsubscribe link"


# --- what the page shows and what the POST does (run on the store's thread) -----------------


@dataclass
class View:
    """The page's facts: who, which keywords (display texts), and whether anything is left."""

    address: str
    everything: bool
    keywords: list[str] = field(default_factory=list)
    done: bool = False


def describe(store: Store, claim: Claim) -> View:
    """For GET: nothing changes."""
    sub = sub_repo.find(store.db, CHANNEL, claim.address)
    current = [kw for kw, _ in sub_repo.subscriptions(store.db, sub.id)] if sub else []
    if claim.keyword is None:
        return View(claim.address, True, [kw.display for kw in current])
    kw = kw_repo.by_canonical(store.db, claim.keyword)
    return View(claim.address, False, [kw.display if kw else claim.keyword])


def apply(store: Store, claim: Claim, now: datetime) -> View:
    """For POST: stop and record the suppression (so config.toml cannot bring it back)."""
    db = store.db
    if claim.keyword is None:
        view = describe(store, claim)
        sub = sub_repo.ensure(db, CHANNEL, claim.address, now)
        sub_repo.unsubscribe_all(db, sub, now, reason=REASON)
        view.done = True
        return view
    kw = kw_repo.by_canonical(db, claim.keyword)
    view = View(claim.address, False, [kw.display if kw else claim.keyword], done=True)
    sub = sub_repo.ensure(db, CHANNEL, claim.address, now)
    if kw is not None:
        sub_repo.unsubscribe(db, sub, kw, now, reason=REASON)
    else:  # the keyword was pruned since the mail: the stop must still hold if it comes back
        with write(db):
            sub_repo.suppress(db, sub, claim.keyword, REASON, now)
    return view


# --- HTTP ------------------------------------------------------------------------------------

_PAGE = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined).from_string(
    """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>{{ title }} · Daily Papers</title>
<style>
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;max-width:36em;
margin:3em auto;padding:0 1em;color:#1a1a1a;line-height:1.5}
h1{font-size:1.4em}button{font-size:1em;padding:.6em 1.2em;border:0;border-radius:4px;
background:#b31b1b;color:#fff;cursor:pointer}.muted{color:#555;font-size:.9em}
</style></head><body>
<h1 id="title">{{ title }}</h1>
{% if state == "invalid" %}
<p id="message">This unsubscribe link is not valid. It may have been cut short or changed;
open the link from the newest email again, or ask the person who runs this service.</p>
{% elif state == "confirm" %}
<p id="message">Stop sending <strong id="address">{{ view.address }}</strong>
{% if view.everything %}every Daily Papers email{% if view.keywords %} (keywords:
{% for k in view.keywords %}<span class="keyword">{{ k }}</span>{% if not loop.last %},
{% endif %}{% endfor %}){% endif %}?{% else %}new papers about
<span class="keyword">{{ view.keywords[0] }}</span>?{% endif %}</p>
<form method="post" action="unsubscribe?t={{ token }}">
<input type="hidden" name="t" value="{{ token }}">
<button type="submit" id="confirm">Unsubscribe</button>
</form>
<p class="muted">Nothing changes until you press the button.</p>
{% else %}
<p id="message"><strong id="address">{{ view.address }}</strong> is unsubscribed
{% if view.everything %}from every Daily Papers email{% else %}from
<span class="keyword">{{ view.keywords[0] }}</span>{% endif %}.
No more papers {% if view.everything %}will be sent{% else %}about it will be sent{% endif %}
to this address.</p>
<p class="muted">Changed your mind? Ask the person who runs this service to subscribe you
again.</p>
{% endif %}
</body></html>
""")

_TITLES = {"invalid": "Invalid link", "confirm": "Unsubscribe", "done": "Unsubscribed"}


def render_page(state: str, view: View | None = None, token: str = "") -> str:
    return _PAGE.render(title=_TITLES[state], state=state, view=view, token=token)


def _html(text: str, status: int = 200) -> web.Response:
    # no-store: a result page must not be replayed from a cache; the token stays out of referers
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8",
                        headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"})


class UnsubscribePage:
    """GET /unsubscribe?t=… shows a confirm button; POST (button or RFC 8058 one-click) stops."""

    def __init__(self, store: Callable[[], AsyncStore | None], signer: Callable[[], Signer | None],
                 now: Callable[[], datetime]) -> None:
        self._store = store
        self._signer = signer
        self._now = now

    def _claim(self, token: str) -> Claim | None:
        signer = self._signer()
        if signer is None:
            raise web.HTTPServiceUnavailable(text="starting up, try again in a moment")
        try:
            return signer.verify(token)
        except InvalidToken as exc:
            log.info("unsubscribe refused: %s", exc)
            return None

    def _ready_store(self) -> AsyncStore:
        store = self._store()
        if store is None:
            raise web.HTTPServiceUnavailable(text="starting up, try again in a moment")
        return store

    async def get(self, request: web.Request) -> web.Response:
        token = request.query.get("t", "")
        claim = self._claim(token)
        if claim is None:
            return _html(render_page("invalid"), status=400)
        view = await self._ready_store().run(lambda s: describe(s, claim))
        return _html(render_page("confirm", view, token))

    async def post(self, request: web.Request) -> web.Response:
        token = request.query.get("t", "")
        if not token:
            form = await request.post()
            value = form.get("t", "")
            token = value if isinstance(value, str) else ""
        claim = self._claim(token)
        if claim is None:
            return _html(render_page("invalid"), status=400)
        now = self._now()
        view = await self._ready_store().run(lambda s: apply(s, claim, now))
        log.info("email %s unsubscribed from %s by link", claim.address,
                 "everything" if view.everything else repr(view.keywords[0]))
        return _html(render_page("done", view))

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/unsubscribe", self.get, allow_head=False),
                web.post("/unsubscribe", self.post)]
