"""Telegram notifier (deliver stage): renders papers as Telegram HTML, paces sends within the
Bot API's flood limits, and turns every Bot API answer into a Delivery for the dispatcher."""

from __future__ import annotations

import asyncio
import html
import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta

from telegram import Bot, LinkPreviewOptions
from telegram.constants import ParseMode
from telegram.error import (
    BadRequest,
    ChatMigrated,
    Forbidden,
    InvalidToken,
    RetryAfter,
    TelegramError,
)

from notifiers.base import Delivery, Limits, Message, Notifier, Outcome
from notifiers.pacer import Pacer
from notifiers.packer import Piece, pack
from notifiers.telegram_request import AiohttpJsonRequest
from notifiers.text import cut, split_lines, utf16_len
from storage.records import OutboxRow, Paper, Subscriber

# Opt in to PTB's timedelta durations: the int form of RetryAfter.retry_after is deprecated
# (v22.2) and warns on every 429, which tests running with -W error would turn into errors.
os.environ.setdefault("PTB_TIMEDELTA", "true")

log = logging.getLogger(__name__)

NO_PREVIEW = LinkPreviewOptions(is_disabled=True)
ABSTRACT_CHARS = 400
HEADER_RESERVE = 64  # units kept free in every message for its header line
SEPARATOR = "\n\n"


@dataclass(frozen=True)
class TelegramLimits(Limits):
    """Telegram's numbers. Lengths count UTF-16 code units of the visible text (entities parsed)."""

    group_per_minute: int | None = None  # messages per minute into one group (negative chat id)

    def recipient_interval(self, address: str) -> float:
        if address.startswith("-") and self.group_per_minute:
            return 60.0 / self.group_per_minute
        return self.per_recipient_interval


TELEGRAM_LIMITS = TelegramLimits(
    max_chars=4096,
    per_recipient_interval=1.0,
    overall_rate=30.0,
    group_per_minute=20,
    max_in_flight=1,
)
UNLIMITED = TelegramLimits(max_chars=4096, per_recipient_interval=0.0, overall_rate=None,
                           group_per_minute=None)

# BadRequest descriptions (lower case) and what they mean for the recipient.
_OUR_BUGS = ("message is too long", "can't parse entities", "text must be non-empty",
             "message text is empty")
_RECIPIENT_GONE = ("chat not found", "chat is deactivated", "group chat was deactivated",
                   "message thread not found", "peer_id_invalid", "user is deactivated")


# --- rendering ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    """One unit a message lists: a paper (with the keywords it matched) or a plain paragraph."""

    paper: Paper | None = None
    keywords: tuple[str, ...] = ()
    text: str = ""


class _Html:
    """HTML built from plain parts, so its visible length is known without parsing it back."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.units = 0

    def text(self, plain: str) -> _Html:
        self.parts.append(html.escape(plain, quote=False))
        self.units += utf16_len(plain)
        return self

    def tag(self, open_tag: str, close_tag: str, plain: str) -> _Html:
        self.parts.append(f"{open_tag}{html.escape(plain, quote=False)}{close_tag}")
        self.units += utf16_len(plain)
        return self

    def piece(self) -> Piece[str]:
        return Piece("".join(self.parts) + SEPARATOR, self.units + len(SEPARATOR))


def render_paper(paper: Paper, keywords: Sequence[str] = (), *,
                 abstract_chars: int = ABSTRACT_CHARS,
                 field_units: int | None = None) -> Piece[str]:
    """Bold linked title, authors, date · category · matched keywords, start of the abstract."""

    def fit(text: str) -> str:
        return cut(text, field_units, utf16_len) if field_units is not None else text

    out = _Html()
    link = html.escape(paper.abs_url, quote=True)
    out.tag(f'<b><a href="{link}">', "</a></b>", fit(paper.title or paper.arxiv_id))
    out.text("\n" + fit(paper.authors_short() or "unknown authors"))
    meta = [paper.published.strftime("%Y-%m-%d")]
    if paper.primary_category:
        meta.append(paper.primary_category)
    out.text("\n" + " · ".join(meta))
    if keywords:
        out.text(" · ").tag("<i>", "</i>", fit(", ".join(keywords)))
    if abstract_chars > 0 and paper.abstract:
        out.text("\n" + cut(paper.abstract, abstract_chars, utf16_len))
    return out.piece()


def text_blocks(text: str, budget: int) -> list[Block]:
    """Plain text as blocks of whole lines within `budget` UTF-16 units each, so a long reply
    (50 keywords in /list) is split between lines instead of cut off."""
    return [Block(text=piece) for piece in split_lines(text, budget, utf16_len)]


def render_block(block: Block) -> Piece[str]:
    if block.paper is not None:
        return render_paper(block.paper, block.keywords)
    return _Html().text(block.text).piece()


def shorten_block(block: Block, budget: int) -> Piece[str]:
    """A block too long for a message alone: drop the abstract, then cut every field to fit."""
    if block.paper is None:
        return _Html().text(cut(block.text, budget - len(SEPARATOR), utf16_len)).piece()
    for abstract_chars in (ABSTRACT_CHARS // 2, 0):
        piece = render_paper(block.paper, block.keywords, abstract_chars=abstract_chars)
        if piece.size <= budget:
            return piece
    # Title, authors and keywords share what is left; a few units go to newlines and " · ".
    field_units = max(8, (budget - 40) // 3)
    return render_paper(block.paper, block.keywords, abstract_chars=0, field_units=field_units)


def pack_html(blocks: Sequence[Block], limits: Limits,
              header: Callable[[int, int, int], str] | None = None) -> list[tuple[list[int], str]]:
    """Split blocks into messages on block boundaries; returns (block indexes, HTML) per message.

    `header(count, part, parts)` gives an optional first line (plain text, escaped here).
    """
    indexed = list(enumerate(blocks))
    groups = pack(indexed, lambda item: render_block(item[1]), limits,
                  overhead=HEADER_RESERVE if header else 0,
                  shorten=lambda item, budget: shorten_block(item[1], budget))
    messages = []
    for part, group in enumerate(groups, start=1):
        body = "".join(piece.content for _, piece in group).rstrip("\n")
        if header:
            title = cut(header(len(group), part, len(groups)), HEADER_RESERVE - len(SEPARATOR),
                        utf16_len)
            body = f"<b>{html.escape(title, quote=False)}</b>{SEPARATOR}{body}"
        messages.append(([index for (index, _), _ in group], body))
    return messages


def sendout_header(count: int, part: int, parts: int) -> str:
    noun = "paper" if count == 1 else "papers"
    suffix = f" ({part}/{parts})" if parts > 1 else ""
    return f"New on arXiv: {count} {noun}{suffix}"


# --- flood control --------------------------------------------------------------------------


class FloodControl(Pacer):
    """Telegram's flood limits for one bot, shared by send-outs (notifier) and command replies.

    Why not PTB's AIORateLimiter: it works only inside an ExtBot and, on a 429, sleeps and
    retries inside the request, while the dispatcher must hear RETRY at once (the rows get
    their next attempt from the outbox, not from a sleeping task). It also has no priority, and
    cannot say how long a chat must still wait, which the dispatcher asks so that it serves
    other chats meanwhile instead of holding a slot (`ready_in`).
    So: one message per interval per chat (1 s; 3 s into a group, so no minute sees more than
    20), replies included, and one overall pace at Telegram's 30/s in which command replies
    take the next free slot ahead of any send-out. That is the replies' reserved share: they
    never wait behind a send-out, and a send-out uses the whole rate when nobody is typing.
    A RetryAfter pauses everything (Telegram's flood wait is per bot).
    """

    def __init__(self, limits: TelegramLimits = TELEGRAM_LIMITS) -> None:
        super().__init__(limits)

    async def before_send(self, address: str) -> None:
        await self.turn(address)

    async def before_reply(self, address: str) -> None:
        await self.turn(address, priority=True)


# --- the notifier ---------------------------------------------------------------------------

OnMigrate = Callable[[str, str], Awaitable[None]]  # (old chat id, new chat id)


def file_url(api_url: str) -> str:
    """The Bot API's file endpoint next to its method endpoint (…/bot → …/file/bot)."""
    return f"{api_url.removesuffix('/bot')}/file/bot"


def sendout_bot(token: str, api_url: str = "https://api.telegram.org/bot",
                max_in_flight: int = 1) -> Bot:
    """The Bot a send-out uses: its own pool (a reply never waits for one of its connections)
    and the lean JSON transport, which doubles a send-out's ceiling (see telegram_request)."""
    return Bot(token, base_url=api_url, base_file_url=file_url(api_url),
               request=AiohttpJsonRequest(pool_size=max_in_flight + 2))


def chat_id_of(address: str) -> int | str:
    """Numeric chat ids go as numbers; "@channelname" stays a string."""
    return int(address) if address.lstrip("-").isdigit() else address


def seconds_of(value: int | float | timedelta) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


class TelegramNotifier(Notifier):
    """Send-outs through a plain `telegram.Bot` with its own connection pool, so command replies
    (the Application's bot) never queue behind a send-out for a connection either."""

    channel = "telegram"

    def __init__(self, bot: Bot, limits: TelegramLimits = TELEGRAM_LIMITS, *,
                 flood: FloodControl | None = None, on_migrate: OnMigrate | None = None) -> None:
        self.bot = bot
        self.limits = limits
        self.flood = flood or FloodControl(limits)
        self.on_migrate = on_migrate
        self._started = False
        self._start_lock = asyncio.Lock()

    async def start(self) -> None:
        async with self._start_lock:
            if self._started:
                return
            try:
                await self.bot.initialize()
            except InvalidToken:  # its message quotes the token: say it without
                raise RuntimeError("Telegram refused TELEGRAM_BOT_TOKEN (getMe answered "
                                   "401/404); check the token and [telegram] api_url") from None
            self._started = True

    async def close(self) -> None:
        if self._started:
            self._started = False
            await self.bot.shutdown()

    def pack(self, subscriber: Subscriber, rows: Sequence[OutboxRow]) -> list[Message]:
        blocks = [Block(paper=r.paper, keywords=r.keywords) for r in rows]
        packed = pack_html(blocks, self.limits, sendout_header)
        return [Message(rows=tuple(rows[i] for i in indexes), payload=text, part=n,
                        parts=len(packed))
                for n, (indexes, text) in enumerate(packed, start=1)]

    def ready_in(self, subscriber: Subscriber) -> float:
        return self.flood.ready_in(subscriber.address)

    async def send(self, subscriber: Subscriber, message: Message) -> Delivery:
        if not self._started:
            await self.start()
        await self.flood.before_send(subscriber.address)
        try:
            await self.bot.send_message(
                chat_id=chat_id_of(subscriber.address), text=message.payload,
                parse_mode=ParseMode.HTML, link_preview_options=NO_PREVIEW,
                message_thread_id=int(subscriber.topic) if subscriber.topic else None)
        except RetryAfter as exc:
            wait = seconds_of(exc.retry_after)
            self.flood.pause(wait)
            log.warning("telegram: flood control, all sends wait %.0f s", wait)
            return Delivery(Outcome.RETRY, f"flood control: retry after {wait:g} s",
                            retry_after=wait, rate_limited=True)
        except Forbidden as exc:  # blocked, kicked: the chat, with every forum topic in it
            return Delivery(Outcome.GONE, exc.message, whole_address=True)
        except ChatMigrated as exc:
            return await self._migrated(subscriber, str(exc.new_chat_id))
        except BadRequest as exc:
            return self._bad_request(subscriber, message, exc)
        except InvalidToken:
            return Delivery(Outcome.BROKEN, "Telegram refused the bot token")
        except TelegramError as exc:  # NetworkError, TimedOut, 5xx, Conflict: transient
            return Delivery(Outcome.RETRY, exc.message)
        finally:
            self.flood.sent(subscriber.address)
        return Delivery(Outcome.SENT)

    async def _migrated(self, subscriber: Subscriber, new_id: str) -> Delivery:
        """The group became a supergroup: move it, then the rows go again to the new id."""
        if self.on_migrate is None:
            return Delivery(Outcome.RETRY, f"group migrated to {new_id}, nobody to move it")
        await self.on_migrate(subscriber.address, new_id)
        return Delivery(Outcome.RETRY, f"group migrated to {new_id}", retry_after=0.0)

    def _bad_request(self, subscriber: Subscriber, message: Message, exc: BadRequest) -> Delivery:
        text = exc.message.lower()
        if any(s in text for s in _OUR_BUGS):
            log.error("telegram: our message for %s was refused (a rendering bug): %s; "
                      "part %d/%d, %d papers", subscriber.address, exc.message, message.part,
                      message.parts, len(message.rows))
            return Delivery(Outcome.FAILED, exc.message, counts_against_recipient=False)
        if any(s in text for s in _RECIPIENT_GONE):  # a closed topic is gone alone
            return Delivery(Outcome.GONE, exc.message,
                            whole_address="message thread not found" not in text)
        # Missing rights, not a member, topic closed: permanent for this message; three in a
        # row and the dispatcher deactivates the chat.
        return Delivery(Outcome.FAILED, exc.message)
