"""A lean networking backend for python-telegram-bot's send-out Bot: aiohttp with JSON bodies.

Why not PTB's default HTTPXRequest for send-outs: profiling 10,000 messages showed most of the
client's CPU going to form-encoding the ~4 kB text byte by byte (urllib's quote_plus) and to
httpcore's pool bookkeeping (a readability syscall per pooled connection per request). Both cap
a send-out near 550 messages/s whatever max_in_flight is. This backend posts the same
parameters as one JSON body over an aiohttp connection pool. It is a `BaseRequest`, PTB's
documented extension point, so PTB still builds every request and turns every answer into its
exceptions (RetryAfter, Forbidden, ChatMigrated, BadRequest …).
"""

from __future__ import annotations

import json
import ssl

import aiohttp
import certifi
from aiohttp.helpers import get_env_proxy_for_url
from telegram.error import NetworkError, TimedOut
from telegram.request import BaseRequest, RequestData
from yarl import URL

_DEFAULT = BaseRequest.DEFAULT_NONE


def _without_token(text: str, url: str) -> str:
    """`text` with the token part of a Bot API URL (…/bot<token>/method) replaced."""
    _, found, token = url.rsplit("/", 1)[0].rpartition("/bot")
    return text.replace(token, "<token>") if found and token else text


class AiohttpJsonRequest(BaseRequest):
    """POSTs a method's parameters as application/json over a pool of `pool_size` connections.

    Only for text methods: a request with files is refused, since send-outs never upload.
    """

    __slots__ = ("_pool_size", "_proxies", "_session", "_timeouts")

    def __init__(self, pool_size: int = 4, *, connect_timeout: float = 5.0,
                 read_timeout: float = 15.0, write_timeout: float = 15.0,
                 pool_timeout: float = 30.0) -> None:
        self._pool_size = pool_size
        self._timeouts = {"connect": connect_timeout, "read": read_timeout,
                          "write": write_timeout, "pool": pool_timeout}
        self._session: aiohttp.ClientSession | None = None
        self._proxies: dict[tuple[str, str], tuple[URL | None, aiohttp.BasicAuth | None]] = {}

    @property
    def read_timeout(self) -> float | None:
        return self._timeouts["read"]

    async def initialize(self) -> None:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=self._pool_size,
                ssl=ssl.create_default_context(cafile=certifi.where()))
            self._session = aiohttp.ClientSession(
                connector=connector, headers={"User-Agent": self.USER_AGENT})

    async def shutdown(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None

    async def do_request(
        self,
        url: str,
        method: str,
        request_data: RequestData | None = None,
        read_timeout: object = _DEFAULT,
        write_timeout: object = _DEFAULT,  # a JSON body of a few kB: the read timeout covers it
        connect_timeout: object = _DEFAULT,
        pool_timeout: object = _DEFAULT,
    ) -> tuple[int, bytes]:
        if self._session is None or self._session.closed:
            raise RuntimeError("AiohttpJsonRequest is not initialized")
        if request_data is not None and request_data.contains_files:
            raise NetworkError("AiohttpJsonRequest sends no files; use HTTPXRequest for uploads")
        connect = self._pick(connect_timeout, "connect")
        pool = self._pick(pool_timeout, "pool")
        timeout = aiohttp.ClientTimeout(  # aiohttp's `connect` includes waiting for the pool
            sock_connect=connect,
            connect=None if connect is None or pool is None else connect + pool,
            sock_read=self._pick(read_timeout, "read"))
        body = json.dumps(request_data.parameters).encode() if request_data else None
        try:
            proxy, proxy_auth = self._proxy_for(URL(url))
            async with self._session.request(
                    method, url, data=body, timeout=timeout, proxy=proxy, proxy_auth=proxy_auth,
                    headers={"Content-Type": "application/json"}) as response:
                return response.status, await response.read()
        except (TimeoutError, aiohttp.ServerTimeoutError) as err:
            raise TimedOut from err
        except aiohttp.ClientError as err:
            # The message may quote the URL, whose path carries the bot token; it goes to the
            # log and to the outbox row's last_error, so the token is cut out here.
            text = _without_token(f"aiohttp.{type(err).__name__}: {err}", url)
            raise NetworkError(text) from None

    def _proxy_for(self, url: URL) -> tuple[URL | None, aiohttp.BasicAuth | None]:
        """HTTP(S)_PROXY / NO_PROXY as PTB's httpx requests (replies, long polling) apply them,
        so both halves of the bot take one route. Looked up once per host: aiohttp's trust_env
        reads the environment and ~/.netrc on every request (a third of a send-out's CPU)."""
        key = (url.scheme, url.host or "")
        if key not in self._proxies:
            try:
                self._proxies[key] = get_env_proxy_for_url(url)
            except LookupError:
                self._proxies[key] = (None, None)
        return self._proxies[key]

    def _pick(self, value: object, name: str) -> float | None:
        if isinstance(value, int | float) or value is None:
            return value  # type: ignore[return-value]
        return self._timeouts[name]
