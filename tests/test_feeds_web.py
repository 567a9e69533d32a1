"""The Atom feeds as the [web] server serves them, asked over real HTTP (httpx against aiohttp
on 127.0.0.1): public feeds by slug, all.atom, conditional GETs, and nothing of private
keywords."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import feedparser
import httpx
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from bot.app import App
from bot.config import Config, Secrets
from bot.faces.feed_routes import FeedRoutes
from bot.faces.feed_tokens import feed_tokens
from bot.faces.tokens import Signer
from bot.fetch.arxiv import ArxivClient
from bot.logs import redactor
from bot.render.feeds import public_feeds, slug
from bot.render.job import digest_sections
from storage import polls
from storage import subscribers as sub_repo
from storage.records import Keyword, Paper, Subscriber
from storage.store import AsyncStore
from tests.conftest import Clock, KeywordFactory, PaperFactory, SubscriberFactory

PUBLIC = "https://papers.example.org"
CURATED = ["Graph Neural Networks", 'ti:"scene graph" AND cat:cs.CV']
PRIVATE = "secret project words"


@pytest.fixture
def cfg(tmp_path: Path) -> Config:
    cfg = Config()
    cfg.arxiv.keywords = list(CURATED)
    cfg.storage.path = tmp_path / "papers.db"
    cfg.digest.path = None
    cfg.web.public_url = PUBLIC
    return cfg


@pytest.fixture
async def app(cfg: Config, clock: Clock) -> AsyncIterator[App]:
    store = await AsyncStore(cfg.storage.path).open()
    client = ArxivClient("http://127.0.0.1:9/unused", request_interval=0.0)
    try:
        yield App(cfg, Secrets(), store, client, now=clock.now, unsubscribe_secret="feed-key")
    finally:
        await client.aclose()
        await store.close()


@pytest.fixture
async def base(app: App) -> AsyncIterator[str]:
    server_app = web.Application()
    server_app.add_routes(FeedRoutes(app).routes())
    async with TestServer(server_app, host="127.0.0.1", port=0) as server:
        yield str(server.make_url("")).rstrip("/")


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30) as client:
        yield client


async def fill(app: App, kw: Keyword, papers: list[Paper], clock: Clock) -> None:
    await app.store.call(polls.commit_poll, kw, papers, baseline=True, now=clock.now(),
                         max_papers=100, notify_floor=clock.now() - timedelta(days=14),
                         total_results=len(papers))


@pytest.fixture
async def stored(app: App, clock: Clock, add_keyword: KeywordFactory,
                 paper: PaperFactory) -> dict[str, list[Paper]]:
    """Two curated keywords and a private one (someone subscribed to it), with papers."""
    made = {}
    for i, text in enumerate([*CURATED, PRIVATE]):
        kw = await add_keyword(text, in_config=text in CURATED)
        papers = [paper(days=d + i, about=text.replace('"', "")) for d in (1, 2, 3)]
        await fill(app, kw, papers, clock)
        made[text] = papers
    return made


@pytest.fixture
def store(app: App) -> AsyncStore:  # the factories of conftest write to the app's store
    return app.store


async def test_a_keyword_feed_is_served_as_atom_with_validators(
        base: str, http: httpx.AsyncClient, stored: dict[str, list[Paper]]) -> None:
    r = await http.get(f"{base}/feeds/graph-neural-networks.atom")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/atom+xml; charset=utf-8"
    assert r.headers["etag"].startswith('"') and r.headers["last-modified"].endswith(" GMT")
    parsed = feedparser.parse(r.content)
    assert not parsed.bozo
    assert parsed.feed.id == f"{PUBLIC}/feeds/graph-neural-networks.atom"
    want = sorted(stored[CURATED[0]], key=lambda p: p.published, reverse=True)
    assert [e.id for e in parsed.entries] == [p.abs_url for p in want]

    syntax = await http.get(f"{base}/feeds/{slug(CURATED[1])}.atom")
    assert syntax.status_code == 200 and len(feedparser.parse(syntax.content).entries) == 3
    head = await http.head(f"{base}/feeds/graph-neural-networks.atom")
    assert head.status_code == 200 and head.headers["etag"] == r.headers["etag"]


async def test_conditional_gets_answer_304_until_the_feed_changes(
        app: App, base: str, http: httpx.AsyncClient, stored: dict[str, list[Paper]],
        clock: Clock, add_keyword: KeywordFactory, paper: PaperFactory) -> None:
    url = f"{base}/feeds/graph-neural-networks.atom"
    first = await http.get(url)
    etag, modified = first.headers["etag"], first.headers["last-modified"]
    again = await http.get(url, headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    assert again.headers["etag"] == etag
    assert (await http.get(url, headers={"If-Modified-Since": modified})).status_code == 304
    assert (await http.get(url, headers={"If-None-Match": f'"other", {etag}'})).status_code == 304
    # If-None-Match decides when both are sent: another ETag means the reader's copy is stale
    stale = await http.get(url, headers={"If-None-Match": '"other"', "If-Modified-Since": modified})
    assert stale.status_code == 200
    older = "Mon, 01 Jan 2001 00:00:00 GMT"
    assert (await http.get(url, headers={"If-Modified-Since": older})).status_code == 200

    kw = await add_keyword(CURATED[0], in_config=True)
    clock.advance(timedelta(hours=1))
    await fill(app, kw, [paper(days=0, about="graph neural networks")], clock)
    changed = await http.get(url, headers={"If-None-Match": etag, "If-Modified-Since": modified})
    assert changed.status_code == 200 and changed.headers["etag"] != etag
    assert len(feedparser.parse(changed.content).entries) == 4


async def test_all_feed_has_every_curated_keyword_and_nothing_private(
        base: str, http: httpx.AsyncClient, stored: dict[str, list[Paper]]) -> None:
    r = await http.get(f"{base}/feeds/all.atom")
    assert r.status_code == 200
    parsed = feedparser.parse(r.content)
    assert not parsed.bozo
    ids = {e.id for e in parsed.entries}
    assert ids == {p.abs_url for text in CURATED for p in stored[text]}
    assert PRIVATE not in r.text and "secret" not in r.text


async def test_unknown_and_private_slugs_are_a_bare_404(
        base: str, http: httpx.AsyncClient, stored: dict[str, list[Paper]]) -> None:
    answers = [await http.get(f"{base}/feeds/{name}.atom")
               for name in (slug(PRIVATE), "no-such-keyword", "..%2Fsecrets", "ALL")]
    assert [a.status_code for a in answers] == [404] * 4
    assert len({a.text for a in answers}) == 1  # nothing tells one from another
    assert "secret" not in answers[0].text


async def test_a_curated_keyword_never_polled_is_404_until_it_has_a_window(
        app: App, base: str, http: httpx.AsyncClient) -> None:
    assert (await http.get(f"{base}/feeds/graph-neural-networks.atom")).status_code == 404
    all_feed = await http.get(f"{base}/feeds/all.atom")
    assert all_feed.status_code == 200 and feedparser.parse(all_feed.content).entries == []


# --- a reader's private feed ----------------------------------------------------------------------


async def test_a_private_feed_shows_only_its_readers_papers(
        app: App, base: str, http: httpx.AsyncClient, stored: dict[str, list[Paper]],
        add_keyword: KeywordFactory, add_subscriber: SubscriberFactory) -> None:
    graphs, scenes, private = [await add_keyword(t) for t in (*CURATED, PRIVATE)]
    alice = await add_subscriber("telegram", "1001", graphs, private)
    bob = await add_subscriber("email", "bob@example.org", scenes)
    tokens = feed_tokens(app.unsubscribe_secret, PUBLIC)
    url = tokens.url(alice)
    assert url.startswith(f"{PUBLIC}/feeds/s/") and url.endswith(".atom")
    assert "1001" not in url and "bob" not in tokens.url(bob)  # no address in a feed URL

    r = await http.get(f"{base}{url.removeprefix(PUBLIC)}")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/atom+xml; charset=utf-8"
    assert r.headers["referrer-policy"] == "no-referrer"
    assert r.headers["cache-control"].startswith("private")
    parsed = feedparser.parse(r.content)
    assert not parsed.bozo
    assert parsed.feed.id == url
    mine = stored[CURATED[0]] + stored[PRIVATE]
    want = sorted(mine, key=lambda p: (p.published, p.arxiv_id), reverse=True)
    assert [e.id for e in parsed.entries] == [p.abs_url for p in want]
    assert {t.term for e in parsed.entries for t in e.tags} >= {PRIVATE, CURATED[0]}
    assert not {p.abs_url for p in stored[CURATED[1]]} & {e.id for e in parsed.entries}

    again = await http.get(f"{base}{url.removeprefix(PUBLIC)}",
                           headers={"If-None-Match": r.headers["etag"]})
    assert again.status_code == 304

    theirs = feedparser.parse((await http.get(f"{base}{tokens.url(bob).removeprefix(PUBLIC)}")).content)
    assert {e.id for e in theirs.entries} == {p.abs_url for p in stored[CURATED[1]]}
    assert PRIVATE not in str(theirs)


async def test_a_private_feed_holds_the_newest_hundred(
        app: App, base: str, http: httpx.AsyncClient, clock: Clock,
        add_keyword: KeywordFactory, add_subscriber: SubscriberFactory,
        paper: PaperFactory) -> None:
    a, b = await add_keyword("graph neural networks"), await add_keyword("graph transformers")
    await fill(app, a, [paper(days=d / 10) for d in range(1, 81)], clock)
    await fill(app, b, [paper(days=d / 10 + 0.05, about="graph transformers")
                        for d in range(1, 81)], clock)
    sub = await add_subscriber("slack", "C0FEED", a, b)
    url = feed_tokens(app.unsubscribe_secret, PUBLIC).url(sub)
    parsed = feedparser.parse((await http.get(f"{base}{url.removeprefix(PUBLIC)}")).content)
    assert len(parsed.entries) == 100
    published = [e.published for e in parsed.entries]
    assert published == sorted(published, reverse=True)


async def test_bad_tokens_are_the_same_bare_404(
        app: App, base: str, http: httpx.AsyncClient, stored: dict[str, list[Paper]],
        add_keyword: KeywordFactory, add_subscriber: SubscriberFactory) -> None:
    sub = await add_subscriber("telegram", "1001", await add_keyword(CURATED[0]))
    good = feed_tokens(app.unsubscribe_secret, PUBLIC).token(sub)
    forged = feed_tokens("another key", PUBLIC).token(sub)
    nobody = feed_tokens(app.unsubscribe_secret, PUBLIC).token(replace(sub, id=999))
    unsubscribe = Signer(app.unsubscribe_secret).token("reader@example.org")  # another use
    tampered = good[:-2] + ("AA" if not good.endswith("AA") else "BB")
    answers = [await http.get(f"{base}/feeds/s/{t}.atom")
               for t in (forged, nobody, unsubscribe, tampered, "x", "." * 50, "%00")]
    assert [a.status_code for a in answers] == [404] * len(answers)
    assert len({a.text for a in answers}) == 1
    assert (await http.get(f"{base}/feeds/s/{good}.atom")).status_code == 200


async def test_unsubscribing_from_everything_revokes_the_feed_for_good(
        app: App, base: str, http: httpx.AsyncClient, clock: Clock,
        stored: dict[str, list[Paper]], add_keyword: KeywordFactory,
        add_subscriber: SubscriberFactory) -> None:
    kw = await add_keyword(CURATED[0])
    sub = await add_subscriber("email", "reader@example.org", kw)
    tokens = feed_tokens(app.unsubscribe_secret, PUBLIC)
    old = f"{base}/feeds/s/{tokens.token(sub)}.atom"
    assert (await http.get(old)).status_code == 200

    await app.store.call(sub_repo.unsubscribe_all, sub, clock.now())
    assert (await http.get(old)).status_code == 404

    await app.store.call(sub_repo.subscribe, sub, kw, "user", clock.now())  # back again
    assert (await http.get(old)).status_code == 404  # the old URL stays dead
    fresh = await app.store.call(sub_repo.get, sub.id)
    assert fresh is not None and fresh.feed_epoch == sub.feed_epoch + 1
    assert (await http.get(f"{base}/feeds/s/{tokens.token(fresh)}.atom")).status_code == 200


def test_feed_tokens_never_reach_the_log() -> None:
    token = feed_tokens("k" * 16, PUBLIC).token(Subscriber(7, "email", "a@example.org"))
    line = redactor().redact(f"GET /feeds/s/{token}.atom 200")
    assert token not in line and line == "GET /feeds/s/[redacted] 200"


async def test_served_feeds_are_the_feed_files_byte_for_byte(
        app: App, base: str, http: httpx.AsyncClient, stored: dict[str, list[Paper]]) -> None:
    """all.atom is served from one query of the newest 500, the files from the digest's rows:
    the same document either way (so a reader may switch between them)."""
    sections = await app.store.run(lambda s: digest_sections(s, app.cfg))
    files = public_feeds(sections, PUBLIC)
    for name, feed in files.items():
        served = await http.get(f"{base}/feeds/{name}.atom")
        assert served.content == feed.body, name
        assert served.headers["etag"] == feed.etag
