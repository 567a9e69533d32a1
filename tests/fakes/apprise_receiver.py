"""A local HTTP receiver for apprise's `json://` targets: records every POST per path and
answers as programmed (an error status, or holding the answer until the test releases it)."""

from __future__ import annotations

import asyncio
import base64
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tests.fakes.changes import Changes


@dataclass(frozen=True)
class Post:
    """One notification as apprise's JSON plugin sends it."""

    path: str
    title: str
    message: str
    kind: str  # apprise's notify type: "info", …
    auth: str  # "user:password" from Basic auth, "" without
    status: int  # what the receiver answered (0: no answer, the connection was dropped)


@dataclass
class _Answer:
    status: int = 200
    hold: asyncio.Event | None = None  # answer only once this is set


class AppriseReceiver:
    """127.0.0.1:0; `async with AppriseReceiver() as rx:` in the test's own event loop."""

    def __init__(self) -> None:
        self.url = ""
        self.port = 0
        self.posts: list[Post] = []
        self.held = 0  # requests waiting on a hold right now
        self._programmed: dict[str, deque[_Answer]] = {}
        self._always: dict[str, int] = {}
        self._changes = Changes()
        self._runner: web.AppRunner | None = None

    def target(self, path: str, credentials: str = "") -> str:
        """The apprise URL of a target at `path` on this receiver (credentials: "user:pass")."""
        auth = f"{credentials}@" if credentials else ""
        return f"json://{auth}127.0.0.1:{self.port}/{path.strip('/')}"

    async def __aenter__(self) -> AppriseReceiver:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._receive)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{self.port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # -- programming answers ---------------------------------------------------------------------

    def answer(self, path: str, status: int) -> None:
        """Every later request to `path` gets `status` (200 again with `answer(path, 200)`)."""
        self._always["/" + path.strip("/")] = status

    def next_answers(self, path: str, *statuses: int) -> None:
        """The next requests to `path` get these statuses, in order, before the usual one."""
        queue = self._programmed.setdefault("/" + path.strip("/"), deque())
        queue.extend(_Answer(status) for status in statuses)

    def hold_next(self, path: str, status: int = 200) -> asyncio.Event:
        """The next request to `path` is recorded at once and answered when the event is set."""
        release = asyncio.Event()
        self._programmed.setdefault("/" + path.strip("/"), deque()).append(
            _Answer(status, release))
        return release

    # -- waiting and inspection ------------------------------------------------------------------

    def posts_to(self, path: str) -> list[Post]:
        return [p for p in self.posts if p.path == "/" + path.strip("/")]

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 60) -> None:
        """Return once `predicate()` holds; re-checked after every recorded request."""
        await self._changes.wait_for(predicate, timeout, lambda: (
            f"posts: {[(p.path, p.status, p.title) for p in self.posts[-10:]]}; "
            f"held: {self.held}"))

    # -- the endpoint ----------------------------------------------------------------------------

    async def _receive(self, request: web.Request) -> web.Response:
        data: dict[str, Any] = await request.json()
        queue = self._programmed.get(request.path)
        answer = queue.popleft() if queue else _Answer(self._always.get(request.path, 200))
        self.posts.append(Post(request.path, str(data.get("title", "")),
                               str(data.get("message", "")), str(data.get("type", "")),
                               _basic_auth(request.headers.get("Authorization", "")),
                               answer.status if answer.hold is None else 0))
        self._changes.bump()
        if answer.hold is not None:
            self.held += 1
            self._changes.bump()
            try:
                await answer.hold.wait()
            finally:
                self.held -= 1
        return web.json_response({"ok": answer.status < 300}, status=answer.status)


def _basic_auth(header: str) -> str:
    if not header.lower().startswith("basic "):
        return ""
    return base64.b64decode(header[6:]).decode(errors="replace")
