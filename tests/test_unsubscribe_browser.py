"""The unsubscribe page in a real browser: headless Chromium opens the link from an email,
a mouse click on the confirm button posts the form, and the result page says it is done.

Driven over the Chrome DevTools protocol with aiohttp's websocket client (no extra library).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from bot.faces.unsubscribe import Signer, UnsubscribePage
from storage import subscribers as sub_repo
from storage.store import AsyncStore
from tests.conftest import Clock, KeywordFactory, SubscriberFactory
from tests.fakes.daemon import die_with_parent

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0"]
SECRET = "browser-test-key"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(),
                       reason="/usr/bin/chromium is not installed (apt-get install chromium)"),
]


class DevTools:
    """A minimal CDP client: commands by id, events recorded in order for waiting."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.ids = itertools.count(1)
        self.pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.events: list[dict[str, Any]] = []
        self.changed = asyncio.Event()
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for msg in self.ws:
            data = json.loads(msg.data)
            future = self.pending.pop(data.get("id", -1), None)
            if future is not None and not future.done():
                if "error" in data:
                    future.set_exception(AssertionError(f"CDP error: {data['error']}"))
                else:
                    future.set_result(data.get("result", {}))
            elif "method" in data:
                self.events.append(data)
                self.changed.set()

    async def call(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        n = next(self.ids)
        message: dict[str, Any] = {"id": n, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        self.pending[n] = asyncio.get_running_loop().create_future()
        await self.ws.send_str(json.dumps(message))
        async with asyncio.timeout(30):
            return await self.pending[n]

    async def event_after(self, mark: int, method: str) -> dict[str, Any]:
        """The first `method` event recorded after position `mark`."""
        async with asyncio.timeout(30):
            while True:
                for event in self.events[mark:]:
                    if event["method"] == method:
                        return event
                self.changed.clear()
                await self.changed.wait()

    async def close(self) -> None:
        self.reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.reader


class Tab:
    def __init__(self, cdp: DevTools, session: str) -> None:
        self.cdp = cdp
        self.session = session

    async def _until_loaded(self, action: Any) -> None:
        mark = len(self.cdp.events)
        await action
        await self.cdp.event_after(mark, "Page.loadEventFired")

    async def open(self, url: str) -> None:
        await self._until_loaded(self.cdp.call("Page.navigate", self.session, url=url))

    async def js(self, expression: str) -> Any:
        result = await self.cdp.call("Runtime.evaluate", self.session, expression=expression,
                                     returnByValue=True)
        return result["result"].get("value")

    async def text(self, selector: str) -> str:
        return await self.js(f"document.querySelector({json.dumps(selector)})?.innerText ?? ''")

    async def click(self, selector: str) -> None:
        """A real mouse click at the element's centre, as a person would."""
        box = await self.js(f"""(() => {{ const r = document.querySelector({json.dumps(selector)})
            .getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; }})()""")
        x, y = box

        async def press_and_release() -> None:
            for kind in ("mousePressed", "mouseReleased"):
                await self.cdp.call("Input.dispatchMouseEvent", self.session, type=kind, x=x, y=y,
                                    button="left", clickCount=1)

        await self._until_loaded(press_and_release())


@contextlib.asynccontextmanager
async def chromium(tmp: Path) -> AsyncIterator[Tab]:
    proc = await asyncio.create_subprocess_exec(
        str(CHROMIUM), *FLAGS, f"--user-data-dir={tmp / 'chromium-profile'}", "about:blank",
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE, preexec_fn=die_with_parent)
    try:
        endpoint = await _devtools_url(proc)
        async with aiohttp.ClientSession() as http, http.ws_connect(endpoint,
                                                                     max_msg_size=0) as ws:
            cdp = DevTools(ws)
            try:
                target = await cdp.call("Target.createTarget", url="about:blank")
                attached = await cdp.call("Target.attachToTarget", targetId=target["targetId"],
                                          flatten=True)
                tab = Tab(cdp, attached["sessionId"])
                await cdp.call("Page.enable", tab.session)
                await cdp.call("Runtime.enable", tab.session)
                yield tab
                with contextlib.suppress(Exception):
                    await cdp.call("Browser.close")
            finally:
                await cdp.close()
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
        async with asyncio.timeout(20):
            await proc.communicate()


async def _devtools_url(proc: asyncio.subprocess.Process) -> str:
    """Chromium prints "DevTools listening on ws://…" on stderr once it is ready."""
    assert proc.stderr is not None
    seen: list[str] = []
    async with asyncio.timeout(60):
        async for raw in proc.stderr:
            line = raw.decode(errors="replace")
            seen.append(line)
            found = re.search(r"DevTools listening on (ws://\S+)", line)
            if found:
                return found.group(1)
    raise AssertionError("chromium exited before DevTools was ready:\n" + "".join(seen))


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
