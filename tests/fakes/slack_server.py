"""Test double for the deliver stage: a loopback Slack Web API + Socket Mode server that slack-sdk
reaches through `base_url`, plus signed slash-command requests for the daemon's HTTP endpoint."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any
from urllib.parse import urlencode

from aiohttp import WSMsgType, web

from tests.fakes.changes import Changes

MAX_BLOCKS = 50
MAX_SECTION_TEXT = 3000
MAX_SECTION_FIELDS = 10
MAX_FIELD_TEXT = 2000
MAX_HEADER_TEXT = 150
MAX_CONTEXT_ELEMENTS = 10
MAX_BLOCK_ID = 255
MAX_MESSAGE_TEXT = 40_000
# Undocumented total-text ceiling observed in slackapi/bolt-js#2509.
MAX_BLOCKS_TEXT = 13_200

_BLOCK_TYPES = frozenset({
    "section", "header", "context", "divider", "actions", "image", "rich_text", "input",
    "file", "video", "markdown",
})
_APP_TOKEN_METHODS = frozenset({"apps.connections.open"})


def slack_escape(text: str) -> str:
    """How Slack puts user text on the wire in commands: &, < and > as entities."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_signature(signing_secret: str, timestamp: str, body: bytes) -> str:
    """`X-Slack-Signature`: v0= HMAC-SHA256 of `v0:{ts}:{body}` with the signing secret."""
    base = b"v0:" + timestamp.encode() + b":" + body
    return "v0=" + hmac.new(signing_secret.encode(), base, hashlib.sha256).hexdigest()


@dataclass
class _Programmed:
    error: str
    status: int
    retry_after: int | str | None
    times: int | None  # None: until cleared
    page: tuple[str, str] | None = None  # (content type, body): not the Web API's JSON


@dataclass
class SlackCall:
    """Any Web API request the fake received, including refused ones."""

    method: str
    params: dict[str, Any]
    status: int
    error: str | None
    at: float
    channel: str | None = None


@dataclass
class SlackPost:
    """A chat.postMessage that Slack accepted: what the channel would show."""

    channel: str
    text: str | None
    blocks: list[dict[str, Any]] | None
    thread_ts: str | None
    unfurl_links: bool | None
    unfurl_media: bool | None
    ts: str
    at: float
    params: dict[str, Any]


@dataclass
class ResponseUrlPost:
    """A follow-up the daemon POSTed to a slash command's response_url."""

    n: int
    body: dict[str, Any]
    at: float


class FakeSlack:
    """Slack on 127.0.0.1:0; `async with FakeSlack() as fake:` in the test's own event loop."""

    def __init__(
        self,
        bot_token: str = "xoxb-test-token",
        app_token: str = "xapp-test-token",
        *,
        team_id: str = "T0001",
        user_id: str = "U0BOT",
        bot_id: str = "B0BOT",
    ) -> None:
        self.bot_token = bot_token
        self.app_token = app_token
        self.team_id = team_id
        self.user_id = user_id
        self.bot_id = bot_id
        self.url = ""
        self.channels: dict[str, dict[str, Any]] = {}
        self.calls: list[SlackCall] = []
        self.posts: list[SlackPost] = []
        self.responses: list[ResponseUrlPost] = []
        self.socket_messages: list[dict[str, Any]] = []
        self.socket_connections = 0
        self._sockets: list[web.WebSocketResponse] = []
        self._tickets: set[str] = set()
        self._acks: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._channel_failures: dict[tuple[str, str], deque[_Programmed]] = {}
        self._global_failures: dict[str, deque[_Programmed]] = {}
        self._ts = itertools.count(1)
        self._ts_base = int(time.time())
        self._response_ids = itertools.count(1)
        self._envelope_ids = itertools.count(1)
        self._changes = Changes()
        self._runner: web.AppRunner | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def api_url(self) -> str:
        """What goes into `AsyncWebClient(base_url=...)` / `[slack] api_url`."""
        return f"{self.url}/api/"

    async def __aenter__(self) -> FakeSlack:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Listen on 127.0.0.1 with a free port; `url` is valid afterwards."""
        app = web.Application()
        app.router.add_route("*", "/api/{method}", self._dispatch)
        app.router.add_get("/socket", self._socket)
        app.router.add_post("/response/{n}", self._response_url)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def stop(self) -> None:
        for ws in list(self._sockets):
            await ws.close()
        for future in self._acks.values():
            future.cancel()
        if self._runner is not None:
            await self._runner.cleanup()

    # -- waiting and inspection --------------------------------------------------------------

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 60) -> None:
        """Return once `predicate()` holds; re-checked after every recorded request."""
        await self._changes.wait_for(predicate, timeout, lambda: (
            f"last calls: {[(c.method, c.channel, c.error) for c in self.calls[-10:]]}; "
            f"posts: {len(self.posts)}; responses: {len(self.responses)}"))

    async def wait_posts(self, count: int, channel: str | None = None, timeout: float = 60) -> None:
        await self.wait_for(lambda: len(self.posts_to(channel)) >= count, timeout)

    def posts_to(self, channel: str | None) -> list[SlackPost]:
        return [p for p in self.posts if channel is None or p.channel == channel]

    def calls_to(self, method: str) -> list[SlackCall]:
        return [c for c in self.calls if c.method == method]

    def arrivals(self, channel: str | None = None) -> list[float]:
        """monotonic() of every chat.postMessage request (accepted or not), for rate checks."""
        return [
            c.at for c in self.calls
            if c.method == "chat.postMessage" and (channel is None or c.channel == channel)
        ]

    # -- programming answers -----------------------------------------------------------------

    def fail(
        self,
        error: str,
        *,
        channel: str | None = None,
        method: str = "chat.postMessage",
        times: int | None = 1,
        status: int = 200,
    ) -> None:
        """Answer the next `times` calls of `method` (in `channel`, else any) with
        `{"ok": false, "error": error}`. `times=None` keeps failing until `clear_failures()`."""
        self._program(_Programmed(error, status, None, times), channel, method)

    def rate_limit(
        self,
        retry_after: int | str = 1,
        *,
        channel: str | None = None,
        method: str = "chat.postMessage",
        times: int | None = 1,
    ) -> None:
        """HTTP 429 with `Retry-After` (seconds, or an HTTP date as text), as Slack answers when
        a method's tier is exceeded."""
        self._program(_Programmed("ratelimited", 429, retry_after, times), channel, method)

    def not_json(
        self,
        status: int = 502,
        *,
        content_type: str = "text/html",
        channel: str | None = None,
        method: str = "chat.postMessage",
        times: int | None = 1,
    ) -> None:
        """Answer the next `times` calls of `method` as an edge proxy does, not as the Web API:
        an HTML error page (a 502 from Slack's edge), or plain text like aiohttp's 405."""
        phrase = HTTPStatus(status).phrase
        if content_type == "text/html":
            body = (f"<html><head><title>{status} {phrase}</title></head><body><center>"
                    f"<h1>{status} {phrase}</h1></center></body></html>")
        else:
            body = f"{status}: {phrase}"
        self._program(_Programmed(f"not json ({status})", status, None, times,
                                  (content_type, body)), channel, method)

    def clear_failures(self) -> None:
        self._channel_failures.clear()
        self._global_failures.clear()

    def channel_info(self, channel: str) -> dict[str, Any]:
        """The state conversations.info and chat.postMessage see. Unknown ids exist and the
        bot is a member; override with `fake.channels[id] = {"is_member": False, ...}`."""
        info = {
            "id": channel, "name": channel.lower(), "exists": True, "is_member": True,
            "is_archived": False, "is_private": channel.startswith("G"),
        }
        info.update(self.channels.get(channel, {}))
        return info

    def _program(self, entry: _Programmed, channel: str | None, method: str) -> None:
        if channel is None:
            self._global_failures.setdefault(method, deque()).append(entry)
        else:
            self._channel_failures.setdefault((method, channel), deque()).append(entry)

    def _take_failure(self, method: str, channel: str | None) -> _Programmed | None:
        queues = [self._global_failures.get(method)]
        if channel is not None:
            queues.insert(0, self._channel_failures.get((method, channel)))
        for queue in queues:
            if queue:
                entry = queue[0]
                if entry.times is not None:
                    entry.times -= 1
                    if entry.times <= 0:
                        queue.popleft()
                return entry
        return None

    # -- slash commands ----------------------------------------------------------------------

    def slash_payload(
        self,
        command: str = "/papers",
        text: str = "",
        *,
        channel_id: str = "C1",
        team_id: str | None = None,
        user_id: str = "U1",
        channel_name: str = "general",
        user_name: str = "alice",
    ) -> dict[str, str]:
        """The fields Slack sends for a slash command, in Slack's order. `text` is wire text
        (use `slack_escape` for user input); response_url points back at this fake."""
        n = next(self._response_ids)
        return {
            "token": "legacy-verification-token",
            "team_id": team_id or self.team_id,
            "team_domain": "test",
            "channel_id": channel_id,
            "channel_name": channel_name,
            "user_id": user_id,
            "user_name": user_name,
            "command": command,
            "text": text,
            "api_app_id": "A0001",
            "is_enterprise_install": "false",
            "response_url": f"{self.url}/response/{n}",
            "trigger_id": f"{n}.{self._ts_base}.abcdef",
        }

    def signed_command_request(
        self,
        signing_secret: str,
        command: str = "/papers",
        text: str = "subscribe x",
        channel_id: str = "C1",
        team_id: str = "T0001",
        user_id: str = "U1",
        timestamp: int | None = None,
    ) -> tuple[bytes, dict[str, str]]:
        """A slash-command POST exactly as Slack signs and form-encodes it, for the daemon's
        `/slack/events`; pass an old `timestamp` to test replay protection."""
        payload = self.slash_payload(
            command, text, channel_id=channel_id, team_id=team_id, user_id=user_id
        )
        body = urlencode(payload).encode()
        ts = str(int(time.time()) if timestamp is None else timestamp)
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Slack-Request-Timestamp": ts,
            "X-Slack-Signature": slack_signature(signing_secret, ts, body),
            "User-Agent": "Slackbot 1.0 (+https://api.slack.com/robots)",
        }
        return body, headers

    async def send_slash_command(
        self, payload: dict[str, Any] | None = None, timeout: float = 60, **fields: Any
    ) -> dict[str, Any]:
        """Deliver a slash command over the Socket Mode connection and return the ack's
        payload ({} for an empty ack). Builds the payload from `fields` when none is given."""
        await self.wait_for(lambda: bool(self._sockets), timeout)
        envelope_id = f"env-{next(self._envelope_ids)}"
        ack: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._acks[envelope_id] = ack
        await self._sockets[-1].send_json({
            "envelope_id": envelope_id,
            "type": "slash_commands",
            "accepts_response_payload": True,
            "payload": payload if payload is not None else self.slash_payload(**fields),
        })
        try:
            async with asyncio.timeout(timeout):
                message = await ack
        except TimeoutError:
            raise AssertionError(f"no ack for {envelope_id} within {timeout}s") from None
        finally:
            self._acks.pop(envelope_id, None)
        return message.get("payload") or {}

    # -- HTTP --------------------------------------------------------------------------------

    async def _dispatch(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        params = await _read_params(request)
        channel = params.get("channel")
        status, body, headers = await self._answer(method, params, request)
        error = None if body.get("ok") else body.get("error")
        self.calls.append(SlackCall(method, params, status, error, time.monotonic(), channel))
        self._changes.bump()
        if "page" in body:
            content_type, text = body["page"]
            return web.Response(status=status, text=text, content_type=content_type)
        return web.json_response(body, status=status, headers=headers)

    async def _answer(
        self, method: str, params: dict[str, Any], request: web.Request
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        auth_error = self._auth_error(method, params, request)
        if auth_error:
            return 200, {"ok": False, "error": auth_error}, {}
        handler = self._methods().get(method)
        if handler is None:
            return 200, {"ok": False, "error": "unknown_method"}, {}
        failure = self._take_failure(method, params.get("channel"))
        if failure is not None:
            headers = {}
            if failure.retry_after is not None:
                headers["Retry-After"] = str(failure.retry_after)
            answer = {"ok": False, "error": failure.error}
            if failure.page is not None:
                answer["page"] = failure.page
            return failure.status, answer, headers
        return 200, handler(params), {}

    def _auth_error(self, method: str, params: dict[str, Any], request: web.Request) -> str | None:
        header = request.headers.get("Authorization", "")
        token = header.removeprefix("Bearer ").strip() if header else params.get("token")
        if not token:
            return "not_authed"
        expected = self.app_token if method in _APP_TOKEN_METHODS else self.bot_token
        if token == expected:
            return None
        if method in _APP_TOKEN_METHODS and token == self.bot_token:
            return "not_allowed_token_type"
        return "invalid_auth"

    def _methods(self) -> dict[str, Callable[[dict[str, Any]], dict[str, Any]]]:
        return {
            "auth.test": self._auth_test,
            "chat.postMessage": self._post_message,
            "conversations.info": self._conversations_info,
            "apps.connections.open": self._connections_open,
        }

    def _auth_test(self, params: dict[str, Any]) -> dict[str, Any]:
        return {
            "ok": True, "url": "https://test.slack.com/", "team": "Test Workspace",
            "user": "dailypapers", "team_id": self.team_id, "user_id": self.user_id,
            "bot_id": self.bot_id, "is_enterprise_install": False,
        }

    def _conversations_info(self, params: dict[str, Any]) -> dict[str, Any]:
        info = self.channel_info(str(params.get("channel", "")))
        if not info.pop("exists"):
            return {"ok": False, "error": "channel_not_found"}
        return {"ok": True, "channel": {**info, "is_channel": not info["is_private"]}}

    def _connections_open(self, params: dict[str, Any]) -> dict[str, Any]:
        ticket = f"t{len(self._tickets) + 1}"
        self._tickets.add(ticket)
        ws_url = self.url.replace("http://", "ws://")
        return {"ok": True, "url": f"{ws_url}/socket?ticket={ticket}"}

    def _post_message(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = str(params.get("channel") or "")
        refusal = self._post_refusal(channel, params)
        if refusal:
            return refusal
        ts = f"{self._ts_base}.{next(self._ts):06d}"
        blocks = params.get("blocks")
        self.posts.append(SlackPost(
            channel=channel, text=params.get("text"), blocks=blocks,
            thread_ts=params.get("thread_ts"), unfurl_links=params.get("unfurl_links"),
            unfurl_media=params.get("unfurl_media"), ts=ts, at=time.monotonic(), params=params,
        ))
        message = {"type": "message", "text": params.get("text") or "", "user": self.user_id,
                   "bot_id": self.bot_id, "ts": ts}
        if blocks:
            message["blocks"] = blocks
        return {"ok": True, "channel": channel, "ts": ts, "message": message}

    def _post_refusal(self, channel: str, params: dict[str, Any]) -> dict[str, Any] | None:
        info = self.channel_info(channel)
        if not channel or not info["exists"]:
            return {"ok": False, "error": "channel_not_found"}
        if info["is_archived"]:
            return {"ok": False, "error": "is_archived"}
        if not info["is_member"]:
            return {"ok": False, "error": "not_in_channel"}
        text, blocks = params.get("text"), params.get("blocks")
        if not text and not blocks:
            return {"ok": False, "error": "no_text"}
        if text and len(text) > MAX_MESSAGE_TEXT:
            return {"ok": False, "error": "msg_too_long"}
        if blocks is not None:
            return blocks_refusal(blocks)
        return None

    async def _socket(self, request: web.Request) -> web.StreamResponse:
        if request.query.get("ticket") not in self._tickets:
            return web.Response(status=401, text="invalid ticket")
        ws = web.WebSocketResponse()  # autoping answers the SDK's sdk-ping-pong pings
        await ws.prepare(request)
        self._sockets.append(ws)
        self.socket_connections += 1
        self._changes.bump()
        await ws.send_json({
            "type": "hello", "num_connections": len(self._sockets),
            "debug_info": {"host": "fake-slack", "approximate_connection_time": 18060},
            "connection_info": {"app_id": "A0001"},
        })
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    self._on_socket_message(json.loads(msg.data))
        finally:
            self._sockets.remove(ws)
            self._changes.bump()
        return ws

    def _on_socket_message(self, message: dict[str, Any]) -> None:
        self.socket_messages.append(message)
        ack = self._acks.get(str(message.get("envelope_id")))
        if ack is not None and not ack.done():
            ack.set_result(message)
        self._changes.bump()

    async def _response_url(self, request: web.Request) -> web.Response:
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = dict(await request.post())
        self.responses.append(ResponseUrlPost(int(request.match_info["n"]), body, time.monotonic()))
        self._changes.bump()
        return web.json_response({"ok": True})


def blocks_refusal(blocks: Any) -> dict[str, Any] | None:
    """Slack's invalid_blocks answer, with its `[json-pointer:…]` messages, or None if fine."""
    if not isinstance(blocks, list):
        return _invalid(["must be an array [json-pointer:/blocks]"])
    errors: list[str] = []
    if len(blocks) > MAX_BLOCKS:
        errors.append(f"no more than {MAX_BLOCKS} items allowed [json-pointer:/blocks]")
    block_ids: set[str] = set()
    total_text = 0
    for index, block in enumerate(blocks):
        where = f"/blocks/{index}"
        errors.extend(_block_errors(block, where, block_ids))
        total_text += sum(len(t) for t in _texts(block))
    if errors:
        return _invalid(errors)
    if total_text > MAX_BLOCKS_TEXT:
        return {"ok": False, "error": "msg_blocks_too_long"}
    return None


def _invalid(errors: list[str]) -> dict[str, Any]:
    return {"ok": False, "error": "invalid_blocks", "errors": errors,
            "response_metadata": {"messages": [f"[ERROR] {e}" for e in errors]}}


def _block_errors(block: Any, where: str, block_ids: set[str]) -> list[str]:
    if not isinstance(block, dict) or block.get("type") not in _BLOCK_TYPES:
        kind = block.get("type") if isinstance(block, dict) else block
        return [f"unsupported type `{kind}` [json-pointer:{where}/type]"]
    errors: list[str] = []
    block_id = block.get("block_id")
    if block_id is not None:
        if len(block_id) > MAX_BLOCK_ID or block_id in block_ids:
            errors.append(f"invalid or duplicate block_id [json-pointer:{where}/block_id]")
        block_ids.add(block_id)
    kind = block["type"]
    if kind == "section":
        errors.extend(_section_errors(block, where))
    elif kind == "header":
        errors.extend(_text_errors(block.get("text"), f"{where}/text", MAX_HEADER_TEXT,
                                   plain_only=True))
    elif kind == "context":
        elements = block.get("elements") or []
        if not 1 <= len(elements) <= MAX_CONTEXT_ELEMENTS:
            errors.append(f"must have 1 to {MAX_CONTEXT_ELEMENTS} items "
                          f"[json-pointer:{where}/elements]")
        for i, element in enumerate(elements):
            if isinstance(element, dict) and element.get("type") != "image":
                errors.extend(_text_errors(element, f"{where}/elements/{i}", MAX_SECTION_TEXT))
    return errors


def _section_errors(block: dict[str, Any], where: str) -> list[str]:
    text, fields = block.get("text"), block.get("fields")
    if text is None and not fields:
        return [f"must provide either text or fields [json-pointer:{where}]"]
    errors: list[str] = []
    if text is not None:
        errors.extend(_text_errors(text, f"{where}/text", MAX_SECTION_TEXT))
    if fields:
        if len(fields) > MAX_SECTION_FIELDS:
            errors.append(f"no more than {MAX_SECTION_FIELDS} items allowed "
                          f"[json-pointer:{where}/fields]")
        for i, item in enumerate(fields):
            errors.extend(_text_errors(item, f"{where}/fields/{i}", MAX_FIELD_TEXT))
    return errors


def _text_errors(obj: Any, where: str, limit: int, plain_only: bool = False) -> list[str]:
    allowed = ("plain_text",) if plain_only else ("plain_text", "mrkdwn")
    if not isinstance(obj, dict) or obj.get("type") not in allowed:
        return [f"must be a text object of type {' or '.join(allowed)} [json-pointer:{where}]"]
    if obj["type"] == "mrkdwn" and "emoji" in obj:
        return [f"invalid additional property: emoji [json-pointer:{where}]"]
    text = obj.get("text")
    if not isinstance(text, str) or not text:
        return [f"must be more than 0 characters [json-pointer:{where}/text]"]
    if len(text) > limit:
        return [f"must be less than {limit + 1} characters [json-pointer:{where}/text]"]
    return []


def _texts(node: Any) -> list[str]:
    """Every text string inside a block, for Slack's total-size ceiling."""
    if isinstance(node, list):
        return [t for item in node for t in _texts(item)]
    if not isinstance(node, dict):
        return []
    found: list[str] = []
    for key, value in node.items():
        if key == "text" and isinstance(value, str):
            found.append(value)
        else:
            found.extend(_texts(value))
    return found


async def _read_params(request: web.Request) -> dict[str, Any]:
    params: dict[str, Any] = dict(request.query)
    if request.content_type == "application/json":
        raw = await request.read()
        params.update(json.loads(raw) if raw else {})
    elif request.can_read_body:
        params.update({k: v for k, v in (await request.post()).items() if isinstance(v, str)})
    for key in ("blocks", "attachments", "metadata"):
        if isinstance(params.get(key), str):  # form-encoded callers send these as JSON text
            params[key] = json.loads(params[key])
    for key in ("unfurl_links", "unfurl_media", "mrkdwn", "reply_broadcast"):
        if isinstance(params.get(key), str):
            params[key] = params[key].lower() in ("1", "true")
    return params
