"""The Atom feeds on the [web] server: /feeds/{slug}.atom per [arxiv] keyword, /feeds/all.atom,
and each reader's private /feeds/s/{token}.atom, rendered from the store on request.

Answers carry ETag and Last-Modified and say 304 to a conditional GET that has the feed
already. An unknown slug or a bad token is a bare 404: nothing says which keywords exist.
"""

from __future__ import annotations

import asyncio
from datetime import UTC

from aiohttp import web

from bot.app import App
from bot.faces.feed_tokens import FeedTokens, feed_tokens
from bot.faces.tokens import InvalidToken
from bot.render.feeds import (
    ALL,
    ALL_ENTRIES,
    CONTENT_TYPE,
    PRIVATE_ENTRIES,
    Rendered,
    all_feed,
    private_feed,
    public_feed,
    slug,
)
from bot.render.job import digest_sections, public_newest
from storage import papers as paper_repo
from storage import subscribers as sub_repo
from storage.records import Paper, Subscriber
from storage.store import Store

NOT_FOUND = "404: Not Found"
PUBLIC_CACHE = "public, max-age=300"
PRIVATE_CACHE = "private, max-age=300"


def not_found() -> web.Response:
    return web.Response(status=404, text=NOT_FOUND)


def not_modified(request: web.BaseRequest, feed: Rendered) -> bool:
    """If-None-Match decides when it is sent (RFC 9110 13.2.2); else If-Modified-Since."""
    tags = request.if_none_match
    if tags is not None:
        mine = feed.etag.strip('"')
        return any(tag.value in (mine, "*") for tag in tags)
    since = request.if_modified_since
    return since is not None and feed.updated.astimezone(UTC).replace(microsecond=0) <= since


def answer(request: web.BaseRequest, feed: Rendered, *, private: bool = False) -> web.Response:
    headers = {"ETag": feed.etag, "Last-Modified": feed.last_modified,
               "Cache-Control": PRIVATE_CACHE if private else PUBLIC_CACHE,
               "X-Content-Type-Options": "nosniff"}
    if private:  # the URL is the key: it must not leak through a referrer or a search engine
        headers |= {"Referrer-Policy": "no-referrer", "X-Robots-Tag": "noindex"}
    if not_modified(request, feed):
        return web.Response(status=304, headers=headers)
    return web.Response(body=feed.body, headers={**headers, "Content-Type": CONTENT_TYPE})


class FeedRoutes:
    """GET (and HEAD) of every feed; the store is read on its own thread."""

    def __init__(self, app: App) -> None:
        self.app = app
        self._slugs: dict[str, str] | None = None
        self._tokens: FeedTokens | None = None

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/feeds/{name}.atom", self.public),
                web.get("/feeds/s/{token}.atom", self.private)]

    def tokens(self) -> FeedTokens:
        """Made on first use: the key is known once the daemon has started."""
        if self._tokens is None:
            self._tokens = feed_tokens(self.app.unsubscribe_secret, self.app.cfg.web.public_url)
        return self._tokens

    def slugs(self) -> dict[str, str]:
        """Slug → [arxiv] keyword text (config.toml does not change while the daemon runs)."""
        if self._slugs is None:
            self._slugs = {}
            for text in self.app.cfg.arxiv.keywords:
                self._slugs.setdefault(slug(text), text)
        return self._slugs

    async def public(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        cfg = self.app.cfg
        if name != ALL and name not in self.slugs():
            return not_found()
        if name == ALL:
            rows = await self.app.store.run(lambda s: public_newest(s, cfg, ALL_ENTRIES))
            feed = await asyncio.to_thread(all_feed, rows, cfg.web.public_url)
            return answer(request, feed)
        texts = [self.slugs()[name]]
        sections = await self.app.store.run(lambda s: digest_sections(s, cfg, texts))
        if not sections:  # a keyword that has never been polled
            return not_found()
        feed = await asyncio.to_thread(public_feed, sections[0], cfg.web.public_url)
        return answer(request, feed)


    async def private(self, request: web.Request) -> web.Response:
        """A reader's own feed; 404 for a bad token, one revoked by unsubscribing from
        everything, or a reader no longer active."""
        try:
            number, epoch = self.tokens().open(request.match_info["token"])
        except InvalidToken:
            return not_found()
        found = await self.app.store.run(lambda s: reader(s, number, epoch))
        if found is None:
            return not_found()
        sub, keywords, rows = found
        url = self.tokens().url(sub)
        feed = await asyncio.to_thread(private_feed, url, self.app.cfg.web.public_url, keywords,
                                       rows)
        return answer(request, feed, private=True)


Reader = tuple[Subscriber, list[str], list[tuple[Paper, list[str]]]]


def reader(store: Store, number: int, epoch: int) -> Reader | None:
    """The subscriber a token names, its keywords and their newest papers; None when the token
    is revoked or the subscriber inactive."""
    sub = sub_repo.get(store.db, number)
    if sub is None or not sub.active or sub.feed_epoch != epoch:
        return None
    keywords = [kw.display for kw, _ in sub_repo.subscriptions(store.db, sub.id)]
    return sub, keywords, paper_repo.subscriber_window(store.db, sub.id, PRIVATE_ENTRIES)
