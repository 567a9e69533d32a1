"""/feed in chat hands out the private feed's URL, and the URL works: Telegram through
python-telegram-bot and the local Bot API server with the feed routes on a local web server;
Slack end to end against the real `daily-papers run` process (`/papers feed`, then the feed
from the daemon's own web server, then `/papers unsubscribe all` revokes it)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import feedparser
import httpx
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from bot.app import App
from bot.config import Config, Secrets, TelegramConfig
from bot.faces.commands import help_text
from bot.faces.feed_routes import FeedRoutes
from bot.faces.telegram import TelegramFace
from bot.fetch.arxiv import ArxivClient
from storage.store import AsyncStore
from tests.fakes.arxiv_server import FakeArxiv
from tests.fakes.telegram_server import FakeTelegram
from tests.test_email_e2e import BOB, Setup, body, list_unsubscribe, new_paper, setup
from tests.test_email_e2e import daemon as email_daemon
from tests.test_slack_e2e import CHANNEL, KEYWORD, command, daemon, fakes, subscribed
from tests.test_telegram import FAST, RECENT

__all__ = ["fakes", "setup"]  # the end-to-end fixtures, shared

FEED_URL = re.compile(r"https?://\S+/feeds/s/\S+\.atom")


def feed_url(text: str) -> str:
    found = FEED_URL.search(text)
    assert found, text
    return found.group(0)


def test_help_lists_feed() -> None:
    assert "/feed — a private Atom feed of these papers, for a feed reader" in help_text()


# --- Telegram --------------------------------------------------------------------------------------


@pytest.fixture
async def telegram() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as fake:
        yield fake


@pytest.fixture
async def arxiv() -> AsyncIterator[FakeArxiv]:
    async with FakeArxiv(papers=list(RECENT)) as fake:
        yield fake


Served = Callable[..., Awaitable[tuple[App, TelegramFace]]]


@pytest.fixture
async def served(tmp_path: Path, arxiv: FakeArxiv,
                 telegram: FakeTelegram) -> AsyncIterator[Served]:
    """The Telegram face and, with `web=True`, the feed routes on a local web server whose
    address is [web] public_url."""
    store = await AsyncStore(tmp_path / "papers.db").open()
    client = ArxivClient(arxiv.url, request_interval=0.0, max_attempts=2)
    servers: list[TestServer] = []
    faces: list[TelegramFace] = []

    async def start(*, web_on: bool = True) -> tuple[App, TelegramFace]:
        cfg = Config()
        cfg.arxiv.api_url = arxiv.url
        cfg.storage.path = tmp_path / "papers.db"
        app = App(cfg, Secrets(), store, client, unsubscribe_secret="telegram-feed-key",
                  serves_web=web_on)
        if web_on:
            site = web.Application()
            site.add_routes(FeedRoutes(app).routes())
            server = TestServer(site, host="127.0.0.1", port=0)
            await server.start_server()
            servers.append(server)
            cfg.web.public_url = str(server.make_url("/")).rstrip("/")
        face = TelegramFace(TelegramConfig(api_url=telegram.base_url), telegram.token,
                            limits=FAST)
        await face.start(app)
        faces.append(face)
        return app, face

    yield start
    for face in faces:
        await face.stop()
        await face.notifier.close()
    for server in servers:
        await server.close()
    await client.aclose()
    await store.close()


def said(telegram: FakeTelegram, chat: int) -> list[str]:
    return [m.visible_text for m in telegram.messages_to(chat)]


async def test_telegram_feed_gives_the_chats_private_feed_until_unsubscribe_all(
        served: Served, telegram: FakeTelegram) -> None:
    await served()
    assert "feed" in [c["command"] for c in telegram.commands_set[0]["commands"]]
    telegram.push_command(42, "/feed")
    await telegram.wait_sent(1, 42)
    assert said(telegram, 42)[0].startswith("No keywords are followed here yet, so there is "
                                            "no feed.")

    telegram.push_command(42, "/subscribe video anomaly detection")
    await telegram.wait_sent(3, 42)  # the answer, then the first look
    telegram.push_command(42, "/feed")
    await telegram.wait_sent(4, 42)
    reply = said(telegram, 42)[3]
    assert reply.startswith("The private Atom feed of this chat's keywords (the newest 100 "
                            "papers), for any feed reader:")
    url = feed_url(reply)
    async with httpx.AsyncClient(timeout=30) as http:
        r = await http.get(url)
        assert r.status_code == 200
        parsed = feedparser.parse(r.content)
        assert not parsed.bozo
        assert {e.id for e in parsed.entries} == {p.abs_url for p in RECENT}
        assert parsed.entries[0].tags[-1].term == "video anomaly detection"

        telegram.push_command(42, "/unsubscribe all")
        await telegram.wait_sent(5, 42)
        assert (await http.get(url)).status_code == 404


async def test_telegram_feed_without_the_web_server_says_how_to_get_one(
        served: Served, telegram: FakeTelegram) -> None:
    await served(web_on=False)
    telegram.push_command(7, "/subscribe video anomaly detection")
    await telegram.wait_sent(2, 7)
    telegram.push_command(7, "/feed")
    await telegram.wait_sent(3, 7)
    assert said(telegram, 7)[2] == ("Feeds are not served by this Daily Papers: its web server "
                                    "is off. Ask the operator to add a [web] section to its "
                                    "config.toml.")


# --- Slack, the real process ------------------------------------------------------------------------


@pytest.mark.slow
async def test_slack_papers_feed_end_to_end(tmp_path: Path, fakes: Any) -> None:
    arxiv, fake = fakes
    async with daemon(tmp_path, arxiv, fake) as d:
        await subscribed(d, fake, arxiv)
        status, ack = await command(d, fake, "/papers", "feed")
        assert status == 200 and ack["response_type"] == "ephemeral"
        url = feed_url(ack["text"])
        assert url.startswith(f"{d.url}/feeds/s/")
        status, bare = await command(d, fake, "/papers", "")
        assert "/feed — a private Atom feed" in bare["text"]

        async with httpx.AsyncClient(timeout=30) as http:
            r = await http.get(url)
            assert r.status_code == 200
            assert r.headers["content-type"] == "application/atom+xml; charset=utf-8"
            parsed = feedparser.parse(r.content)
            assert not parsed.bozo and parsed.entries
            for e in parsed.entries:  # each labelled with the channel's keyword, and only it
                assert [t.term for t in e.tags if t.scheme.startswith("tag:")] == [KEYWORD]
            again = await http.get(url, headers={"If-None-Match": r.headers["etag"]})
            assert again.status_code == 304

            status, done = await command(d, fake, "/papers", "unsubscribe all")
            assert status == 200 and done["text"].startswith("Unsubscribed from all")
            assert (await http.get(url)).status_code == 404
        _, after = await command(d, fake, "/papers", "feed", channel=CHANNEL)
        assert after["text"].startswith("No keywords are followed here yet")
    token = url.rsplit("/", 1)[1].removesuffix(".atom")
    assert not [line for line in d.lines if token in line]  # redacted from the access log


# --- email, the real process -------------------------------------------------------------------------


@pytest.mark.slow
async def test_every_email_carries_the_readers_feed_next_to_its_links(setup: Setup) -> None:
    s = setup
    s.arxiv.add(new_paper(1, days=3))
    await s.run_once()  # the baseline
    s.arxiv.add(new_paper(2))
    await s.run_once()
    (mail,) = s.smtp.messages_to(BOB)
    text, html = body(mail, "plain"), body(mail, "html")
    url = feed_url(re.search(r"Your private Atom feed: (\S+)", text).group(1))  # type: ignore[union-attr]
    assert url.startswith(f"{s.url}/feeds/s/")
    assert f'<a href="{url}" style="color:#777777;">Your private feed</a>' in html
    lines = [line.rstrip() for line in text.splitlines()]
    footer = lines[len(lines) - lines[::-1].index("--"):]  # beside the subscription's links
    assert "Unsubscribe from everything:" in footer[1] and footer[2] == f"Your private Atom feed: {url}"

    async with email_daemon(s) as d, httpx.AsyncClient(timeout=30) as http:
        r = await http.get(url)
        assert r.status_code == 200
        parsed = feedparser.parse(r.content)
        assert {e.id for e in parsed.entries} == {"https://arxiv.org/abs/2598.00001",
                                                  "https://arxiv.org/abs/2598.00002"}
        one_click = await http.post(list_unsubscribe(mail), data={"List-Unsubscribe": "One-Click"})
        assert one_click.status_code == 200
        assert (await http.get(url)).status_code == 404
    token = url.rsplit("/", 1)[1].removesuffix(".atom")
    assert not [line for line in d.lines if token in line]
