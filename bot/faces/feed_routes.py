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
from bot.render.feeds import ALL, CONTENT_TYPE, Rendered, all_feed, public_feed, slug
from bot.render.job import digest_sections

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

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/feeds/{name}.atom", self.public)]

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
        texts = None if name == ALL else [self.slugs()[name]]
        sections = await self.app.store.run(lambda s: digest_sections(s, cfg, texts))
        if name == ALL:
            feed = await asyncio.to_thread(all_feed, sections, cfg.web.public_url)
        elif sections:
            feed = await asyncio.to_thread(public_feed, sections[0], cfg.web.public_url)
        else:  # a keyword that has never been polled
            return not_found()
        return answer(request, feed)

