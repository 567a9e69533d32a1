"""Test double for the deliver stage: a loopback Telegram Bot API server that python-telegram-bot
reaches through `base_url`, recording every call and answering with programmable failures."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tests.fakes.changes import Changes

MAX_TEXT_UTF16 = 4096

# Form bodies carry non-string values JSON-encoded (PTB's RequestData); strings arrive raw.
_JSON_FIELDS = frozenset({
    "chat_id", "user_id", "message_thread_id", "offset", "limit", "timeout", "allowed_updates",
    "link_preview_options", "disable_web_page_preview", "reply_parameters", "reply_to_message_id",
    "reply_markup", "commands", "scope", "entities", "drop_pending_updates",
    "disable_notification", "protect_content", "allow_sending_without_reply",
})
_ALLOWED_TAGS = frozenset({
    "b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "a", "code", "pre",
    "blockquote", "tg-spoiler", "span", "tg-emoji",
})
_ENTITY = re.compile(r"&(?:#(\d+)|#[xX]([0-9a-fA-F]+)|(lt|gt|amp|quot));")
_NAMED = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}
_Answer = tuple[int, dict[str, Any]]  # HTTP status and JSON body
_ATTR = re.compile(r"""([\w-]+)\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'>]+))""")


class EntityParseError(ValueError):
    """Raised with Telegram's own wording when HTML would not survive the real parser."""


def utf16_len(text: str) -> int:
    """Telegram counts message length in UTF-16 code units, not code points."""
    return len(text.encode("utf-16-le")) // 2


def visible_text(html: str) -> str:
    """Parse Telegram's HTML subset like the Bot API does and return the text a user sees."""
    out: list[str] = []
    stack: list[str] = []
    i = 0
    while i < len(html):
        ch = html[i]
        if ch == "&":
            i = _take_entity(html, i, out)
        elif ch == "<":
            i = _take_tag(html, i, stack)
        else:
            out.append(ch)
            i += 1
    if stack:
        raise EntityParseError(f'Can\'t find end tag corresponding to start tag "{stack[-1]}"')
    return "".join(out)


def _take_entity(html: str, i: int, out: list[str]) -> int:
    m = _ENTITY.match(html, i)
    if m is None:  # Telegram keeps an unknown or bare "&" literally
        out.append("&")
        return i + 1
    dec, hexa, named = m.groups()
    out.append(_NAMED[named] if named else chr(int(dec) if dec else int(hexa, 16)))
    return m.end()


def _take_tag(html: str, i: int, stack: list[str]) -> int:
    offset = len(html[:i].encode())
    end = html.find(">", i)
    if end == -1:
        raise EntityParseError(f"Unclosed start tag at byte offset {offset}")
    inner = html[i + 1 : end]
    if inner.startswith("/"):
        name = inner[1:].strip().lower()
        if not stack:
            raise EntityParseError(f"Unexpected end tag at byte offset {offset}")
        if name != stack[-1]:
            raise EntityParseError(
                f'Unmatched end tag at byte offset {offset}, expected "</{stack[-1]}>", '
                f'found "</{name}>"'
            )
        stack.pop()
        return end + 1
    name, _, rest = inner.partition(" ")
    name = name.strip().lower()
    if name not in _ALLOWED_TAGS:
        raise EntityParseError(f'Unsupported start tag "{name}" at byte offset {offset}')
    attrs = {m[1].lower(): m[2] or m[3] or m[4] or "" for m in _ATTR.finditer(rest)}
    if name == "span" and attrs.get("class") != "tg-spoiler":
        raise EntityParseError(f'Tag "span" must have class "tg-spoiler" at byte offset {offset}')
    stack.append(name)
    return end + 1


@dataclass(frozen=True)
class Failure:
    """One programmed error answer, shaped exactly like the Bot API's error bodies."""

    status: int
    description: str
    parameters: dict[str, Any] | None = None

    @classmethod
    def retry_after(cls, seconds: int = 1) -> Failure:
        return cls(429, f"Too Many Requests: retry after {seconds}", {"retry_after": seconds})

    @classmethod
    def blocked(cls) -> Failure:
        return cls(403, "Forbidden: bot was blocked by the user")

    @classmethod
    def kicked(cls) -> Failure:
        return cls(403, "Forbidden: bot was kicked from the group chat")

    @classmethod
    def bad_request(cls, description: str = "Bad Request: chat not found") -> Failure:
        return cls(400, description)

    @classmethod
    def migrated(cls, new_chat_id: int) -> Failure:
        return cls(
            400,
            "Bad Request: group chat was upgraded to a supergroup chat",
            {"migrate_to_chat_id": new_chat_id},
        )

    @classmethod
    def server_error(cls, status: int = 500) -> Failure:
        text = {502: "Bad Gateway"}.get(status, "Internal Server Error")
        return cls(status, text)

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "ok": False, "error_code": self.status, "description": self.description,
        }
        if self.parameters:
            body["parameters"] = self.parameters
        return body


@dataclass
class _Programmed:
    failure: Failure
    times: int | None  # None: until cleared


@dataclass
class Call:
    """Any Bot API request the fake received, including refused ones."""

    method: str
    params: dict[str, Any]
    status: int
    at: float
    chat_id: int | str | None = None


@dataclass
class SentMessage:
    """A sendMessage that Telegram accepted: what the chat would show."""

    chat_id: int | str
    text: str
    visible_text: str
    parse_mode: str | None
    message_thread_id: int | None
    link_preview_options: dict[str, Any] | None
    disable_web_page_preview: bool | None
    reply_to: int | None
    reply_markup: Any
    message_id: int
    at: float

    @property
    def previews_disabled(self) -> bool:
        if self.link_preview_options is not None:
            return bool(self.link_preview_options.get("is_disabled"))
        return bool(self.disable_web_page_preview)


class FakeTelegram:
    """A Bot API server on 127.0.0.1:0; `async with FakeTelegram() as fake:` in the test's loop."""

    def __init__(
        self,
        token: str = "123456:TEST-token",
        *,
        username: str = "DailyPapersBot",
        bot_id: int = 123456,
        first_name: str = "Daily Papers",
    ) -> None:
        self.token = token
        self.bot_user = {
            "id": bot_id, "is_bot": True, "first_name": first_name, "username": username,
            "can_join_groups": True, "can_read_all_group_messages": False,
            "supports_inline_queries": False,
        }
        self.url = ""
        self.calls: list[Call] = []
        self.sent: list[SentMessage] = []
        self.commands_set: list[dict[str, Any]] = []
        self.chats: dict[int | str, dict[str, Any]] = {}
        self.migrated: dict[int, int] = {}
        self.confirmed_offset = 0
        self.polls_waiting = 0  # getUpdates requests currently long-polling
        self._member_status: dict[tuple[int | str, int | None], str] = {}
        self._updates: list[dict[str, Any]] = []
        self._update_ids = itertools.count(1)
        self._message_ids: dict[int | str, itertools.count[int]] = {}
        self._chat_failures: dict[tuple[str, int | str], deque[_Programmed]] = {}
        self._global_failures: dict[str, deque[_Programmed]] = {}
        self._poll_generation = 0
        self._closing = False
        self.stalled: set[int | str] = set()  # chats whose sendMessage gets no answer for now
        self.stalls_waiting = 0
        # chats whose sendMessage is posted but answered with a result no client can read (a
        # proxy in the way, an API change)
        self.garbled: set[int | str] = set()
        self._changes = Changes()
        self._runner: web.AppRunner | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """What goes into `ApplicationBuilder.base_url` / `[telegram] api_url` + "/bot"."""
        return f"{self.url}/bot"

    @property
    def base_file_url(self) -> str:
        return f"{self.url}/file/bot"

    async def __aenter__(self) -> FakeTelegram:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Listen on 127.0.0.1 with a free port; `url` is valid afterwards."""
        app = web.Application()
        app.router.add_route("*", "/bot{token}/{method}", self._dispatch)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        self._closing = True
        self._changes.bump()
        if self._runner is not None:
            await self._runner.cleanup()

    # -- waiting -----------------------------------------------------------------------------

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 60) -> None:
        """Return once `predicate()` holds; re-checked after every request or pushed update."""
        await self._changes.wait_for(predicate, timeout, lambda: (
            f"last calls: {[(c.method, c.chat_id, c.status) for c in self.calls[-10:]]}; "
            f"sent: {[(m.chat_id, m.visible_text[:60]) for m in self.sent[-5:]]}"))

    async def wait_sent(self, count: int, chat_id: int | None = None, timeout: float = 60) -> None:
        """Wait until at least `count` messages were accepted (for one chat if given)."""
        await self.wait_for(lambda: len(self._sent_to(chat_id)) >= count, timeout)

    async def wait_updates_fetched(self, timeout: float = 60) -> None:
        """Wait until the bot confirmed every pushed update (its next getUpdates offset)."""
        await self.wait_for(lambda: not self._updates, timeout)

    # -- inspection --------------------------------------------------------------------------

    def messages_to(self, chat_id: int | str, thread_id: int | None = None) -> list[SentMessage]:
        return [
            m for m in self._sent_to(chat_id)
            if thread_id is None or m.message_thread_id == thread_id
        ]

    def calls_to(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]

    def arrivals(self, chat_id: int | str | None = None) -> list[float]:
        """monotonic() of every sendMessage request (accepted or not), for rate checks."""
        return [
            c.at for c in self.calls
            if c.method == "sendMessage" and (chat_id is None or c.chat_id == chat_id)
        ]

    def max_in_window(self, seconds: float, chat_id: int | str | None = None) -> int:
        """Most sendMessage requests that arrived within any `seconds`-long window."""
        times = self.arrivals(chat_id)
        best, start = 0, 0
        for end, t in enumerate(times):
            while start <= end and t - times[start] >= seconds:
                start += 1
            best = max(best, end - start + 1)
        return best

    def _sent_to(self, chat_id: int | str | None) -> list[SentMessage]:
        return [m for m in self.sent if chat_id is None or m.chat_id == chat_id]

    # -- programming answers -----------------------------------------------------------------

    def fail(
        self,
        failure: Failure,
        *,
        chat_id: int | str | None = None,
        method: str = "sendMessage",
        times: int | None = 1,
    ) -> None:
        """Answer the next `times` calls of `method` (to `chat_id`, else any) with `failure`.

        `times=None` keeps failing until `clear_failures()`. Per-chat entries win over global ones.
        """
        entry = _Programmed(failure, times)
        if chat_id is None:
            self._global_failures.setdefault(method, deque()).append(entry)
        else:
            self._chat_failures.setdefault((method, chat_id), deque()).append(entry)

    def block(self, chat_id: int | str) -> None:
        """The user blocked the bot: every later send to this chat gets 403."""
        self.fail(Failure.blocked(), chat_id=chat_id, times=None)

    def stall(self, chat_id: int | str) -> None:
        """sendMessage to this chat is read but not answered until `unstall` (or stop)."""
        self.stalled.add(chat_id)

    def unstall(self, chat_id: int | str) -> None:
        self.stalled.discard(chat_id)
        self._changes.bump()

    def clear_failures(self) -> None:
        self._chat_failures.clear()
        self._global_failures.clear()

    def set_member_status(
        self, chat_id: int | str, status: str, user_id: int | None = None
    ) -> None:
        """getChatMember answer: creator/administrator/member/restricted/left/kicked."""
        self._member_status[(chat_id, user_id)] = status

    def _take_failure(self, method: str, chat_id: int | str | None) -> Failure | None:
        queues = [self._global_failures.get(method)]
        if chat_id is not None:
            queues.insert(0, self._chat_failures.get((method, chat_id)))
        for queue in queues:
            if queue:
                entry = queue[0]
                if entry.times is not None:
                    entry.times -= 1
                    if entry.times <= 0:
                        queue.popleft()
                return entry.failure
        return None

    # -- building updates --------------------------------------------------------------------

    def push_update(self, update: dict[str, Any]) -> int:
        """Queue a raw update (its update_id is assigned here) for the next getUpdates."""
        update_id = next(self._update_ids)
        self._updates.append({**update, "update_id": update_id})
        self._changes.bump()
        return update_id

    def push_command(
        self,
        chat_id: int,
        text: str,
        *,
        user_id: int | None = None,
        chat_type: str = "private",
        thread_id: int | None = None,
        edited: bool = False,
        username: str = "alice",
    ) -> int:
        """A user's message starting with a command, with the `bot_command` entity Telegram adds."""
        message = self._user_message(chat_id, text, user_id, chat_type, username)
        command = text.split(maxsplit=1)[0] if text.strip() else ""
        if command.startswith("/"):
            message["entities"] = [
                {"type": "bot_command", "offset": 0, "length": utf16_len(command)}
            ]
        if thread_id is not None:
            message["message_thread_id"] = thread_id
            message["is_topic_message"] = True
            message["chat"]["is_forum"] = True
        if edited:
            message["edit_date"] = message["date"]
            return self.push_update({"edited_message": message})
        return self.push_update({"message": message})

    def push_text(self, chat_id: int, text: str, *, chat_type: str = "private") -> int:
        """A plain message without a command entity."""
        message = self._user_message(chat_id, text, None, chat_type, "alice")
        return self.push_update({"message": message})

    def push_my_chat_member(
        self,
        chat_id: int,
        new_status: str = "kicked",
        *,
        old_status: str = "member",
        chat_type: str | None = None,
        user_id: int | None = None,
    ) -> int:
        """The bot's own membership changed: blocked in a private chat, removed from a group."""
        chat = self._chat(chat_id, chat_type)
        actor = self._user(user_id if user_id is not None else abs(chat_id), "alice")
        return self.push_update({"my_chat_member": {
            "chat": chat,
            "from": actor,
            "date": int(time.time()),
            "old_chat_member": _member(self.bot_user, old_status),
            "new_chat_member": _member(self.bot_user, new_status),
        }})

    def push_migration(self, old_chat_id: int, new_chat_id: int, *, both: bool = True) -> int:
        """A group became a supergroup. Telegram posts `migrate_to_chat_id` in the old group and,
        with `both`, `migrate_from_chat_id` in the new one; later sends to the old id get 400."""
        self.migrated[old_chat_id] = new_chat_id
        old = self._service_message(old_chat_id, "group", {"migrate_to_chat_id": new_chat_id})
        first = self.push_update({"message": old})
        if both:
            new = self._service_message(
                new_chat_id, "supergroup", {"migrate_from_chat_id": old_chat_id}
            )
            self.push_update({"message": new})
        return first

    def _user_message(
        self, chat_id: int, text: str, user_id: int | None, chat_type: str, username: str
    ) -> dict[str, Any]:
        if user_id is None:
            user_id = chat_id if chat_type == "private" else 4242
        return {
            "message_id": self._next_message_id(chat_id),
            "date": int(time.time()),
            "chat": self._chat(chat_id, chat_type),
            "from": self._user(user_id, username),
            "text": text,
        }

    def _service_message(
        self, chat_id: int, chat_type: str, extra: dict[str, Any]
    ) -> dict[str, Any]:
        return {
            "message_id": self._next_message_id(chat_id),
            "date": int(time.time()),
            "chat": self._chat(chat_id, chat_type),
            "from": self._user(4242, "alice"),
            **extra,
        }

    @staticmethod
    def _user(user_id: int, username: str) -> dict[str, Any]:
        return {"id": user_id, "is_bot": False, "first_name": username.title(),
                "username": username}

    def _chat(self, chat_id: int | str, chat_type: str | None = None) -> dict[str, Any]:
        known = self.chats.get(chat_id, {})
        if chat_type is None:
            chat_type = known.get("type") or _infer_type(chat_id)
        chat: dict[str, Any] = {"id": chat_id, "type": chat_type}
        if chat_type == "private":
            chat["first_name"] = "Alice"
        else:
            chat["title"] = f"Group {chat_id}"
        return {**chat, **known}

    def _next_message_id(self, chat_id: int | str) -> int:
        return next(self._message_ids.setdefault(chat_id, itertools.count(1)))

    # -- HTTP --------------------------------------------------------------------------------

    async def _dispatch(self, request: web.Request) -> web.Response:
        at = time.monotonic()  # arrival, not completion: long polls finish much later
        method = request.match_info["method"]
        params = await _read_params(request)
        chat_id = _as_chat_id(params.get("chat_id"))
        if request.match_info["token"] != self.token:
            status, body = 401, {"ok": False, "error_code": 401, "description": "Unauthorized"}
        else:
            status, body = await self._answer(method, params, chat_id, at)
        self.calls.append(Call(method, params, status, at, chat_id))
        self._changes.bump()
        return web.json_response(body, status=status)

    async def _answer(
        self, method: str, params: dict[str, Any], chat_id: int | str | None, at: float
    ) -> _Answer:
        handler = self._methods().get(method)
        if handler is None:
            return 404, {"ok": False, "error_code": 404, "description": "Not Found"}
        if isinstance(chat_id, int) and chat_id in self.migrated:
            return _error(Failure.migrated(self.migrated[chat_id]))
        failure = self._take_failure(method, chat_id)
        if failure is not None:
            return _error(failure)
        return await handler(params, at)

    def _methods(self) -> dict[str, Callable[[dict[str, Any], float], Any]]:
        return {
            "getMe": self._get_me,
            "deleteWebhook": self._delete_webhook,
            "setWebhook": self._true,
            "close": self._true,
            "logOut": self._true,
            "setMyCommands": self._set_my_commands,
            "getMyCommands": self._get_my_commands,
            "deleteMyCommands": self._true,
            "getUpdates": self._get_updates,
            "sendMessage": self._send_message,
            "sendChatAction": self._true,
            "getChatMember": self._get_chat_member,
            "getChat": self._get_chat,
        }

    async def _true(self, params: dict[str, Any], at: float) -> _Answer:
        return _ok(True)

    async def _delete_webhook(self, params: dict[str, Any], at: float) -> _Answer:
        if params.get("drop_pending_updates"):
            self._updates.clear()
        return _ok(True)

    async def _get_me(self, params: dict[str, Any], at: float) -> _Answer:
        return _ok(self.bot_user)

    async def _set_my_commands(self, params: dict[str, Any], at: float) -> _Answer:
        self.commands_set.append(params)
        return _ok(True)

    async def _get_my_commands(self, params: dict[str, Any], at: float) -> _Answer:
        return _ok(self.commands_set[-1].get("commands", []) if self.commands_set else [])

    async def _get_updates(self, params: dict[str, Any], at: float) -> _Answer:
        offset = int(params.get("offset") or 0)
        if offset > 0:
            self._updates = [u for u in self._updates if u["update_id"] >= offset]
            self.confirmed_offset = max(self.confirmed_offset, offset)
        limit = int(params.get("limit") or 100)
        self._poll_generation += 1
        generation = self._poll_generation  # a newer poll terminates an older one, as Telegram does

        def ready() -> bool:
            return bool(self._available(offset)) or self._closing or (
                self._poll_generation != generation
            )

        self.polls_waiting += 1
        self._changes.bump()
        try:
            async with asyncio.timeout(float(params.get("timeout") or 0)):
                await self._changes.until(ready)
        except TimeoutError:
            pass
        finally:
            self.polls_waiting -= 1
        if self._poll_generation != generation:
            return 409, {"ok": False, "error_code": 409, "description":
                         "Conflict: terminated by other getUpdates request; make sure that "
                         "only one bot instance is running"}
        return _ok(self._available(offset)[:limit])

    def _available(self, offset: int) -> list[dict[str, Any]]:
        return [u for u in self._updates if u["update_id"] >= offset]

    async def _send_message(self, params: dict[str, Any], at: float) -> _Answer:
        chat_id = _as_chat_id(params.get("chat_id"))
        text = str(params.get("text") or "")
        parse_mode = params.get("parse_mode")
        if chat_id is None:
            return _error(Failure.bad_request("Bad Request: chat_id is empty"))
        if chat_id in self.stalled:
            self.stalls_waiting += 1
            self._changes.bump()
            try:
                await self._changes.until(lambda: self._closing or chat_id not in self.stalled)
            finally:
                self.stalls_waiting -= 1
        try:
            shown = visible_text(text) if str(parse_mode).upper() == "HTML" else text
        except EntityParseError as exc:
            return _error(Failure.bad_request(f"Bad Request: can't parse entities: {exc}"))
        if not shown.strip():
            return _error(Failure.bad_request("Bad Request: message text is empty"))
        if utf16_len(shown.strip()) > MAX_TEXT_UTF16:
            return _error(Failure.bad_request("Bad Request: message is too long"))
        message = self._record_sent(chat_id, text, shown, params, at)
        if chat_id in self.garbled:
            return _ok({"message": "posted", "chat": chat_id})
        return _ok(message)

    def _record_sent(
        self, chat_id: int | str, text: str, shown: str, params: dict[str, Any], at: float
    ) -> dict[str, Any]:
        thread_id = params.get("message_thread_id")
        reply = params.get("reply_parameters") or {}
        reply_to = reply.get("message_id") if isinstance(reply, dict) else None
        message_id = self._next_message_id(chat_id)
        self.sent.append(SentMessage(
            chat_id=chat_id,
            text=text,
            visible_text=shown,
            parse_mode=params.get("parse_mode"),
            message_thread_id=int(thread_id) if thread_id is not None else None,
            link_preview_options=params.get("link_preview_options"),
            disable_web_page_preview=params.get("disable_web_page_preview"),
            reply_to=reply_to if reply_to is not None else params.get("reply_to_message_id"),
            reply_markup=params.get("reply_markup"),
            message_id=message_id,
            at=at,
        ))
        message: dict[str, Any] = {
            "message_id": message_id, "date": int(time.time()), "chat": self._chat(chat_id),
            "from": self.bot_user, "text": shown,
        }
        if thread_id is not None:
            message["message_thread_id"] = thread_id
        return message

    async def _get_chat_member(self, params: dict[str, Any], at: float) -> _Answer:
        chat_id = _as_chat_id(params.get("chat_id"))
        user_id = int(params.get("user_id") or 0)
        assert chat_id is not None
        status = self._member_status.get(
            (chat_id, user_id), self._member_status.get((chat_id, None), "member")
        )
        user = self.bot_user if user_id == self.bot_user["id"] else self._user(user_id, "alice")
        return _ok(_member(user, status))

    async def _get_chat(self, params: dict[str, Any], at: float) -> _Answer:
        chat_id = _as_chat_id(params.get("chat_id"))
        assert chat_id is not None
        return _ok({
            **self._chat(chat_id), "accent_color_id": 0, "max_reaction_count": 11,
            "accepted_gift_types": {
                "unlimited_gifts": False, "limited_gifts": False, "unique_gifts": False,
                "premium_subscription": False, "gifts_from_channels": False,
            },
        })


def _ok(result: Any) -> _Answer:
    return 200, {"ok": True, "result": result}


def _error(failure: Failure) -> _Answer:
    return failure.status, failure.body()


async def _read_params(request: web.Request) -> dict[str, Any]:
    params: dict[str, Any] = dict(request.query)
    if request.content_type == "application/json":
        body = await request.read()
        params.update(json.loads(body) if body else {})
        return params
    form = await request.post()
    for key, value in form.items():
        params[key] = value if isinstance(value, str) else value.file.read()
    for key in _JSON_FIELDS & params.keys():
        if isinstance(params[key], str):
            with contextlib.suppress(ValueError):  # e.g. chat_id="@channelname"
                params[key] = json.loads(params[key])
    return params


def _as_chat_id(value: Any) -> int | str | None:
    if value is None or value == "":
        return None
    if isinstance(value, int):
        return value
    text = str(value)
    return int(text) if text.lstrip("-").isdigit() else text


def _infer_type(chat_id: int | str) -> str:
    if isinstance(chat_id, str):
        return "channel"
    if chat_id > 0:
        return "private"
    return "supergroup" if chat_id <= -1_000_000_000_000 else "group"


def _member(user: dict[str, Any], status: str) -> dict[str, Any]:
    """A ChatMember with every field python-telegram-bot requires for that status."""
    member: dict[str, Any] = {"user": user, "status": status}
    if status == "creator":
        member["is_anonymous"] = False
    elif status == "administrator":
        member.update(dict.fromkeys((
            "can_be_edited", "is_anonymous", "can_post_stories", "can_edit_stories",
            "can_delete_stories", "can_promote_members",
        ), False))
        member.update(dict.fromkeys((
            "can_manage_chat", "can_delete_messages", "can_manage_video_chats",
            "can_restrict_members", "can_change_info", "can_invite_users", "can_pin_messages",
        ), True))
    elif status == "kicked":
        member["until_date"] = 0
    elif status == "restricted":
        member.update(dict.fromkeys((
            "is_member", "can_change_info", "can_invite_users", "can_pin_messages",
            "can_send_polls", "can_send_other_messages", "can_add_web_page_previews",
            "can_manage_topics", "can_send_audios", "can_send_documents", "can_send_photos",
            "can_send_videos", "can_send_video_notes", "can_send_voice_notes", "can_edit_tag",
        ), False))
        member.update({"can_send_messages": False, "until_date": 0})
    return member
