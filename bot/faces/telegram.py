"""The Telegram face: long polling for commands inside the daemon's loop, replies, membership and
migration updates; its notifier (notifiers/telegram.py) delivers the outbox."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Awaitable
from dataclasses import replace

from aiohttp import web
from telegram import BotCommand, Message, Update
from telegram.constants import ChatMemberStatus, ChatType, ParseMode
from telegram.error import ChatMigrated, Forbidden, RetryAfter, TelegramError
from telegram.ext import (
    Application,
    ChatMemberHandler,
    ContextTypes,
    Defaults,
    MessageHandler,
    filters,
)

from bot.app import App
from bot.config import TelegramConfig
from bot.faces.commands import (
    CHANGE_VERBS,
    VERBS,
    Chat,
    ChatThrottle,
    ChatTurns,
    Commands,
    Reply,
    Verdict,
)
from notifiers.telegram import (
    NO_PREVIEW,
    TELEGRAM_LIMITS,
    Block,
    FloodControl,
    TelegramLimits,
    TelegramNotifier,
    chat_id_of,
    file_url,
    pack_html,
    seconds_of,
    sendout_bot,
    text_blocks,
)
from storage import subscribers as sub_repo
from storage.records import Subscriber

log = logging.getLogger(__name__)

CHANNEL = "telegram"
POLL_TIMEOUT = 5  # seconds of long polling: a stop never waits longer than this
REPLY_TRIES = 5  # a reply refused by flood control waits as long as asked, then goes again
MENU = [
    BotCommand("subscribe", "Follow a keyword: /subscribe video anomaly detection"),
    BotCommand("unsubscribe", "Stop a keyword (alone: list them)"),
    BotCommand("list", "Keywords followed in this chat"),
    BotCommand("latest", "The newest papers for a keyword"),
    BotCommand("digest", "When papers arrive: instant, daily 08:00, weekly mon 08:00"),
    BotCommand("timezone", "The zone of digest times: /timezone Europe/Berlin"),
    BotCommand("feed", "A private Atom feed of this chat's papers"),
    BotCommand("help", "What this bot does"),
]
_COMMAND = re.compile(r"/([A-Za-z0-9_]+)(?:@([A-Za-z0-9_]+))?(?:\s+(.*))?\Z", re.DOTALL)
_GONE_STATUSES = (ChatMemberStatus.LEFT, ChatMemberStatus.BANNED)
_ADMINS = (ChatMemberStatus.ADMINISTRATOR, ChatMemberStatus.OWNER)


def parse_command(text: str, bot_username: str) -> tuple[str, str, bool] | None:
    """(verb, raw argument, addressed to us by name); None when meant for another bot.

    The argument is the raw text after the command (after a space or a newline), not
    `context.args`, which collapses the spaces inside a keyword.
    """
    m = _COMMAND.match(text.strip())
    if m is None:
        return None
    verb, target, arg = m.group(1).lower(), m.group(2), m.group(3) or ""
    if target is not None and target.lower() != bot_username.lower():
        return None
    return verb, arg.strip(), target is not None


class TelegramFace:
    """One bot token's presence: commands in, replies out, and the notifier for send-outs."""

    name = CHANNEL

    def __init__(self, cfg: TelegramConfig, token: str, *,
                 limits: TelegramLimits | None = None) -> None:
        self.cfg = cfg
        limits = limits or replace(TELEGRAM_LIMITS, max_in_flight=cfg.max_in_flight)
        self.flood = FloodControl(limits)
        self.application: Application = (  # type: ignore[type-arg]
            # Commands run concurrently (a reply waiting on one chat's flood wait holds no
            # other chat); ChatTurns keeps each chat's commands in order.
            Application.builder().token(token).base_url(cfg.api_url).concurrent_updates(True)
            .base_file_url(file_url(cfg.api_url))
            .defaults(Defaults(parse_mode=ParseMode.HTML, link_preview_options=NO_PREVIEW))
            .build())
        # Send-outs get their own Bot and connection pool: a reply never waits for a connection.
        self.notifier = TelegramNotifier(sendout_bot(token, cfg.api_url, limits.max_in_flight),
                                         limits, flood=self.flood, on_migrate=self.migrate)
        self.throttle = ChatThrottle()
        self.turns = ChatTurns()  # handling, one command at a time per chat
        self.reply_turns = ChatTurns()  # sending, one reply at a time per chat
        self.app: App | None = None
        self.commands: Commands | None = None
        self._followups: set[asyncio.Task[None]] = set()
        self._running = False

    def routes(self) -> list[web.RouteDef]:
        return []

    @property
    def username(self) -> str:
        return self.application.bot.username

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self, app: App) -> None:
        """initialize (getMe) → setMyCommands → start → long polling; not `run_polling`."""
        self.app = app
        allowed = set(self.cfg.allowed_chats)
        self.commands = Commands(
            app, channel=CHANNEL, max_subscriptions=self.cfg.max_subscriptions_per_chat,
            allowed=lambda chat: not allowed or _as_int(chat.address) in allowed)
        application = self.application
        application.add_handler(MessageHandler(filters.UpdateType.MESSAGE & filters.COMMAND,
                                               self._on_command))
        application.add_handler(MessageHandler(filters.StatusUpdate.MIGRATE, self._on_migrate))
        application.add_handler(ChatMemberHandler(self._on_my_chat_member,
                                                  ChatMemberHandler.MY_CHAT_MEMBER))
        application.add_error_handler(self._on_error)
        await application.initialize()
        await application.bot.set_my_commands(MENU)
        await application.start()
        await application.updater.start_polling(  # type: ignore[union-attr]
            timeout=POLL_TIMEOUT, bootstrap_retries=3,
            allowed_updates=["message", "my_chat_member"], error_callback=_polling_error)
        self._running = True
        log.info("telegram: @%s is listening for commands", self.username)

    async def stop(self) -> None:
        for task in list(self._followups):
            task.cancel()
        if self._followups:
            await asyncio.gather(*self._followups, return_exceptions=True)
        if not self._running:
            return
        self._running = False
        application = self.application
        if application.updater is not None and application.updater.running:
            await application.updater.stop()
        if application.running:
            await application.stop()
        await application.shutdown()

    # -- handlers ----------------------------------------------------------------------------

    async def _on_command(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.message
        if message is None or not message.text or self.commands is None:
            return
        parsed = parse_command(message.text, self.username)
        if parsed is None:
            return
        verb, arg, addressed = parsed
        chat = _chat_of(message)
        if verb not in VERBS and chat.is_group and not addressed:
            return  # another bot's command in a shared group: not ours to answer
        verdict = self.throttle.check(chat.address)
        if verdict is Verdict.DROP:
            return
        async with self.turns.place(chat.address):
            if verdict is Verdict.WARN:
                reply = Reply(self.throttle.message)
            else:
                reply = await self._handle(message, chat, verb, arg)
            replying = self.reply_turns.place(chat.address)  # replies keep the commands' order
        try:
            async with replying:
                await self.send_reply(chat, reply)
        finally:
            if reply.followup is not None:
                self._spawn(self._follow_up(chat, reply.followup))

    async def _handle(self, message: Message, chat: Chat, verb: str, arg: str) -> Reply:
        assert self.commands is not None
        if verb in CHANGE_VERBS:
            chat = replace(chat, may_change=await self._may_change(message))
        reply = await self.commands.handle(chat, verb, arg)
        if chat.is_group and verb in ("help", "start"):
            reply.text += self._group_help()
        return reply

    def _group_help(self) -> str:
        text = f"\n\nIn groups, add the bot's name: /subscribe@{self.username} KEYWORD."
        if self.cfg.group_admins_only:
            text += " Only administrators change this group's subscriptions."
        return text

    async def _may_change(self, message: Message) -> bool:
        """In groups with group_admins_only, only administrators change subscriptions."""
        if message.chat.type not in (ChatType.GROUP, ChatType.SUPERGROUP):
            return True
        if not self.cfg.group_admins_only:
            return True
        if message.sender_chat is not None:  # an anonymous administrator speaks as the group
            return message.sender_chat.id == message.chat_id
        if message.from_user is None:
            return False
        try:
            member = await self.application.bot.get_chat_member(message.chat_id,
                                                                message.from_user.id)
        except TelegramError as exc:
            log.warning("telegram: cannot check admin rights in %s: %s", message.chat_id, exc)
            return False
        return member.status in _ADMINS

    async def _on_migrate(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.message
        if message is None:
            return
        if message.migrate_to_chat_id:
            await self.migrate(str(message.chat_id), str(message.migrate_to_chat_id))
        elif message.migrate_from_chat_id:
            await self.migrate(str(message.migrate_from_chat_id), str(message.chat_id))

    async def migrate(self, old: str, new: str) -> None:
        """A group became a supergroup: subscriptions and pending rows move in one transaction."""
        if self.app is None:
            return
        moved = await self.app.store.call(sub_repo.move_address, CHANNEL, old, new)
        if moved:
            log.info("telegram: chat %s became supergroup %s; subscriptions moved", old, new)
            self.app.wake_dispatcher()

    async def _on_my_chat_member(self, update: Update,
                                 context: ContextTypes.DEFAULT_TYPE) -> None:
        change = update.my_chat_member
        if change is None or self.app is None:
            return
        if change.new_chat_member.status not in _GONE_STATUSES:
            return  # added back: the chat is active again when someone sends a command
        private = change.chat.type == ChatType.PRIVATE
        reason = "the user blocked the bot" if private else "the bot was removed from the chat"
        n = await self.deactivate(str(change.chat.id), reason)
        if n:
            log.info("telegram: chat %s deactivated: %s", change.chat.id, reason)

    async def deactivate(self, address: str, reason: str) -> int:
        assert self.app is not None

        return await self.app.store.call(sub_repo.deactivate_address, CHANNEL, address, reason)

    async def _on_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        """The one place handler errors end: logged with the update, the user told briefly."""
        log.error("telegram: error while handling an update", exc_info=context.error)
        if isinstance(update, Update) and update.message is not None:
            with contextlib.suppress(Exception):
                await self.send_reply(_chat_of(update.message), Reply(
                    "Sorry, something went wrong on our side. The operator can see it in the log."))

    # -- replies -----------------------------------------------------------------------------

    async def send_reply(self, chat: Chat, reply: Reply) -> None:
        """Replies go through the Application's bot, ahead of any send-out in the flood pacer."""
        limits = self.notifier.limits
        budget = (limits.max_chars or 4096) - 256  # room for the separators around a block
        blocks = text_blocks(reply.text, budget) + [Block(paper=p) for p in reply.papers]
        if reply.note:
            blocks += text_blocks(reply.note, budget)
        for _, text in pack_html(blocks, limits):
            await self._send_html(chat, text)

    async def _send_html(self, chat: Chat, text: str, *, retried: bool = False) -> None:
        """Tried at once even while a send-out waits out a flood wait; refused itself, the
        reply holds its chat for as long as Telegram asks and goes then."""
        for _ in range(REPLY_TRIES):
            await self.flood.before_reply(chat.address)
            try:
                await self._send_once(chat, text, retried=retried)
                return
            except RetryAfter as exc:
                wait = seconds_of(exc.retry_after)
                self.flood.hold(chat.address, wait)
                log.warning("telegram: reply to %s refused by flood control; it goes in %.0f s",
                            chat.address, wait)
        log.warning("telegram: reply to %s dropped: flood control refused it %d times",
                    chat.address, REPLY_TRIES)

    async def _send_once(self, chat: Chat, text: str, *, retried: bool) -> None:
        try:
            await self.application.bot.send_message(
                chat_id=chat_id_of(chat.address), text=text,
                message_thread_id=int(chat.topic) if chat.topic else None)
        except ChatMigrated as exc:
            await self.migrate(chat.address, str(exc.new_chat_id))
            if not retried:
                await self._send_html(replace(chat, address=str(exc.new_chat_id)), text,
                                      retried=True)
        except Forbidden as exc:
            await self.deactivate(chat.address, exc.message)
            log.info("telegram: chat %s deactivated: %s", chat.address, exc.message)
        finally:
            self.flood.sent(chat.address)

    async def _follow_up(self, chat: Chat, followup: Awaitable[Reply]) -> None:
        try:
            reply = await followup
        except Exception:
            log.exception("telegram: follow-up for %s failed", chat.address)
            reply = Reply("Sorry, the first look at arXiv failed on our side. The next regular "
                          "poll tries again.")
        await self.send_reply(chat, reply)

    def _spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._followups.add(task)
        task.add_done_callback(self._followup_done)

    def _followup_done(self, task: asyncio.Task[None]) -> None:
        self._followups.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("telegram: follow-up failed", exc_info=task.exception())

    async def tell(self, sub: Subscriber, text: str) -> None:
        """A one-off note to one subscriber (e.g. arXiv rejected its keyword)."""
        chat = Chat(CHANNEL, sub.address, sub.topic, is_group=sub.address.startswith("-"))
        await self.send_reply(chat, Reply(text))


def _chat_of(message: Message) -> Chat:
    topic = str(message.message_thread_id) if message.is_topic_message else None
    group = message.chat.type in (ChatType.GROUP, ChatType.SUPERGROUP)
    return Chat(CHANNEL, str(message.chat_id), topic, is_group=group)


def _as_int(address: str) -> int | None:
    return int(address) if address.lstrip("-").isdigit() else None


def _polling_error(exc: TelegramError) -> None:
    """Updater errors (network, Conflict with another instance): PTB keeps polling."""
    log.warning("telegram: getUpdates failed: %s", exc)

