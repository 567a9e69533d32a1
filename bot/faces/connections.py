"""How many connections the daemon's HTTP server holds, and for how long (slowloris).

A client must send a whole request head within HEADER_SECONDS and a body within BODY_SECONDS;
at most `cap` connections are open, far below the process's file limit, so a flood of slow or
idle clients can neither hold /healthz nor starve arXiv polls and the database of descriptors.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from bot.logs import RateLimitedLog

log = logging.getLogger(__name__)

HEADER_SECONDS = 10.0  # a request head (or the next one on a kept-alive connection) in time
BODY_SECONDS = 10.0  # a request body in time: a slow POST holds its handler otherwise
LINGER_SECONDS = 2.0  # reading what is left of a refused body, so the client sees the answer
MAX_CONNECTIONS = 256
BACKLOG = 128
BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 0\r\n"
        b"Retry-After: 1\r\n\r\n")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def connection_cap(wanted: int = MAX_CONNECTIONS) -> int:
    """`wanted`, but never more than a quarter of the open-file limit: the rest is for arXiv,
    the channels, the database and the digest."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(8, min(wanted, soft // 4))


class _Refuse(asyncio.Protocol):
    """Every connection busy with a request: answer 503 at once and let go of the socket."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(BUSY)
        transport.close()


class _Counted(asyncio.Protocol):
    """aiohttp's handler for one connection, counted from accept to close.

    The count starts at accept, not when aiohttp hears of the connection: asyncio accepts a
    burst of connections before any of them is announced."""

    def __init__(self, guard: ConnectionGuard, handler: RequestHandler) -> None:
        self.guard = guard
        self.handler = handler
        self.made = self.doomed = False

    def close(self) -> None:
        if self.made:
            self.handler.force_close()
        else:
            self.doomed = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.made = True
        self.handler.connection_made(transport)
        if self.doomed:
            self.handler.force_close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.guard.open.pop(self, None)
        self.handler.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self.handler.data_received(data)

    def eof_received(self) -> bool | None:
        return self.handler.eof_received()

    def pause_writing(self) -> None:
        self.handler.pause_writing()

    def resume_writing(self) -> None:
        self.handler.resume_writing()


class ConnectionGuard:
    """The listening socket's protocol factory, in front of aiohttp's low-level server.

    At the cap a new connection closes the oldest idle one (connected without a whole request
    yet, or kept alive between requests); when every connection is busy with a request, the
    new one gets a 503. Either way, one log line a minute at most.
    """

    def __init__(self, cap: int, max_body: int) -> None:
        self.cap = cap
        self.max_body = max_body
        self.server: web.Server | None = None
        self.open: dict[_Counted, None] = {}  # oldest first
        self.busy: set[RequestHandler] = set()
        self._log = RateLimitedLog(log)

    async def listen(self, runner: web.AppRunner, host: str, port: int) -> asyncio.Server:
        """Bind the runner's server behind this guard (aiohttp's documented low-level use:
        the server is the protocol factory given to loop.create_server)."""
        self.server = runner.server
        loop = asyncio.get_running_loop()
        return await loop.create_server(self, host, port, backlog=BACKLOG)

    def __call__(self) -> asyncio.BaseProtocol:
        assert self.server is not None
        if len(self.open) >= self.cap:
            idle = next((c for c in self.open if c.handler not in self.busy), None)
            self._log.log(logging.WARNING, "web: %d connections open, the most allowed; %s "
                          "(many slow or idle clients: a public [web] belongs behind a reverse "
                          "proxy)", len(self.open),
                          "the oldest idle one was closed" if idle else "a new one was refused")
            if idle is None:
                return _Refuse()
            del self.open[idle]
            idle.close()
        counted = _Counted(self, self.server())
        self.open[counted] = None
        return counted

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Marks the connection busy while its request is handled; reads a body in time
        (aiohttp keeps it: handlers read it again with request.read() or request.post())."""
        protocol = request.protocol
        self.busy.add(protocol)
        try:
            if request.body_exists:
                if (request.content_length or 0) > self.max_body:
                    return web.Response(status=413, text="request body too large\n")
                try:
                    async with asyncio.timeout(BODY_SECONDS):
                        await request.read()
                except TimeoutError:
                    return web.Response(status=408, text="request body too slow\n",
                                        headers={"Connection": "close"})
            return await handler(request)
        finally:
            self.busy.discard(protocol)
