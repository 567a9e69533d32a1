"""Headless Chromium (Debian's package) driven over the Chrome DevTools protocol with aiohttp's
websocket client (no extra library): the real browser every reader-facing page is tested in.
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

from tests.fakes.daemon import die_with_parent

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0"]

needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="/usr/bin/chromium is not installed (apt-get install chromium)")


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
        """A real mouse click at the element's centre, as a person would; waits for the page
        it loads."""
        await self._until_loaded(self.tap(selector))

    async def tap(self, selector: str) -> None:
        """A mouse click that loads no page (a radio button, a checkbox)."""
        box = await self.js(f"""(() => {{ const e = document.querySelector({json.dumps(selector)});
            e.scrollIntoView({{block: "center"}}); const r = e.getBoundingClientRect();
            return [r.x + r.width / 2, r.y + r.height / 2]; }})()""")
        x, y = box
        for kind in ("mousePressed", "mouseReleased"):
            await self.cdp.call("Input.dispatchMouseEvent", self.session, type=kind, x=x, y=y,
                                button="left", clickCount=1)

    async def fill(self, selector: str, text: str) -> None:
        """Replace a text field's content by typing `text` into it."""
        await self.js(f"(() => {{ const e = document.querySelector({json.dumps(selector)}); "
                      "e.focus(); e.select(); })()")
        await self.cdp.call("Input.insertText", self.session, text=text)

    async def set_value(self, selector: str, value: str) -> None:
        """A control typing cannot reach (a <select>, a time picker), set as its widget would."""
        await self.js(f"""(() => {{ const e = document.querySelector({json.dumps(selector)});
            e.value = {json.dumps(value)};
            e.dispatchEvent(new Event("change", {{bubbles: true}})); }})()""")

    async def emulate(self, *, phone: bool = False, zone: str | None = None,
                      scripts: bool = True) -> None:
        """A phone's screen, the browser's time zone, JavaScript off."""
        if phone:
            await self.cdp.call("Emulation.setDeviceMetricsOverride", self.session, width=375,
                                height=740, deviceScaleFactor=2, mobile=True)
        if zone:
            await self.cdp.call("Emulation.setTimezoneOverride", self.session, timezoneId=zone)
        if not scripts:
            await self.cdp.call("Emulation.setScriptExecutionDisabled", self.session, value=True)

    async def overflows(self) -> bool:
        """The page is wider than the screen (a reader would have to scroll sideways)."""
        return await self.js("document.documentElement.scrollWidth > window.innerWidth")


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
