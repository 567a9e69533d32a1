"""The unsubscribe page in a real browser: headless Chromium opens the link from an email,
a mouse click on the confirm button posts the form, and the result page says it is done.

The browser is tests/browser.py's.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from bot.faces.tokens import Signer
from bot.faces.unsubscribe import UnsubscribePage
from storage import subscribers as sub_repo
from storage.store import AsyncStore
from tests.browser import chromium, needs_chromium
from tests.conftest import Clock, KeywordFactory, SubscriberFactory

SECRET = "browser-test-key"

pytestmark = [
    pytest.mark.slow,
    needs_chromium,
]


@pytest.fixture
async def page_url(store: AsyncStore, clock: Clock) -> AsyncIterator[str]:
    signer = Signer(SECRET)
    app = web.Application()
    app.add_routes(UnsubscribePage(lambda: store, lambda: signer, clock.now).routes())
    async with TestServer(app, host="127.0.0.1", port=0) as server:
        yield str(server.make_url("/unsubscribe"))


async def test_open_the_link_click_confirm_see_the_result(
        tmp_path: Path, page_url: str, store: AsyncStore, add_keyword: KeywordFactory,
        add_subscriber: SubscriberFactory) -> None:
    video = await add_keyword("video understanding")
    vlm = await add_keyword("vision <b>language</b> model")
    sub = await add_subscriber("email", "reader@example.org", video, vlm)
    link = f"{page_url}?t={Signer(SECRET).token(sub.address, vlm.canonical)}"

    async with chromium(tmp_path) as tab:
        await tab.open(link)
        assert await tab.text("#title") == "Unsubscribe"
        question = await tab.text("#message")
        assert "reader@example.org" in question and "vision <b>language</b> model" in question
        assert await tab.js("document.querySelectorAll('b').length") == 0  # shown, not markup
        assert len(await store.call(sub_repo.subscriptions, sub.id)) == 2  # opening changes nothing

        await tab.click("#confirm")
        assert await tab.text("#title") == "Unsubscribed"
        done = await tab.text("#message")
        assert "reader@example.org is unsubscribed from vision <b>language</b> model" in done

    left = await store.call(sub_repo.subscriptions, sub.id)
    assert [kw.display for kw, _ in left] == ["video understanding"]


async def test_a_forged_link_shows_an_error_page(tmp_path: Path, page_url: str) -> None:
    forged = Signer("not the key").token("reader@example.org")
    async with chromium(tmp_path) as tab:
        await tab.open(f"{page_url}?t={forged}")
        assert await tab.text("#title") == "Invalid link"
        assert "not valid" in await tab.text("#message")
        assert await tab.js("document.querySelector('#confirm')") is None
