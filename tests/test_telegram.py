"""Telegram's deliver stage and command face against the local Bot API server: the HTML a chat
shows (golden files), splitting within 4096 UTF-16 units, what each Bot API answer means, the
flood limits, and the commands as a user types them.

`UPDATE_GOLDEN=1 pytest` rewrites tests/golden/telegram-*.html after an intended change.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from telegram import Bot

from bot.app import App
from bot.config import Config, Secrets, TelegramConfig
from bot.deliver.dispatcher import Dispatcher
from bot.faces.commands import subscribe_address
from bot.faces.telegram import TelegramFace, parse_command
from bot.fetch.arxiv import ArxivClient
from notifiers.base import Outcome
from notifiers.telegram import (
    TELEGRAM_LIMITS,
    UNLIMITED,
    FloodControl,
    TelegramLimits,
    TelegramNotifier,
    sendout_bot,
    utf16_len,
)
from notifiers.telegram_request import AiohttpJsonRequest, _without_token
from storage import keywords as kw_repo
from storage import outbox, polls
from storage import subscribers as sub_repo
from storage.records import OutboxRow, Paper, Subscriber
from storage.store import AsyncStore, Store
from tests.conftest import Clock, KeywordFactory, PaperFactory, SubscriberFactory
from tests.fakes.arxiv_server import FakeArxiv
from tests.fakes.telegram_server import Failure, FakeTelegram

GOLDEN = Path(__file__).parent / "golden"
DAY = datetime(2025, 11, 6, 9, 30, tzinfo=UTC)
HOSTILE_TITLE = "Less <is> more & snake_case_names: a <b>bold</b> claim"


def paper(n: int, *, title: str | None = None, authors: int = 2, abstract: str | None = None,
          published: datetime = DAY) -> Paper:
    names = tuple(f"Author{i} Surname{i}" for i in range(1, authors + 1))
    return Paper(
        arxiv_id=f"2511.{n:05d}", version=2, title=title or f"Paper number {n}",
        abstract=abstract or (f"Abstract of paper {n} with x < y & a_b. " * 3).strip(),
        authors=names, published=published - timedelta(hours=n), updated=published,
        primary_category="cs.CV", categories=("cs.CV", "cs.AI"),
    )


def row(n: int, p: Paper, keywords: tuple[str, ...] = ("Video Anomaly Detection",)) -> OutboxRow:
    return OutboxRow(id=n, subscriber_id=1, paper=p, keywords=keywords)


def sub(address: str = "42", topic: str | None = None) -> Subscriber:
    return Subscriber(id=1, channel="telegram", address=address, topic=topic)


def check_golden(name: str, text: str) -> None:
    golden = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN") == "1":
        golden.write_text(text, encoding="utf-8")
    assert text == golden.read_text(encoding="utf-8"), f"{golden} differs; UPDATE_GOLDEN=1"


@pytest.fixture
async def telegram() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as fake:
        yield fake


@pytest.fixture
async def notifier(telegram: FakeTelegram) -> AsyncIterator[TelegramNotifier]:
    n = TelegramNotifier(sendout_bot(telegram.token, telegram.base_url), UNLIMITED)
    await n.start()
    yield n
    await n.close()


async def send_all(n: TelegramNotifier, s: Subscriber, rows: list[OutboxRow]) -> list[Outcome]:
    return [(await n.send(s, m)).outcome for m in n.pack(s, rows)]


# -- rendering ---------------------------------------------------------------------------------


def test_golden_sendout_escapes_titles_and_names_every_matched_keyword() -> None:
    n = TelegramNotifier(Bot("1:x"), UNLIMITED)
    rows = [
        row(1, paper(1, title=HOSTILE_TITLE, authors=5),
            ("Video Anomaly Detection", "Vision <Language> & Model")),
        row(2, paper(2, authors=1, abstract="Short abstract_with_underscores & <tags>.")),
    ]
    (message,) = n.pack(sub(), rows)
    assert message.row_ids == [1, 2]
    check_golden("telegram-sendout.html", message.payload)


def test_golden_paper_too_long_alone_is_shortened() -> None:
    n = TelegramNotifier(Bot("1:x"), UNLIMITED)
    keywords = tuple(f"keyword number {i} " + "x" * 150 for i in range(40))
    (message,) = n.pack(sub(), [row(1, paper(1, title="T_" * 2000), keywords)])
    check_golden("telegram-shortened.html", message.payload)


async def test_hostile_title_reaches_the_chat_as_typed(
    telegram: FakeTelegram, notifier: TelegramNotifier
) -> None:
    outcomes = await send_all(notifier, sub("42", topic="7"), [row(1, paper(1, title=HOSTILE_TITLE))])
    assert outcomes == [Outcome.SENT]
    (sent,) = telegram.messages_to(42)
    assert sent.visible_text.startswith("New on arXiv: 1 paper\n\n" + HOSTILE_TITLE + "\n")
    assert "x < y & a_b" in sent.visible_text
    assert sent.parse_mode == "HTML" and sent.previews_disabled
    assert sent.message_thread_id == 7
    assert '<a href="https://arxiv.org/abs/2511.00001">' in sent.text


async def test_big_batches_split_on_paper_boundaries_within_4096_utf16_units(
    telegram: FakeTelegram, notifier: TelegramNotifier
) -> None:
    emoji_abstract = "🚀 Rockets & <stars> " * 40  # astral characters count twice
    rows = [row(i, paper(i, title=f"Paper {i} 🚀", abstract=emoji_abstract)) for i in range(60)]
    outcomes = await send_all(notifier, sub(), rows)
    assert outcomes and set(outcomes) == {Outcome.SENT}
    sent = telegram.messages_to(42)
    assert len(sent) == len(outcomes) > 1
    assert all(utf16_len(m.visible_text) <= 4096 for m in sent)
    titles = [line for m in sent for line in m.visible_text.split("\n")
              if line.startswith("Paper ")]
    assert titles == [f"Paper {i} 🚀" for i in range(60)]  # each exactly once, in order
    headers = [m.visible_text.split("\n")[0] for m in sent]
    assert headers[-1].startswith("New on arXiv: ")
    assert headers[-1].endswith(f" papers ({len(sent)}/{len(sent)})")


async def test_a_paper_too_long_alone_is_shortened_and_accepted(
    telegram: FakeTelegram, notifier: TelegramNotifier
) -> None:
    keywords = tuple(f"keyword {i} " + "😀" * 120 for i in range(50))
    outcomes = await send_all(notifier, sub(), [row(1, paper(1, title="Long " * 900), keywords)])
    assert outcomes == [Outcome.SENT]
    assert utf16_len(telegram.messages_to(42)[0].visible_text) <= 4096


# -- what each answer means ------------------------------------------------------------------


@pytest.mark.parametrize(("failure", "outcome", "counts"), [
    (Failure.blocked(), Outcome.GONE, True),
    (Failure.kicked(), Outcome.GONE, True),
    (Failure.bad_request("Bad Request: chat not found"), Outcome.GONE, True),
    (Failure.bad_request("Bad Request: not enough rights to send text messages to the chat"),
     Outcome.FAILED, True),
    (Failure.bad_request("Bad Request: TOPIC_CLOSED"), Outcome.FAILED, True),
    (Failure.server_error(502), Outcome.RETRY, True),
    (Failure.server_error(500), Outcome.RETRY, True),
])
async def test_answers_become_outcomes(
    telegram: FakeTelegram, notifier: TelegramNotifier, failure: Failure, outcome: Outcome,
    counts: bool
) -> None:
    telegram.fail(failure, chat_id=42)
    (message,) = notifier.pack(sub(), [row(1, paper(1))])
    delivery = await notifier.send(sub(), message)
    assert delivery.outcome is outcome
    assert delivery.counts_against_recipient is counts
    assert delivery.reason


@pytest.mark.parametrize("description", [
    "Bad Request: message is too long",
    "Bad Request: can't parse entities: Unsupported start tag \"br\" at byte offset 3",
])
async def test_our_rendering_bugs_fail_the_message_and_are_logged_at_error(
    telegram: FakeTelegram, notifier: TelegramNotifier, caplog: pytest.LogCaptureFixture,
    description: str
) -> None:
    telegram.fail(Failure.bad_request(description), chat_id=42)
    (message,) = notifier.pack(sub(), [row(1, paper(1))])
    delivery = await notifier.send(sub(), message)
    assert delivery.outcome is Outcome.FAILED
    assert not delivery.counts_against_recipient
    assert any(r.levelno == logging.ERROR and "rendering bug" in r.getMessage()
               for r in caplog.records)


async def test_flood_control_answer_pauses_every_send(
    telegram: FakeTelegram, notifier: TelegramNotifier
) -> None:
    telegram.fail(Failure.retry_after(3), chat_id=42)
    (message,) = notifier.pack(sub(), [row(1, paper(1))])
    delivery = await notifier.send(sub(), message)
    assert delivery.outcome is Outcome.RETRY
    assert delivery.retry_after == 3
    assert 2 < notifier.flood.paused_for <= 3


async def test_a_migrated_group_is_moved_and_retried_at_once(
    telegram: FakeTelegram, notifier: TelegramNotifier
) -> None:
    moves: list[tuple[str, str]] = []

    async def on_migrate(old: str, new: str) -> None:
        moves.append((old, new))

    notifier.on_migrate = on_migrate
    telegram.fail(Failure.migrated(-1001234), chat_id=-55)
    (message,) = notifier.pack(sub("-55"), [row(1, paper(1))])
    delivery = await notifier.send(sub("-55"), message)
    assert (delivery.outcome, delivery.retry_after) == (Outcome.RETRY, 0.0)
    assert moves == [("-55", "-1001234")]


async def test_a_refused_token_stops_the_channel(telegram: FakeTelegram) -> None:
    n = TelegramNotifier(sendout_bot("999:wrong", telegram.base_url), UNLIMITED)
    with pytest.raises(RuntimeError, match="refused TELEGRAM_BOT_TOKEN") as info:
        await n.start()
    assert "999:wrong" not in str(info.value)
    n._started = True  # as if the token had been revoked while running
    delivery = await n.send(sub(), n.pack(sub(), [row(1, paper(1))])[0])
    assert delivery.outcome is Outcome.BROKEN
    await n.close()


# -- the send-out transport (JSON over aiohttp) -------------------------------------------------


async def test_an_api_gone_after_start_is_a_retry_for_the_rows(telegram: FakeTelegram) -> None:
    n = TelegramNotifier(sendout_bot(telegram.token, telegram.base_url), UNLIMITED)
    await n.start()
    await telegram.stop()  # getMe answered, then the Bot API went away
    try:
        delivery = await n.send(sub(), n.pack(sub(), [row(1, paper(1))])[0])
    finally:
        await n.close()
    assert delivery.outcome is Outcome.RETRY
    assert delivery.reason.startswith("aiohttp."), delivery.reason


class ForwardProxy:
    """A plain-HTTP forward proxy on 127.0.0.1 that records the absolute URLs it relays."""

    def __init__(self) -> None:
        self.relayed: list[str] = []

    async def __aenter__(self) -> ForwardProxy:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._relay)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        self._client = aiohttp.ClientSession()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._client.close()
        await self._runner.cleanup()

    async def _relay(self, request: web.Request) -> web.Response:
        self.relayed.append(str(request.url))
        async with self._client.request(request.method, request.url, data=await request.read(),
                                        headers={"Content-Type": request.content_type}) as r:
            return web.Response(status=r.status, body=await r.read(),
                                content_type=r.content_type)


@pytest.mark.parametrize("no_proxy", ["", "127.0.0.1"])
async def test_send_outs_take_the_proxy_from_the_environment_like_replies_do(
        telegram: FakeTelegram, monkeypatch: pytest.MonkeyPatch, no_proxy: str) -> None:
    async with ForwardProxy() as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        monkeypatch.setenv("NO_PROXY", no_proxy)
        n = TelegramNotifier(sendout_bot(telegram.token, telegram.base_url), UNLIMITED)
        await n.start()
        try:
            assert await send_all(n, sub("42"), [row(1, paper(1))]) == [Outcome.SENT]
        finally:
            await n.close()
    assert [m.chat_id for m in telegram.sent] == [42]
    sends = [u for u in proxy.relayed if u.endswith("/sendMessage")]
    assert sends == ([] if no_proxy else [f"{telegram.base_url}{telegram.token}/sendMessage"])


def test_a_transport_error_quoting_the_url_does_not_quote_the_token() -> None:
    url = "https://proxy.example.org/botapi/bot123456:SECRET-token/sendMessage"
    text = f"aiohttp.InvalidURL: {url}"
    assert _without_token(text, url) == \
        "aiohttp.InvalidURL: https://proxy.example.org/botapi/bot<token>/sendMessage"


async def test_a_chat_whose_answer_never_comes_times_out_without_holding_up_others(
        telegram: FakeTelegram) -> None:
    bot = Bot(telegram.token, base_url=telegram.base_url,
              request=AiohttpJsonRequest(pool_size=4, read_timeout=0.5))
    n = TelegramNotifier(bot, UNLIMITED)
    await n.start()
    telegram.stall(42)
    try:
        stalled = asyncio.create_task(n.send(sub("42"), n.pack(sub("42"), [row(1, paper(1))])[0]))
        await telegram.wait_for(lambda: telegram.stalls_waiting == 1)
        other = await n.send(sub("43"), n.pack(sub("43"), [row(2, paper(2))])[0])
        assert other.outcome is Outcome.SENT and not stalled.done()
        delivery = await stalled
    finally:
        await n.close()
    assert (delivery.outcome, delivery.reason) == (Outcome.RETRY, "Timed out")
    assert [m.chat_id for m in telegram.sent] == [43]


# -- flood limits ----------------------------------------------------------------------------

FAST = TelegramLimits(max_chars=4096, per_recipient_interval=0.2, overall_rate=20.0,
                      group_per_minute=300, max_in_flight=16)


async def test_one_chat_gets_at_most_one_message_per_interval(telegram: FakeTelegram) -> None:
    n = TelegramNotifier(sendout_bot(telegram.token, telegram.base_url), FAST)
    await n.start()
    try:
        for i in range(4):
            await send_all(n, sub("42"), [row(i, paper(i))])
            await send_all(n, sub("-77"), [row(i, paper(i))])
    finally:
        await n.close()
    for chat, interval in ((42, 0.2), (-77, 60 / 300)):
        times = telegram.arrivals(chat)
        assert len(times) == 4
        assert min(b - a for a, b in itertools.pairwise(times)) >= interval * 0.9


def test_default_limits_are_telegrams() -> None:
    assert TELEGRAM_LIMITS.max_chars == 4096
    assert TELEGRAM_LIMITS.overall_rate == 30
    assert TELEGRAM_LIMITS.per_recipient_interval == 1
    assert TELEGRAM_LIMITS.group_per_minute == 20


# -- the face: commands as users type them ---------------------------------------------------

NOW = datetime.now(UTC)
RECENT = [paper(i, title=f"Video anomaly detection {i}", published=NOW) for i in range(1, 6)]

FaceFactory = Callable[..., Awaitable[TelegramFace]]


@pytest.fixture
async def arxiv() -> AsyncIterator[FakeArxiv]:
    async with FakeArxiv(papers=list(RECENT)) as fake:
        yield fake


@pytest.fixture
async def app(tmp_path: Path, arxiv: FakeArxiv) -> AsyncIterator[App]:
    cfg = Config()
    cfg.arxiv.api_url = arxiv.url
    cfg.storage.path = tmp_path / "papers.db"
    store = await AsyncStore(cfg.storage.path).open()
    client = ArxivClient(arxiv.url, request_interval=0.0, max_attempts=2)
    yield App(cfg, Secrets(), store, client)
    await client.aclose()
    await store.close()


@pytest.fixture
async def make_face(telegram: FakeTelegram, app: App) -> AsyncIterator[FaceFactory]:
    faces: list[TelegramFace] = []

    async def make(**options: object) -> TelegramFace:
        cfg = TelegramConfig(api_url=telegram.base_url, **options)  # type: ignore[arg-type]
        face = TelegramFace(cfg, telegram.token, limits=FAST)
        await face.start(app)
        faces.append(face)
        return face

    yield make
    for face in faces:
        await face.stop()
        await face.notifier.close()


def texts(telegram: FakeTelegram, chat: int) -> list[str]:
    return [m.visible_text for m in telegram.messages_to(chat)]


async def subscriber(app: App, address: str, topic: str | None = None) -> Subscriber | None:
    return await app.store.call(sub_repo.find, "telegram", address, topic)


async def keywords_of(app: App, address: str, topic: str | None = None) -> list[str]:
    def run(store: Store) -> list[str]:
        s = sub_repo.find(store.db, "telegram", address, topic)
        return [k.display for k, _ in sub_repo.subscriptions(store.db, s.id)] if s else []

    return await app.store.run(run)


def test_parse_command_keeps_the_raw_keyword() -> None:
    assert parse_command("/subscribe graph  neural\u00a0networks", "Bot") == (
        "subscribe", "graph  neural\u00a0networks", False)
    assert parse_command("/subscribe\nvideo  anomaly", "Bot") == ("subscribe", "video  anomaly",
                                                                   False)
    assert parse_command("/Subscribe@bot x", "Bot") == ("subscribe", "x", True)
    assert parse_command("/subscribe@OtherBot x", "Bot") is None
    assert parse_command("/list", "Bot") == ("list", "", False)


async def test_subscribe_replies_at_once_then_shows_the_first_look(
    telegram: FakeTelegram, make_face: FaceFactory, app: App
) -> None:
    await make_face()
    assert [c["command"] for c in telegram.commands_set[0]["commands"]] == [
        "subscribe", "unsubscribe", "list", "latest", "digest", "timezone", "feed", "help"]
    telegram.push_command(42, "/subscribe\nVideo  anomaly detection")
    await telegram.wait_sent(2, 42)
    first, second = texts(telegram, 42)
    assert first.startswith("Subscribed to 'Video anomaly detection' (arXiv query: "
                            'ti:"video anomaly detection" OR abs:"video anomaly detection")')
    assert "first look at arXiv is under way" in first
    assert second.startswith("First look done for 'Video anomaly detection'. The newest papers:")
    shown = [line for line in second.split("\n") if line.startswith("Video anomaly detection ")]
    assert shown == ["Video anomaly detection 1", "Video anomaly detection 2",
                     "Video anomaly detection 3"]
    assert await keywords_of(app, "42") == ["Video anomaly detection"]
    assert all(m.previews_disabled and m.parse_mode == "HTML" for m in telegram.sent)


async def test_commands_for_other_bots_and_edits_are_ignored_bare_subscribe_answered(
    telegram: FakeTelegram, make_face: FaceFactory
) -> None:
    await make_face()
    telegram.push_command(-100, "/subscribe@OtherBot alpha beta", chat_type="group")
    telegram.push_command(-100, "/frobnicate", chat_type="group")  # some other bot's command
    telegram.push_command(42, "/subscribe alpha beta", edited=True)
    telegram.push_command(42, "/subscribe")
    telegram.push_command(-100, "/list@DailyPapersBot", chat_type="group")
    await telegram.wait_sent(1, -100)
    assert texts(telegram, 42) == ["Which keyword? For example: /subscribe video anomaly detection"]
    assert texts(telegram, -100) == ["No keywords are followed here yet. "
                                     "Try /subscribe video anomaly detection"]


async def test_in_groups_only_admins_change_subscriptions(
    telegram: FakeTelegram, make_face: FaceFactory, app: App
) -> None:
    await make_face()
    telegram.set_member_status(-100, "member", user_id=5)
    telegram.set_member_status(-100, "administrator", user_id=6)
    telegram.push_command(-100, "/subscribe@DailyPapersBot alpha beta", chat_type="group",
                          user_id=5)
    telegram.push_command(-100, "/subscribe alpha beta", chat_type="group", user_id=6)
    await telegram.wait_sent(2, -100)
    refused, accepted = texts(telegram, -100)[:2]
    assert refused == "Only administrators of this group can change its subscriptions."
    assert accepted.startswith("Subscribed to 'alpha beta'")
    assert await keywords_of(app, "-100") == ["alpha beta"]


async def test_allowed_chats_and_forum_topics(
    telegram: FakeTelegram, make_face: FaceFactory, app: App
) -> None:
    await make_face(allowed_chats=[-1009], group_admins_only=False)
    telegram.push_command(42, "/subscribe alpha beta")
    telegram.push_command(-1009, "/subscribe gamma delta", chat_type="supergroup", thread_id=3)
    await telegram.wait_sent(1, -1009)
    assert "not on its list of allowed chats" in texts(telegram, 42)[0]
    assert telegram.messages_to(-1009)[0].message_thread_id == 3
    assert await keywords_of(app, "-1009", "3") == ["gamma delta"]
    assert await subscriber(app, "42") is None


async def test_more_than_ten_commands_a_minute_get_one_slow_down(
    telegram: FakeTelegram, make_face: FaceFactory
) -> None:
    await make_face()
    for _ in range(13):
        telegram.push_command(42, "/help")
    telegram.push_command(43, "/help")
    await telegram.wait_sent(1, 43)  # another chat is not held up by 42's (paced) replies
    assert len(texts(telegram, 42)) < 11
    await telegram.wait_sent(11, 42, timeout=60)
    replies = texts(telegram, 42)
    assert len(replies) == 11
    assert replies[-1].startswith("Slow down")


async def test_the_bot_long_polls_inside_the_daemon_with_a_short_timeout(
    telegram: FakeTelegram, make_face: FaceFactory
) -> None:
    await make_face()
    telegram.push_command(42, "/help")  # the long poll that carries it is then on record
    await telegram.wait_sent(1, 42)
    timeouts = {int(c.params["timeout"]) for c in telegram.calls_to("getUpdates")}
    assert timeouts and all(0 < t <= 5 for t in timeouts), timeouts


async def test_help_in_a_group_shows_the_command_form_with_our_name(
    telegram: FakeTelegram, make_face: FaceFactory
) -> None:
    face = await make_face()
    telegram.push_command(-77, "/help", chat_type="group")
    telegram.push_command(42, "/help")
    await telegram.wait_sent(1, -77)
    await telegram.wait_sent(1, 42)
    group, private = texts(telegram, -77)[0], texts(telegram, 42)[0]
    assert f"/subscribe@{face.username} KEYWORD" in group
    assert "Only administrators change this group's subscriptions." in group
    assert f"@{face.username}" not in private


async def test_replies_keep_to_the_chat_limits_too(
    telegram: FakeTelegram, make_face: FaceFactory
) -> None:
    await make_face()  # FAST: 0.2 s per chat, 300/min (0.2 s) per group
    for chat, kind in ((-77, "group"), (42, "private")):
        for _ in range(3):
            telegram.push_command(chat, "/help", chat_type=kind)
    await telegram.wait_sent(3, -77)
    await telegram.wait_sent(3, 42)
    for chat in (-77, 42):
        times = telegram.arrivals(chat)
        assert min(b - a for a, b in itertools.pairwise(times)) >= 0.2 * 0.9, times


async def test_a_list_longer_than_one_message_is_split_between_lines_not_cut(
    telegram: FakeTelegram, make_face: FaceFactory, app: App
) -> None:
    await make_face()
    names = [f"keyword number {i:02d} on sparse mixture of experts for vision" for i in range(50)]

    def follow(store: Store) -> None:
        for name in names:
            subscribe_address(store, app.cfg, "telegram", "42", name, datetime.now(UTC))

    await app.store.run(follow)
    telegram.push_command(42, "/list")
    await telegram.wait_for(lambda: names[-1] in "".join(texts(telegram, 42)))
    shown = "\n".join(texts(telegram, 42))
    assert len(texts(telegram, 42)) >= 2 and "…" not in shown
    listed = [line[2:].split(" — ")[0] for line in shown.split("\n") if line.startswith("• ")]
    assert listed == names


async def test_blocked_chat_is_deactivated_and_comes_back_with_a_command(
    telegram: FakeTelegram, make_face: FaceFactory, app: App
) -> None:
    await make_face()
    telegram.push_command(42, "/subscribe alpha beta")
    await telegram.wait_sent(2, 42)
    telegram.push_my_chat_member(42, "kicked", chat_type="private")
    telegram.push_command(43, "/help")  # updates are handled in order: a marker
    await telegram.wait_sent(1, 43)
    gone = await subscriber(app, "42")
    assert gone is not None and not gone.active
    assert gone.inactive_reason == "the user blocked the bot"
    telegram.push_command(42, "/start")  # the user unblocks the bot and presses Restart
    await telegram.wait_sent(3, 42)
    assert texts(telegram, 42)[2].startswith("Welcome back")
    back = await subscriber(app, "42")
    assert back is not None and back.active
    assert await keywords_of(app, "42") == ["alpha beta"]


async def test_a_group_that_becomes_a_supergroup_keeps_its_subscriptions(
    telegram: FakeTelegram, make_face: FaceFactory, app: App
) -> None:
    await make_face(group_admins_only=False)
    telegram.push_command(-55, "/subscribe alpha beta", chat_type="group")
    await telegram.wait_sent(2, -55)
    telegram.push_migration(-55, -1000055)
    telegram.push_command(-1000055, "/list", chat_type="supergroup")
    await telegram.wait_sent(1, -1000055)
    assert texts(telegram, -1000055)[0].startswith("1 keyword followed here:\n• alpha beta")
    assert await subscriber(app, "-55") is None


async def test_a_chat_waiting_between_the_parts_of_its_batch_does_not_hold_up_others(
        telegram: FakeTelegram, store: AsyncStore, clock: Clock, paper: PaperFactory,
        add_keyword: KeywordFactory, add_subscriber: SubscriberFactory) -> None:
    """max_in_flight 1 and two-part batches: every chat's first part goes before anyone's
    second, which waits for its own chat's interval (a group's is longer)."""
    limits = TelegramLimits(max_chars=4096, per_recipient_interval=0.3, group_per_minute=120,
                            max_in_flight=1)
    kw = await add_keyword("graph neural networks")
    chats = ["-77", "41", "42", "43", "44", "45"]
    for chat in chats:
        await add_subscriber("telegram", chat, kw)
    now = clock.now()
    news = [paper(abstract="Graph neural networks, at length. " * 20) for _ in range(10)]
    current = await store.call(kw_repo.get, kw.id)
    await store.call(polls.commit_poll, current, news, baseline=False, now=now, max_papers=100,
                     notify_floor=now - timedelta(days=14), total_results=len(news))
    await store.call(outbox.release, now, lambda s: now)
    n = TelegramNotifier(sendout_bot(telegram.token, telegram.base_url), limits)
    await n.start()
    try:
        assert await Dispatcher(store, {"telegram": n}, clock.now).drain() == 2 * len(chats)
    finally:
        await n.close()
    order = [(m.chat_id, m.visible_text.split("\n")[0]) for m in telegram.sent]
    first = [i for i, (_, head) in enumerate(order) if head.endswith("(1/2)")]
    second = [i for i, (_, head) in enumerate(order) if head.endswith("(2/2)")]
    assert len(first) == len(second) == len(chats)
    assert max(first) < min(second), order
    for chat, interval in ((-77, 0.5), (41, 0.3)):
        a, b = telegram.arrivals(chat)
        assert b - a >= interval * 0.9


@pytest.mark.parametrize(("failure", "chat_gone"), [
    (Failure.blocked(), True),
    (Failure.bad_request("Bad Request: message thread not found"), False),
])
async def test_a_forum_that_blocked_the_bot_is_gone_with_every_topic_at_once(
        telegram: FakeTelegram, store: AsyncStore, clock: Clock, paper: PaperFactory,
        add_keyword: KeywordFactory, failure: Failure, chat_gone: bool) -> None:
    kw = await add_keyword("graph neural networks")
    for topic in ("7", "8"):
        sub = await store.call(sub_repo.ensure, "telegram", "-100500", clock.now(), topic)
        await store.call(sub_repo.subscribe, sub, kw, "user", clock.now())
    now = clock.now()
    current = await store.call(kw_repo.get, kw.id)
    await store.call(polls.commit_poll, current, [paper()], baseline=False, now=now,
                     max_papers=100, notify_floor=now - timedelta(days=14), total_results=1)
    await store.call(outbox.release, now, lambda s: now)
    telegram.fail(failure, chat_id=-100500, times=None)
    n = TelegramNotifier(sendout_bot(telegram.token, telegram.base_url), UNLIMITED)
    await n.start()
    try:
        await Dispatcher(store, {"telegram": n}, clock.now).drain()
    finally:
        await n.close()
    topics = [await store.call(sub_repo.find, "telegram", "-100500", t) for t in ("7", "8")]
    assert [s.active for s in topics] == [False, False]
    # A blocked bot is told once for the whole chat; a missing topic only for its own topic,
    # so the other topic was still tried (here the fake refuses it the same way).
    tries = len([c for c in telegram.calls_to("sendMessage") if c.chat_id == -100500])
    assert tries == (1 if chat_gone else 2)


async def test_replies_take_the_next_slot_ahead_of_a_send_out(telegram: FakeTelegram) -> None:
    limits = TelegramLimits(max_chars=4096, overall_rate=10.0, max_in_flight=16)
    flood = FloodControl(limits)
    n = TelegramNotifier(sendout_bot(telegram.token, telegram.base_url), limits, flood=flood)
    await n.start()
    bot = Bot(telegram.token, base_url=telegram.base_url)
    await bot.initialize()

    async def reply() -> None:
        await flood.before_reply("9")
        await bot.send_message(9, "reply")

    try:
        sends = [asyncio.create_task(send_all(n, sub(str(100 + i)), [row(i, paper(i))]))
                 for i in range(10)]
        await telegram.wait_sent(2)  # the send-out is under way
        await reply()
        await asyncio.gather(*sends)
    finally:
        await n.close()
        await bot.shutdown()
    order = [m.chat_id for m in telegram.sent]
    assert order.index(9) <= 3, f"the reply waited behind the send-out: {order}"
