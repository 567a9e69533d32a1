"""The Slack face: slash commands through slack-bolt and channel digests through SlackNotifier.

Commands arrive on the daemon's web server (`POST /slack/events`, signed) or over Socket Mode
when SLACK_APP_TOKEN is set; both feed the channel-agnostic `bot.faces.commands.Commands`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.errors import SlackApiError
from slack_sdk.signature import SignatureVerifier

from bot.app import App
from bot.config import SlackConfig, WebConfig
from bot.faces.commands import EXAMPLE, Chat, Commands, Reply, help_text
from bot.fetch.keywords import straight_quotes
from bot.logs import RateLimitedLog
from notifiers.slack import SlackNotifier, SlackWebClient, error_of, escape, pack_reply
from storage import subscribers as sub_repo
from storage.records import Subscriber

log = logging.getLogger(__name__)

EVENTS_PATH = "/slack/events"
MAX_BODY = 32 * 1024  # a slash command is ~1 KB; events a few KB
VERBS = ("subscribe", "unsubscribe", "list", "latest", "digest", "timezone", "feed", "help")
ALIASES = {"/subscribe": "subscribe", "/unsubscribe": "unsubscribe", "/list": "list",
           "/latest": "latest"}
COMMANDS = ("/papers", *ALIASES)
SOCKET_TOKEN_ERRORS = frozenset({"invalid_auth", "not_authed", "not_allowed_token_type",
                                 "token_revoked", "account_inactive"})
MAX_REPLY_PAPERS = 20

_LINK = re.compile(r"<([^<>|]*)(?:\|([^<>]*))?>")
_USER_ID = re.compile(r"^[UW][A-Z0-9]+$")

INVITE = ("I can't post in this channel yet, so I would not be able to send papers here. "
          "Invite me first: type `/invite @Daily Papers` in the channel (or open the channel's "
          "details → Integrations → Add apps), then run the command again.")
ARCHIVED = "This channel is archived: I can't post papers here."
OTHER_TEAM = "This Daily Papers app serves another Slack workspace."
NO_IDENTITY = "Daily Papers cannot reach Slack to check this workspace right now; try again " \
              "in a minute."
ACK_LOOKUP_SECONDS = 1.0  # per Slack call made before the 3-second ack
# Slack drops a command not acknowledged within 3 s. An answer not ready after this long (the
# store busy, another process holding its lock) is acknowledged with WORKING and follows
# through the command's response_url; the command itself is carried out once either way.
ACK_BUDGET = 2.0
WORKING = "Working on it: the answer follows in a moment."
NOT_ALLOWED = "Daily Papers is not enabled in this channel. Ask the operator to add it to " \
              "`allowed_channels`."
REPLAY_WINDOW = 5 * 60  # Slack's verifier accepts a timestamp this far from now, either way


def unescape(text: str) -> str:
    """Slack wire text → what the user typed: `<…|label>` → label, entities, curly quotes."""
    def link(m: re.Match[str]) -> str:
        target, label = m.group(1), m.group(2)
        return label if label else target.removeprefix("mailto:")

    text = _LINK.sub(link, text)
    text = text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    return straight_quotes(text)


def parse_command(command: str, text: str) -> tuple[str, str]:
    """`/papers subscribe x` and `/subscribe x` → ("subscribe", "x"); bare `/papers` is help."""
    text = unescape(text).strip()
    if command in ALIASES:
        return ALIASES[command], text
    verb, _, arg = text.partition(" ")
    if not verb:
        return "help", ""
    return verb.lower(), arg.strip()


def slack_help() -> str:
    """The shared help, in Slack's words: no /help here, `/papers` alone shows this."""
    text = help_text().replace("/help — this message\n", "")
    return (f"{text}\n\nEvery command also works as /papers VERB, e.g. /papers subscribe "
            f"{EXAMPLE}; /papers alone shows this help. Papers arrive in this channel.")


def reply_bodies(reply: Reply) -> list[dict[str, Any]]:
    """A reply as ephemeral messages, packed like every Slack message: the first answers the
    command (its ack), the others follow through the command's response_url."""
    text = f"{reply.text}\n\n{reply.note}" if reply.note else reply.text
    messages = pack_reply(text, reply.papers[:MAX_REPLY_PAPERS])
    return [{"response_type": "ephemeral", "text": m.text, "blocks": m.blocks}
            for m in messages] or [{"response_type": "ephemeral", "text": escape(text)}]


def reply_body(reply: Reply) -> dict[str, Any]:
    """The reply's first message: what answers the command at once."""
    return reply_bodies(reply)[0]


class ReplayCache:
    """Signatures of the signed requests accepted in the last few minutes: a recorded request
    sent again inside Slack's 5-minute window is refused instead of re-applying its command.

    Only validly signed requests are recorded, so the size is bounded by what Slack (or a
    holder of the signing secret) sent in the window."""

    def __init__(self, window: float = REPLAY_WINDOW,
                 clock: Callable[[], float] = time.time) -> None:
        self.window = window
        self.clock = clock
        self._seen: OrderedDict[str, float] = OrderedDict()  # signature → forget after

    def first_time(self, signature: str, timestamp: int) -> bool:
        """True the first time a signature is seen (and remembers it); False for a replay."""
        now = self.clock()
        while self._seen and next(iter(self._seen.values())) <= now:
            self._seen.popitem(last=False)
        if signature in self._seen:
            return False
        # A timestamp up to one window in the future is valid too: remember past its end.
        forget = max(now, timestamp) + self.window + 1
        self._seen[signature] = forget
        return True


class _UnusedTokenNotice(logging.Filter):
    """Bolt warns that SLACK_BOT_TOKEN is unused because we hand it our configured client."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "`token` will be unused" not in record.getMessage()


class SlackFace:
    """Slack in the daemon: `routes()` for HTTP mode, Socket Mode in `start()`, the notifier."""

    name = "slack"

    def __init__(self, cfg: SlackConfig, web: WebConfig, bot_token: str, signing_secret: str,
                 app_token: str) -> None:
        self.cfg = cfg
        self.web = web
        self.app_token = app_token
        self.socket_mode = bool(app_token)  # wins over HTTP when both are set
        self.http_mode = bool(signing_secret) and not self.socket_mode
        self._verifier = SignatureVerifier(signing_secret) if signing_secret else None
        self._replays = ReplayCache()
        self._replay_log = RateLimitedLog(log)
        self.notifier = SlackNotifier(cfg.api_url, bot_token, max_in_flight=cfg.max_in_flight)
        bolt_log = logging.getLogger("bot.faces.slack.bolt")
        bolt_log.addFilter(_UnusedTokenNotice())
        self.bolt = AsyncApp(client=self.notifier.client, signing_secret=signing_secret,
                             request_verification_enabled=self.http_mode, name="daily-papers",
                             logger=bolt_log, user_facing_authorize_error_message=NO_IDENTITY)
        for command in COMMANDS:
            self.bolt.command(command)(self._on_command)
        self.bolt.event("member_joined_channel")(self._on_member_joined)
        self._app: App | None = None
        self._commands: Commands | None = None
        self._socket: AsyncSocketModeHandler | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # -- Face -------------------------------------------------------------------------------

    def routes(self) -> list[web.RouteDef]:
        return [web.post(EVENTS_PATH, self._http)] if self.http_mode else []

    async def start(self, app: App) -> None:
        self._app = app
        self._commands = Commands(app, channel="slack", allowed=self._allowed)
        await self.notifier.identity()
        if self.socket_mode:
            self._spawn(self._connect_socket())
        elif self.http_mode:
            log.info("slack: slash commands at %s%s", self.web.public_url.rstrip("/"),
                     EVENTS_PATH)
        else:
            log.info("slack: digests only; set SLACK_SIGNING_SECRET or SLACK_APP_TOKEN for "
                     "slash commands")

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._socket is not None:
            with contextlib.suppress(Exception):
                await self._socket.close_async()
            self._socket = None

    async def tell(self, sub: Subscriber, text: str) -> None:
        """A one-off note in the channel (e.g. arXiv rejected a keyword)."""
        await self.notifier.post(sub.address, escape(text))

    # -- transports ---------------------------------------------------------------------------

    async def _http(self, request: web.Request) -> web.StreamResponse:
        """Bolt's aiohttp adapter on the daemon's server, after a body-size check."""
        body = await _read_limited(request, MAX_BODY)
        if body is None:
            return web.Response(status=413, text="request body too large")
        # Check the signature ourselves first: bolt's request parsing raises on malformed
        # bodies and timestamps, and an unsigned request must not reach it (nor the log).
        timestamp = request.headers.get("X-Slack-Request-Timestamp", "")
        signature = request.headers.get("X-Slack-Signature", "")
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            return web.json_response({"error": "malformed request"}, status=400)
        if (self._verifier is None or not timestamp.isdigit()
                or not self._verifier.is_valid(text, timestamp, signature)):
            return web.json_response({"error": "invalid request"}, status=401)
        if not self._replays.first_time(signature, int(timestamp)):
            self._replay_log.log(logging.WARNING, "slack: refused a replayed request (its "
                                 "signature was already used)")
            return web.json_response({"error": "replayed request"}, status=401)
        try:
            bolt_request = AsyncBoltRequest(body=text,
                                            query=request.query_string,
                                            headers=request.headers)  # type: ignore[arg-type]
        except (ValueError, TypeError, AttributeError, KeyError):
            return web.json_response({"error": "malformed request"}, status=400)
        return await to_aiohttp_response(await self.bolt.async_dispatch(bolt_request))

    async def _connect_socket(self) -> None:
        """Open Socket Mode, retrying while Slack cannot be reached; the SDK reconnects after."""
        delay = 1.0
        while True:
            handler = AsyncSocketModeHandler(
                self.bolt, app_token=self.app_token,
                web_client=SlackWebClient(base_url=self.cfg.api_url))
            try:
                await handler.connect_async()
            except SlackApiError as exc:
                error = error_of(exc)
                if error in SOCKET_TOKEN_ERRORS:
                    log.error("slack: Socket Mode refused SLACK_APP_TOKEN (%s): use an "
                              "app-level token (xapp-…) with connections:write", error)
                    return
                log.warning("slack: Socket Mode not opened (%s); retrying in %.0f s", error,
                            delay)
            except Exception as exc:  # network: try again
                log.warning("slack: Socket Mode connection failed (%s); retrying in %.0f s",
                            exc, delay)
            else:
                self._socket = handler
                log.info("slack: Socket Mode connected")
                return
            with contextlib.suppress(Exception):
                await handler.close_async()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 60.0)

    # -- commands ----------------------------------------------------------------------------

    async def _on_command(self, ack: Callable[..., Awaitable[Any]], command: dict[str, Any],
                          respond: Callable[..., Awaitable[Any]]) -> None:
        answering = asyncio.ensure_future(self._answer(command))
        await asyncio.wait({answering}, timeout=ACK_BUDGET)
        if not answering.done():
            await ack(response_type="ephemeral", text=WORKING)
            self._spawn(self._late(answering, command, respond))
            return
        reply = answering.result()
        first, *rest = reply_bodies(reply)
        await ack(**first)
        if rest or reply.announce or reply.followup is not None:
            self._spawn(self._after(reply, command, respond, rest))

    async def _late(self, answering: asyncio.Future[Reply], command: dict[str, Any],
                    respond: Callable[..., Awaitable[Any]]) -> None:
        """An answer that missed the ack: all of it through response_url."""
        try:
            reply = await answering
        except Exception:
            log.exception("slack: %s failed", command.get("command"))
            reply = Reply("Something went wrong on our side; please try again later.")
        await self._after(reply, command, respond, reply_bodies(reply))

    async def _answer(self, command: dict[str, Any]) -> Reply:
        assert self._commands is not None
        try:  # Slack gives up on an ack after 3 s: every lookup before it is bounded
            async with asyncio.timeout(ACK_LOOKUP_SECONDS):
                identity = await self.notifier.identity()
        except TimeoutError:
            identity = None
        if identity is None:  # the workspace cannot be checked: refuse rather than guess
            return Reply(NO_IDENTITY)
        if command.get("team_id") != identity.team_id:
            log.warning("slack: refused a command from workspace %s", command.get("team_id"))
            return Reply(OTHER_TEAM)
        chat = Chat(channel="slack", address=str(command.get("channel_id", "")))
        if not self._allowed(chat):
            return Reply(NOT_ALLOWED)
        verb, arg = parse_command(str(command.get("command", "")), str(command.get("text", "")))
        if verb == "help":
            return Reply(slack_help())
        if verb not in VERBS:
            return Reply(f"Unknown command '/papers {verb}'.\n\n{slack_help()}")
        was_inactive = await self._is_inactive(chat.address)
        if verb == "subscribe":
            problem = await self._posting_problem(chat.address)
            if problem:
                return Reply(problem)
        reply = await self._commands.handle(chat, verb, arg)
        if was_inactive:  # Commands reactivated it: its waiting rows are due now
            assert self._app is not None
            self._app.wake_dispatcher()
        return reply

    async def _after(self, reply: Reply, command: dict[str, Any],
                     respond: Callable[..., Awaitable[Any]],
                     rest: list[dict[str, Any]]) -> None:
        """After the ack: the reply's other messages, the channel announcement, then any slow
        follow-up."""
        channel, user = str(command.get("channel_id", "")), str(command.get("user_id", ""))
        await _respond(respond, rest)
        await self._announce(channel, user, reply.announce)
        if reply.followup is None:
            return
        try:
            later = await reply.followup
        except Exception:
            log.exception("slack: follow-up of %s failed", command.get("command"))
            return
        await _respond(respond, reply_bodies(later))
        await self._announce(channel, user, later.announce)

    async def _announce(self, channel: str, user: str, line: str | None) -> None:
        """One line for the whole channel; the user's text is escaped, so it cannot ping."""
        if not line:
            return
        who = f" (<@{user}>)" if _USER_ID.match(user) else ""
        delivery, _ = await self.notifier.post(channel, escape(line.splitlines()[0]) + who)
        if delivery.reason:
            log.warning("slack: announcement in %s not posted: %s", channel, delivery.reason)

    def _allowed(self, chat: Chat) -> bool:
        return not self.cfg.allowed_channels or chat.address in self.cfg.allowed_channels

    async def _posting_problem(self, channel: str) -> str | None:
        """conversations.info: None when the bot can post here, else what to tell the user."""
        try:
            async with asyncio.timeout(ACK_LOOKUP_SECONDS):
                answer = await self.notifier.client.conversations_info(channel=channel)
        except SlackApiError as exc:
            error = error_of(exc)
            if error == "channel_not_found":  # private channels the bot is not in look absent
                return INVITE
            log.warning("slack: conversations.info %s failed (%s); not checked", channel, error)
            return None
        except Exception as exc:
            log.warning("slack: conversations.info %s failed (%s); not checked", channel, exc)
            return None
        info = answer.get("channel") or {}
        if info.get("is_archived"):
            return ARCHIVED
        if info.get("is_im") or info.get("is_member"):
            return None
        return INVITE

    # -- events -----------------------------------------------------------------------------

    async def _on_member_joined(self, event: dict[str, Any]) -> None:
        identity = await self.notifier.identity()
        if identity and event.get("user") == identity.user_id:
            await self._resume(str(event.get("channel", "")))

    async def _is_inactive(self, channel: str) -> bool:
        """A paused (or stopped) channel that sends any command is welcomed back by Commands."""
        assert self._app is not None
        sub = await self._app.store.call(sub_repo.find, "slack", channel)
        return sub is not None and not sub.active

    async def _resume(self, channel: str) -> None:
        assert self._app is not None
        sub = await self._app.store.call(sub_repo.find, "slack", channel)
        if sub is None or not _is_paused(sub):
            return
        if await self._app.store.call(sub_repo.reactivate, sub.id):
            log.info("slack: %s resumed", channel)
            self._app.wake_dispatcher()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


async def _respond(respond: Callable[..., Awaitable[Any]],
                   bodies: list[dict[str, Any]]) -> None:
    """Ephemeral messages through the command's response_url, in order."""
    for body in bodies:
        try:
            await respond(**body, replace_original=False)
        except Exception as exc:  # the response_url expired or Slack is unreachable
            log.warning("slack: reply not delivered to response_url: %s", exc)
            return


def _is_paused(sub: Subscriber) -> bool:
    return not sub.active and (sub.inactive_reason or "").startswith("paused")


async def _read_limited(request: web.Request, limit: int) -> bytes | None:
    """The body, or None when it is (or says it is) larger than `limit`."""
    if request.content_length is not None and request.content_length > limit:
        return None
    body = await request.read()  # the web server read it already, within its deadline
    return body if len(body) <= limit else None
