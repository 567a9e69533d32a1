"""The chat commands (/subscribe, /unsubscribe, /list, /latest, /digest, /timezone, /feed, /help),
the same for every channel.

They feed the pipeline's start (which keywords are polled, who gets the outbox rows); Telegram
and Slack adapt them to their wire, the CLI calls the synchronous core directly.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import TYPE_CHECKING

from sqlite_utils import Database

from bot.config import Config
from bot.deliver.cadence import SettingError
from bot.faces.feed_tokens import feed_tokens
from bot.faces.settings import CHANGE_HINT, Settings, change_settings, read_settings, settings_of
from bot.fetch.errors import ArxivError, ArxivRejected, ArxivUnavailable
from bot.fetch.keywords import KeywordError, ParsedKeyword, parse_keyword
from bot.poll import rounds
from bot.poll.calendar import SCHEDULE, last_announcement
from bot.poll.keyword import needs_baseline
from bot.render.feeds import PRIVATE_ENTRIES
from storage import announcements
from storage import keywords as kw_repo
from storage import papers as paper_repo
from storage import subscribers as sub_repo
from storage.database import write
from storage.records import AnnouncementRecord, Keyword, Paper, Subscriber
from storage.store import Store

if TYPE_CHECKING:
    from bot.app import App

log = logging.getLogger(__name__)

VERBS = ("subscribe", "unsubscribe", "list", "latest", "digest", "timezone", "feed", "help",
         "start")
CHANGE_VERBS = frozenset({"subscribe", "unsubscribe", "digest", "timezone"})
SHOW_WHEN_BARE = frozenset({"digest", "timezone"})  # alone they only show: anyone may ask
LATEST_COUNT = 5
FIRST_LOOK_COUNT = 3
EXAMPLE = "video anomaly detection"
STORE_REFUSED = ("Sorry, Daily Papers cannot save changes right now: its database refused "
                 "(the operator can see why in the log). Please try again in a few minutes.")


@dataclass(frozen=True)
class Chat:
    """Who is talking, channel-agnostic."""

    channel: str  # "telegram" | "slack"
    address: str  # chat id / channel id (str)
    topic: str | None = None  # Telegram forum topic id
    is_group: bool = False
    may_change: bool = True  # False e.g. a non-admin in a group with group_admins_only


@dataclass
class Reply:
    text: str  # plain text, NOT escaped: adapters escape for their format
    papers: list[Paper] = field(default_factory=list)  # adapters render these under the text
    followup: Awaitable[Reply] | None = None  # slow work (first poll): adapter awaits, sends result
    announce: str | None = None  # one line for the whole channel (Slack announces changes)
    note: str = ""  # shown after the papers: arXiv's rhythm, so a quiet day is explained


class CommandError(Exception):
    """Bad input or a refused change; `message` is one plain sentence to show as is."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class SubscribeResult:
    keyword: Keyword
    created_keyword: bool
    new_subscription: bool
    reactivated: bool = False


# --- the synchronous core (also the CLI's) --------------------------------------------------


def parse_or_refuse(text: str) -> ParsedKeyword:
    try:
        return parse_keyword(text)
    except KeywordError as exc:
        raise CommandError(exc.message) from None


def subscribe_address(store: Store, cfg: Config, channel: str, address: str, text: str,
                      now: datetime, *, topic: str | None = None, source: str = "user",
                      max_subscriptions: int | None = None) -> SubscribeResult:
    """Subscribe one address to one keyword, all in one transaction; refusals change nothing.

    An inactive subscriber (a chat that blocked the bot and came back) is active again.
    """
    parsed = parse_or_refuse(text)
    db = store.db
    with write(db):
        sub = sub_repo.find(db, channel, address, topic)
        known = kw_repo.by_canonical(db, parsed.canonical)
        if sub is not None and max_subscriptions is not None:
            _check_room(db, sub, known, max_subscriptions)
        try:
            kw, created = kw_repo.ensure(db, parsed.display, parsed.canonical, parsed.query, now,
                                         max_keywords=cfg.arxiv.max_keywords)
        except kw_repo.InstanceFull:
            raise CommandError(
                f"This instance is full: it already watches {cfg.arxiv.max_keywords} keywords, "
                "the most its operator allows. Subscribe to one of the existing keywords, or ask "
                "the operator.") from None
        if sub is None:
            sub = sub_repo.ensure(db, channel, address, now, topic)
        reactivated = not sub.active and sub_repo.reactivate(db, sub.id)
        new = sub_repo.subscribe(db, sub, kw, source, now)
        return SubscribeResult(kw, created, new, reactivated)


def subscribe_with_settings(store: Store, cfg: Config, channel: str, address: str, text: str,
                            now: datetime, *, digest: str | None = None,
                            timezone: str | None = None) -> tuple[SubscribeResult, Settings]:
    """`subscribe` with a cadence and zone (CLI, sign-up): all in one transaction, and a bad
    keyword, cadence or zone changes nothing."""
    with write(store.db):
        result = subscribe_address(store, cfg, channel, address, text, now)
        shown = change_settings(store, cfg, channel, address, now, digest=digest,
                                timezone=timezone)
    return result, shown


def _check_room(db: Database, sub: Subscriber, known: Keyword | None, limit: int) -> None:
    if known is not None and any(k.id == known.id for k, _ in sub_repo.subscriptions(db, sub.id)):
        return  # already subscribed: no new room needed
    if sub_repo.count(db, sub.id) >= limit:
        who = "This address" if sub.channel == "email" else "This chat"
        raise CommandError(f"{who} already follows {limit} keywords, the most allowed. "
                           "Unsubscribe from one first.")


def unsubscribe_address(store: Store, channel: str, address: str, text: str | None,
                        now: datetime, *, topic: str | None = None) -> str:
    """Stop one keyword (or all with `text` None); the plain-text confirmation."""
    db = store.db
    sub = sub_repo.find(db, channel, address, topic)
    current = sub_repo.subscriptions(db, sub.id) if sub is not None else []
    if sub is None or not current:
        raise CommandError("Nothing to unsubscribe from: no keywords are followed here.")
    if text is None:
        n = sub_repo.unsubscribe_all(db, sub, now)
        return f"Unsubscribed from all {n} keyword{'s' if n != 1 else ''}."
    parsed = parse_or_refuse(text)
    match = next((k for k, _ in current if k.canonical == parsed.canonical), None)
    if match is None:
        names = ", ".join(f"'{k.display}'" for k, _ in current)
        raise CommandError(f"Not subscribed to '{parsed.display}'. Followed here: {names}.")
    sub_repo.unsubscribe(db, sub, match, now)
    return f"Unsubscribed from '{match.display}'."


# --- the async command handler --------------------------------------------------------------


def help_text() -> str:
    return (
        "Daily Papers watches arXiv and posts new papers for the keywords this chat follows.\n\n"
        f"/subscribe KEYWORD — follow a keyword, e.g. /subscribe {EXAMPLE}\n"
        "/unsubscribe KEYWORD — stop one (alone: shows what to stop; "
        "/unsubscribe all stops everything)\n"
        "/list — the keywords followed here\n"
        f"/latest KEYWORD — the {LATEST_COUNT} newest papers for a keyword\n"
        "/digest — when papers arrive: /digest instant, /digest daily 08:00 or "
        "/digest weekly mon 08:00\n"
        "/timezone ZONE — the zone of those times, e.g. /timezone Europe/Berlin\n"
        "/feed — a private Atom feed of these papers, for a feed reader\n"
        "/help — this message\n\n"
        "A keyword is a phrase searched in titles and abstracts (leave words out with a minus: "
        f"{EXAMPLE} -surveillance), or arXiv query syntax, e.g. ti:transformer AND cat:cs.CV."
    )


async def first_look(app: App, kw: Keyword) -> Reply:
    """The new keyword's baseline poll through the arXiv gate's priority lane."""
    try:
        outcome = await app.poll_now(kw)
    except ArxivRejected as exc:
        await app.store.call(kw_repo.record_rejected, kw.id, exc.message, app.now())
        return Reply(f"arXiv refused '{kw.display}': {exc.message}. It will not be polled; "
                     "unsubscribe and try a different wording.")
    except ArxivUnavailable as exc:
        return Reply(f"arXiv did not answer the first look for '{kw.display}' "
                     f"({exc.reason}). The next regular poll tries again.")
    except ArxivError as exc:
        return Reply(f"arXiv's answer for '{kw.display}' was unusable ({exc}). "
                     "The next regular poll tries again.")
    except sqlite3.Error as exc:
        app.store_faults.failed("commands", f"first look not saved, the store refused: {exc}")
        return Reply(f"The first look for '{kw.display}' could not be saved. The next "
                     "regular poll tries again.")
    if outcome.waiting_confirmation:
        return Reply(f"arXiv has no papers for '{kw.display}' yet. New ones will arrive here.")
    papers = await app.store.call(paper_repo.window, kw.id, FIRST_LOOK_COUNT)
    if not papers:
        return Reply(f"arXiv has no papers for '{kw.display}' yet. New ones will arrive here.")
    return Reply(f"First look done for '{kw.display}'. The newest papers:", papers)


class Commands:
    """One channel's command handling; every answer is a plain-text Reply."""

    def __init__(self, app: App, *, channel: str, max_subscriptions: int = 50,
                 allowed: Callable[[Chat], bool] = lambda chat: True) -> None:
        self.app = app
        self.channel = channel
        self.max_subscriptions = max_subscriptions
        self.allowed = allowed

    async def handle(self, chat: Chat, verb: str, arg: str) -> Reply:
        """The reply to one command. A store that refuses (a full disk, a long lock) is said
        in the reply and in one log line per episode, never as a traceback."""
        try:
            return await self._handle(chat, verb, arg)
        except sqlite3.Error as exc:
            self.app.store_faults.failed("commands", f"commands not saved, the store refused: "
                                                     f"{exc}")
            return Reply(STORE_REFUSED)

    async def _handle(self, chat: Chat, verb: str, arg: str) -> Reply:
        verb = verb.strip().lower().lstrip("/")
        arg = arg.strip()
        allowed = self.allowed(chat)
        # Any command brings a chat back, /start too: it is what Telegram sends when a user
        # who blocked the bot presses "Restart".
        welcome = await self._reactivate(chat) if allowed else None
        if verb in ("help", "start"):
            reply = Reply(help_text())
        elif verb not in VERBS:
            reply = Reply(f"Unknown command '/{verb}'.\n\n{help_text()}")
        elif not allowed:
            return Reply(f"This bot is private and this chat (id {chat.address}) is not on its "
                         "list of allowed chats. Ask the operator to add it.")
        elif verb in CHANGE_VERBS and not chat.may_change and (arg or verb not in SHOW_WHEN_BARE):
            reply = Reply("Only administrators of this group can change its subscriptions.")
        else:
            reply = await getattr(self, f"_{verb}")(chat, arg)
        if welcome:
            reply.text = f"{welcome}\n\n{reply.text}"
        return reply

    async def _reactivate(self, chat: Chat) -> str | None:
        """A chat that comes back and sends any command gets its subscriptions back."""
        def run(store: Store) -> int:
            return sum(sub_repo.reactivate(store.db, s.id)
                       for s in sub_repo.at_address(store.db, chat.channel, chat.address)
                       if not s.active)

        if await self.app.store.run(run):
            log.info("%s %s is back: deliveries resumed", chat.channel, chat.address)
            return "Welcome back: new papers for the keywords followed here will arrive again."
        return None

    # -- verbs ---------------------------------------------------------------------------

    async def _subscribe(self, chat: Chat, arg: str) -> Reply:
        if not arg:
            return Reply(f"Which keyword? For example: /subscribe {EXAMPLE}")
        now = self.app.now()
        try:
            result = await self.app.store.run(lambda store: subscribe_address(
                store, self.app.cfg, chat.channel, chat.address, arg, now, topic=chat.topic,
                max_subscriptions=self.max_subscriptions))
        except CommandError as exc:
            return Reply(exc.message)
        kw = result.keyword
        what = f"'{kw.display}' (arXiv query: {kw.query})"
        announce = f"This channel now follows '{kw.display}'." if result.new_subscription else None
        if kw.rejected:
            return Reply(f"Subscribed to {what}, but arXiv refused this query earlier: "
                         f"{kw.rejected}. Try a different wording.", announce=announce)
        fresh = result.created_keyword or needs_baseline(kw, self.app.cfg.arxiv.max_papers, now)
        if result.new_subscription and fresh:
            return Reply(f"Subscribed to {what}. A first look at arXiv is under way: its newest "
                         "papers follow in a moment.",
                         followup=first_look(self.app, kw), announce=announce)
        papers = await self.app.store.call(paper_repo.window, kw.id, FIRST_LOOK_COUNT)
        head = "Subscribed to" if result.new_subscription else "Already subscribed to"
        tail = "Its newest papers:" if papers else "No papers are stored for it yet."
        return Reply(f"{head} {what}. New papers will arrive here. {tail}", papers,
                     announce=announce)

    async def _unsubscribe(self, chat: Chat, arg: str) -> Reply:
        if not arg:
            names = await self._followed(chat)
            if not names:
                return Reply("Nothing to unsubscribe from: no keywords are followed here.")
            lines = "\n".join(f"• {n}" for n in names)
            return Reply(f"Which keyword? Send /unsubscribe KEYWORD with one of:\n{lines}\n"
                         "or /unsubscribe all to stop everything.")
        everything = arg.casefold() == "all" and "all" not in {
            n.casefold() for n in await self._followed(chat)}
        now = self.app.now()
        try:
            text = await self.app.store.run(lambda store: unsubscribe_address(
                store, chat.channel, chat.address, None if everything else arg, now,
                topic=chat.topic))
        except CommandError as exc:
            return Reply(exc.message)
        return Reply(text, announce=f"This channel: {text[0].lower()}{text[1:]}")

    async def _followed(self, chat: Chat) -> list[str]:
        return [k.display for k, _ in await self._subscriptions(chat)]

    async def _subscriptions(self, chat: Chat) -> list[tuple[Keyword, str]]:
        def run(store: Store) -> list[tuple[Keyword, str]]:
            sub = sub_repo.find(store.db, chat.channel, chat.address, chat.topic)
            return sub_repo.subscriptions(store.db, sub.id) if sub else []

        return await self.app.store.run(run)

    async def _list(self, chat: Chat, arg: str) -> Reply:
        subs = await self._subscriptions(chat)
        if not subs:
            return Reply(f"No keywords are followed here yet. Try /subscribe {EXAMPLE}")
        lines = [f"• {k.display} — {k.query}" + (" (from the config)" if src == "config" else "")
                 for k, src in subs]
        n = len(subs)
        shown = await self._settings(chat)
        delivery = f"Papers arrive here {shown.describe()}.\n" if shown else ""
        return Reply(f"{n} keyword{'s' if n != 1 else ''} followed here:\n" + "\n".join(lines),
                     note=delivery + await self._rhythm(chat))

    async def _settings(self, chat: Chat) -> Settings | None:
        now = self.app.now()
        return await self.app.store.run(lambda store: read_settings(
            store, self.app.cfg, chat.channel, chat.address, now, chat.topic))

    async def _digest(self, chat: Chat, arg: str) -> Reply:
        return await self._setting(chat, digest=arg) if arg else await self._show(chat)

    async def _timezone(self, chat: Chat, arg: str) -> Reply:
        if not arg:
            return await self._show(chat)
        return await self._setting(chat, timezone=arg)

    async def _show(self, chat: Chat) -> Reply:
        shown = await self._settings(chat)
        if shown is None:
            shown = settings_of(self.app.cfg, Subscriber(0, chat.channel, chat.address),
                                self.app.now())
        return Reply(f"Papers arrive here {shown.describe()}. {CHANGE_HINT}")

    async def _setting(self, chat: Chat, **typed: str) -> Reply:
        now = self.app.now()
        try:
            shown = await self.app.store.run(lambda store: change_settings(
                store, self.app.cfg, chat.channel, chat.address, now, topic=chat.topic, **typed))
        except SettingError as exc:
            return Reply(exc.message)
        self.app.wake_dispatcher()  # rows may be due now (instant), or later than they were
        waiting = (f" {shown.moved} paper{'s' if shown.moved != 1 else ''} already waiting "
                   "follow this setting." if shown.moved else "")
        zone = f" Time zone: {shown.setting.zone}." if "timezone" in typed else ""
        setting = shown.setting
        return Reply(f"Done: papers arrive here {shown.describe()}.{zone}{waiting}",
                     announce=f"Papers now arrive in this channel "
                              f"{setting.cadence.describe(setting.zone)}.")

    async def _feed(self, chat: Chat, arg: str) -> Reply:
        """The private feed's URL: what this chat is sent, for a feed reader."""
        def find(store: Store) -> Subscriber | None:
            sub = sub_repo.find(store.db, chat.channel, chat.address, chat.topic)
            return sub if sub is not None and sub_repo.count(store.db, sub.id) else None

        sub = await self.app.store.run(find)
        if sub is None:
            return Reply(f"No keywords are followed here yet, so there is no feed. Try "
                         f"/subscribe {EXAMPLE}")
        if not self.app.serves_web:
            return Reply("Feeds are not served by this Daily Papers: its web server is off. "
                         "Ask the operator to add a [web] section to its config.toml.")
        url = feed_tokens(self.app.unsubscribe_secret, self.app.cfg.web.public_url).url(sub)
        return Reply(f"The private Atom feed of this chat's keywords (the newest "
                     f"{PRIVATE_ENTRIES} papers), for any feed reader:\n{url}\n"
                     "Anyone with this link can read the feed. /unsubscribe all stops it "
                     "for good.")

    async def _latest(self, chat: Chat, arg: str) -> Reply:
        subs = await self._subscriptions(chat)
        if not arg and len(subs) == 1:
            arg = subs[0][0].display
        if not arg:
            return Reply(f"Which keyword? For example: /latest {EXAMPLE}")
        try:
            parsed = parse_or_refuse(arg)
        except CommandError as exc:
            return Reply(exc.message)
        kw = next((k for k, _ in subs if k.canonical == parsed.canonical), None)
        if kw is None:  # keywords others subscribed to stay private; curated ones are public
            found = await self.app.store.call(kw_repo.by_canonical, parsed.canonical)
            kw = found if found is not None and found.in_config else None
        if kw is None:
            return Reply(f"'{parsed.display}' is not followed here. /subscribe {parsed.display} "
                         "to follow it.")
        papers = await self.app.store.call(paper_repo.window, kw.id, LATEST_COUNT)
        note = await self._rhythm(chat)
        if not papers:
            return Reply(f"No papers are stored for '{kw.display}' yet.", note=note)
        return Reply(f"The {len(papers)} newest papers for '{kw.display}':", papers, note=note)

    async def _rhythm(self, chat: Chat) -> str:
        """When arXiv last announced and next will, in the reader's zone where it is known."""
        now = self.app.now()
        channel = getattr(self.app.cfg, chat.channel, None)

        def read(store: Store) -> tuple[AnnouncementRecord | None, str | None]:
            sub = sub_repo.find(store.db, chat.channel, chat.address, chat.topic)
            zone = (sub.timezone if sub else None) or getattr(channel, "timezone", None)
            return announcements.get(store.db, last_announcement(now).key), zone

        record, zone = await self.app.store.run(read)
        return f"{SCHEDULE}: {rounds.describe(record, now, zone)}."


# --- command flood guard --------------------------------------------------------------------


class Verdict(Enum):
    OK = "ok"
    WARN = "warn"  # over the limit: answer "slow down" once
    DROP = "drop"  # still over the limit: ignore silently


SLOW_DOWN = "Slow down, please: at most {limit} commands a minute per chat. Try again shortly."


class ChatThrottle:
    """At most `limit` commands per `period` seconds per chat; one "slow down", then silence."""

    def __init__(self, limit: int = 10, period: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.period = period
        self.clock = clock
        self._seen: dict[str, deque[float]] = {}
        self._warned: set[str] = set()

    def check(self, key: str) -> Verdict:
        now = self.clock()
        if len(self._seen) > 10_000:  # forget chats quiet for a whole period
            self._seen = {k: t for k, t in self._seen.items() if t and now - t[-1] < self.period}
        times = self._seen.setdefault(key, deque())
        while times and now - times[0] >= self.period:
            times.popleft()
        if len(times) < self.limit:
            times.append(now)
            self._warned.discard(key)
            return Verdict.OK
        if key in self._warned:
            return Verdict.DROP
        self._warned.add(key)
        return Verdict.WARN

    @property
    def message(self) -> str:
        return SLOW_DOWN.format(limit=self.limit)


class ChatTurns:
    """One at a time per chat, in the order places in line were taken; many chats at once.

    Commands of one chat are handled in order (a /subscribe then /unsubscribe must not race),
    and so are their replies, in a line of their own: a reply waiting out its chat's flood wait
    holds neither that chat's next command nor any other chat. A quiet chat's line is dropped.
    """

    def __init__(self) -> None:
        self._lines: dict[str, deque[asyncio.Future[None]]] = {}

    def place(self, key: str) -> Turn:
        """Take a place in the chat's line now (no waiting): `async with` it to wait."""
        ticket = asyncio.get_running_loop().create_future()
        line = self._lines.setdefault(key, deque())
        line.append(ticket)
        if len(line) == 1:
            ticket.set_result(None)
        return Turn(self, key, ticket)

    def leave(self, key: str, ticket: asyncio.Future[None]) -> None:
        line = self._lines.get(key)
        if line is None or ticket not in line:
            return
        head = line[0] is ticket
        line.remove(ticket)
        if not line:
            del self._lines[key]
        elif head:
            line[0].set_result(None)


class Turn:
    """A place in a chat's line; `async with` waits for it and gives it up after."""

    def __init__(self, turns: ChatTurns, key: str, ticket: asyncio.Future[None]) -> None:
        self.turns, self.key, self.ticket = turns, key, ticket

    async def __aenter__(self) -> None:
        try:
            await asyncio.shield(self.ticket)
        except BaseException:
            self.turns.leave(self.key, self.ticket)
            raise

    async def __aexit__(self, *exc: object) -> None:
        self.turns.leave(self.key, self.ticket)
