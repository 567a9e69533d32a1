"""Faults of the deliver stage: every refusal Telegram, Slack and an SMTP server can give, through
the real dispatcher, the real notifiers and the local fake services.

Each case fails one recipient among several on all three channels and checks what DESIGN.md
says: retry later, failed, gone (deactivated), paused, or channel stopped; that the answer is
counted in /metrics (`daily_papers_deliveries_total{channel,result}`); and that every other
recipient got its message in the same round, not after the failing one's backoff.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from bot import metrics
from bot.config import load_config
from bot.deliver.dispatcher import Dispatcher
from bot.faces.commands import subscribe_address
from notifiers.base import Delivery, Limits, Message, Notifier, Outcome
from notifiers.email import EmailNotifier, SmtpSettings
from notifiers.slack import SlackNotifier
from notifiers.telegram import TELEGRAM_LIMITS, UNLIMITED, TelegramNotifier, sendout_bot
from storage import outbox, polls
from storage import subscribers as sub_repo
from storage.records import Keyword, OutboxRow, Paper, Subscriber
from storage.store import AsyncStore, Store
from tests.conftest import Clock, KeywordFactory, PaperFactory, SubscriberFactory
from tests.fakes.arxiv_server import FakeArxiv
from tests.fakes.daemon import DaemonProcess, write_config
from tests.fakes.slack_server import FakeSlack
from tests.fakes.smtp_server import FakeSMTP
from tests.fakes.telegram_server import Failure, FakeTelegram

TOKEN = "777:faults-token"
SMTP_USER, SMTP_PASSWORD = "papers@example.org", "smtp-faults-pw"
RECIPIENTS = 4  # per channel; the first one is the one that fails
ADDRESSES = {
    "telegram": [str(700 + i) for i in range(RECIPIENTS)],
    "slack": [f"C0FAULT{i:03d}" for i in range(RECIPIENTS)],
    "email": [f"reader{i}@example.org" for i in range(RECIPIENTS)],
}
VICTIM = {channel: addresses[0] for channel, addresses in ADDRESSES.items()}


def deliveries(channel: str, result: str) -> float:
    """The counter as /metrics exposes it (the same registry, rendered to Prometheus text)."""
    text = generate_latest(metrics.REGISTRY).decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if (sample.name == "daily_papers_deliveries_total"
                    and sample.labels == {"channel": channel, "result": result}):
                return sample.value
    return 0.0


@dataclass
class World:
    """One store, one keyword, four subscribers per channel, the three fakes and notifiers."""

    store: AsyncStore
    clock: Clock
    kw: Keyword
    telegram: FakeTelegram
    slack: FakeSlack
    smtp: FakeSMTP
    notifiers: dict[str, Notifier]
    subs: dict[str, list[Subscriber]] = field(default_factory=dict)

    def dispatcher(self) -> Dispatcher:
        return Dispatcher(self.store, self.notifiers, self.clock.now)

    async def queue(self, *papers: Paper) -> None:
        """What a poll that found `papers` commits, released for instant delivery."""
        now = self.clock.now()
        await self.store.call(polls.commit_poll, self.kw, list(papers), baseline=False, now=now,
                              max_papers=100, notify_floor=now - timedelta(days=14),
                              total_results=len(papers))
        await self.store.call(outbox.release, now, lambda s: now)

    def received(self, channel: str, address: str) -> int:
        if channel == "telegram":
            return len(self.telegram.messages_to(int(address)))
        if channel == "slack":
            return len(self.slack.posts_to(address))
        return len(self.smtp.messages_to(address))

    def others_received(self, skip: str | None = None) -> dict[str, list[int]]:
        """Messages per recipient that is not failing (a stopped channel's are all skipped)."""
        return {channel: [self.received(channel, a) for a in addresses[1:]]
                for channel, addresses in ADDRESSES.items() if channel != skip}

    async def subscriber(self, channel: str) -> Subscriber:
        sub = await self.store.call(sub_repo.find, channel, VICTIM[channel])
        assert sub is not None
        return sub

    async def rows(self, channel: str) -> list[dict[str, Any]]:
        sub = await self.subscriber(channel)
        return await self.store.run(lambda s: list(s.db.query(
            "SELECT status, attempts, last_error, next_attempt FROM outbox "
            "WHERE subscriber_id = ? ORDER BY id", [sub.id])))


@pytest.fixture
async def fakes() -> AsyncIterator[tuple[FakeTelegram, FakeSlack, FakeSMTP]]:
    async with (FakeTelegram(token=TOKEN) as telegram, FakeSlack() as slack,
                FakeSMTP(security="starttls", username=SMTP_USER,
                         password=SMTP_PASSWORD) as smtp):
        yield telegram, slack, smtp


def email_notifier(smtp: FakeSMTP, clock: Clock, password: str = SMTP_PASSWORD,
                   ) -> EmailNotifier:
    settings = SmtpSettings(host=smtp.host, port=smtp.port, security="starttls",
                            sender=f"Daily Papers <{SMTP_USER}>", username=SMTP_USER,
                            password=password, max_per_minute=10_000)
    return EmailNotifier(settings, tls_context=smtp.client_tls_context(), now=clock.now,
                         links=lambda a, k: f"https://papers.example.org/u?t={a}.{k}")


@contextlib.asynccontextmanager
async def started(notifiers: dict[str, Notifier]) -> AsyncIterator[dict[str, Notifier]]:
    originals = list(notifiers.values())  # a test may swap one in; it closes its own
    try:
        for n in originals:
            await n.start()
        yield notifiers
    finally:
        for n in originals:
            await n.close()


@pytest.fixture
async def world(store: AsyncStore, clock: Clock, paper: PaperFactory,
                add_keyword: KeywordFactory, add_subscriber: SubscriberFactory,
                fakes: tuple[FakeTelegram, FakeSlack, FakeSMTP]) -> AsyncIterator[World]:
    telegram, slack, smtp = fakes
    kw = await add_keyword("graph neural networks")
    subs = {channel: [await add_subscriber(channel, a, kw) for a in addresses]
            for channel, addresses in ADDRESSES.items()}
    notifiers: dict[str, Notifier] = {
        "telegram": TelegramNotifier(sendout_bot(TOKEN, telegram.base_url), TELEGRAM_LIMITS),
        "slack": SlackNotifier(slack.api_url, slack.bot_token),
        "email": email_notifier(smtp, clock),
    }
    async with started(notifiers):
        yield World(store, clock, kw, telegram, slack, smtp, notifiers, subs)


# -- the fault table ---------------------------------------------------------------------------

Program = Callable[[World], None]


@dataclass(frozen=True)
class Case:
    channel: str
    program: Program
    result: str  # the deliveries counter label: sent, retry, failed, gone, paused, broken
    reason: str  # a fragment of the recorded error


def tg(failure: Failure, times: int | None = 1) -> Program:
    return lambda w: w.telegram.fail(failure, chat_id=int(VICTIM["telegram"]), times=times)


def sl(error: str, status: int = 200) -> Program:
    return lambda w: w.slack.fail(error, channel=VICTIM["slack"], status=status)


def mail(answer: str, stage: str = "rcpt") -> Program:
    return lambda w: w.smtp.fail(answer, rcpt=VICTIM["email"], stage=stage)  # type: ignore[arg-type]


CASES = {
    "telegram-429": Case("telegram", tg(Failure.retry_after(1)), "retry", "flood control"),
    "telegram-403-blocked": Case("telegram", tg(Failure.blocked()), "gone", "blocked"),
    "telegram-403-kicked": Case("telegram", tg(Failure.kicked()), "gone", "kicked"),
    "telegram-400-chat-not-found": Case("telegram", tg(Failure.bad_request()), "gone",
                                        "chat not found"),
    "telegram-400-no-rights": Case("telegram", tg(Failure.bad_request(
        "Bad Request: not enough rights to send text messages to the chat")), "failed",
        "not enough rights"),
    "telegram-400-our-entities": Case("telegram", tg(Failure.bad_request(
        "Bad Request: can't parse entities: unexpected end tag")), "failed", "parse entities"),
    "telegram-500": Case("telegram", tg(Failure.server_error(500)), "retry", "Internal"),
    "telegram-502": Case("telegram", tg(Failure.server_error(502)), "retry", "Bad Gateway"),
    "slack-429": Case("slack", lambda w: w.slack.rate_limit(1, channel=VICTIM["slack"]),
                      "retry", "ratelimited"),
    "slack-channel_not_found": Case("slack", sl("channel_not_found"), "gone",
                                    "channel_not_found"),
    "slack-is_archived": Case("slack", sl("is_archived"), "gone", "is_archived"),
    "slack-not_in_channel": Case("slack", sl("not_in_channel"), "paused", "not_in_channel"),
    "slack-internal_error": Case("slack", sl("internal_error", status=500), "retry",
                                 "internal_error"),
    "smtp-421": Case("email", mail("421"), "retry", "421"),
    "smtp-451": Case("email", mail("451"), "retry", "451"),
    "smtp-550": Case("email", mail("550"), "failed", "550"),
    "smtp-554-data": Case("email", mail("554", "data"), "failed", "554"),
    "smtp-5.7.1-spam": Case("email", mail("5.7.1", "data"), "failed", "5.7.1"),
    "smtp-connection-drop": Case("email", mail("drop"), "retry", "connection lost"),
}


async def check_others(w: World, skip: str | None = None) -> None:
    assert w.others_received(skip) == {c: [1] * (RECIPIENTS - 1)
                                       for c in ADDRESSES if c != skip}


@pytest.mark.parametrize("name", list(CASES))
async def test_one_failing_recipient(world: World, paper: PaperFactory, name: str) -> None:
    w, case = world, CASES[name]
    before = deliveries(case.channel, case.result)
    sent_before = deliveries(case.channel, "sent")
    case.program(w)
    await w.queue(paper(), paper())
    dispatcher = w.dispatcher()
    await dispatcher.drain()

    await check_others(w)  # everyone else got one message, in the same round
    assert w.received(case.channel, VICTIM[case.channel]) == 0
    assert deliveries(case.channel, case.result) == before + 1
    assert deliveries(case.channel, "sent") == sent_before + RECIPIENTS - 1
    assert not dispatcher.broken
    sub = await w.subscriber(case.channel)
    rows = await w.rows(case.channel)
    match case.result:
        case "retry":
            assert sub.active
            assert [r["status"] for r in rows] == ["pending", "pending"]
            # A rate limit is the channel slowing down, not an attempt of the rows.
            attempts = 0 if name.endswith("-429") else 1
            assert all(case.reason.lower() in r["last_error"].lower()
                       and r["attempts"] == attempts for r in rows)
            w.clock.advance(timedelta(hours=2))  # past any backoff
            await dispatcher.drain()
            assert w.received(case.channel, VICTIM[case.channel]) == 1
            assert [r["status"] for r in await w.rows(case.channel)] == ["sent", "sent"]
        case "failed":
            assert sub.active
            assert [r["status"] for r in rows] == ["failed", "failed"]
            assert all(case.reason.lower() in r["last_error"].lower() for r in rows)
        case "gone":
            assert not sub.active
            assert case.reason.lower() in (sub.inactive_reason or "").lower()
            assert [r["status"] for r in rows] == ["failed", "failed"]
        case "paused":
            assert not sub.active and (sub.inactive_reason or "").startswith("paused")
            assert [r["status"] for r in rows] == ["pending", "pending"]  # kept for its return
    await check_others(w)  # and nobody got anything twice


@pytest.mark.parametrize("channel", ["telegram", "slack", "email"])
async def test_three_permanent_failures_in_a_row_deactivate(world: World, paper: PaperFactory,
                                                           channel: str) -> None:
    w = world
    program = {"telegram": tg(Failure.bad_request("Bad Request: not enough rights to send "
                                                  "text messages to the chat")),
               "slack": sl("restricted_action"), "email": mail("550")}[channel]
    dispatcher = w.dispatcher()
    for attempt in range(1, 4):
        program(w)
        await w.queue(paper())
        await dispatcher.drain()
        sub = await w.subscriber(channel)
        assert sub.active == (attempt < 3), attempt
        w.clock.advance(timedelta(seconds=5))
    assert "3" in (sub.inactive_reason or "")
    assert w.others_received() == {c: [3] * (RECIPIENTS - 1) for c in ADDRESSES}


class SlowingDown(Notifier):
    """A channel that tells the victim's messages "slow down, retry after 1 s" `times` times."""

    channel = "email"

    def __init__(self, times: int) -> None:
        self.limits = Limits()
        self.left = times
        self.delivered: list[str] = []

    def pack(self, subscriber: Subscriber, rows: Sequence[OutboxRow]) -> list[Message]:
        return [Message(tuple(rows), None)]

    async def send(self, subscriber: Subscriber, message: Message) -> Delivery:
        if subscriber.address == VICTIM["email"] and self.left > 0:
            self.left -= 1
            return Delivery(Outcome.RETRY, "429: slow down", retry_after=1.0, rate_limited=True)
        self.delivered += [r.paper.arxiv_id for r in message.rows]
        return Delivery(Outcome.SENT)


async def test_rate_limits_delay_a_message_but_never_use_up_its_attempts(
        world: World, paper: PaperFactory) -> None:
    w = world
    slowing = SlowingDown(times=12)  # more than the ten attempts a row has
    news = paper()
    await w.queue(news)
    dispatcher = Dispatcher(w.store, {"email": slowing}, w.clock.now)
    for _ in range(13):
        await dispatcher.drain()
        w.clock.advance(timedelta(seconds=1))
    assert slowing.delivered == [news.arxiv_id] * (RECIPIENTS)
    assert [(r["status"], r["attempts"]) for r in await w.rows("email")] == [("sent", 1)]


async def test_a_recipient_that_never_recovers_ends_failed_after_ten_attempts(
        world: World, paper: PaperFactory) -> None:
    w = world
    # Without the 1/s per-chat pace: ten attempts need not take ten seconds.
    fast = TelegramNotifier(sendout_bot(TOKEN, w.telegram.base_url), UNLIMITED)
    w.notifiers["telegram"] = fast
    w.telegram.fail(Failure.server_error(500), chat_id=int(VICTIM["telegram"]), times=None)
    await w.queue(paper())
    dispatcher = w.dispatcher()
    try:
        for _ in range(10):
            await dispatcher.drain()
            w.clock.advance(timedelta(hours=2))  # past the longest backoff (1 h + jitter)
    finally:
        await fast.close()
    rows = await w.rows("telegram")
    assert [(r["status"], r["attempts"]) for r in rows] == [("failed", 10)]
    assert (await w.subscriber("telegram")).active  # a server problem is not the chat's fault
    await check_others(w)


# -- our credentials refused: the channel stops, the rows wait, the other channels go on --------


async def test_telegram_token_refused_stops_telegram_only(world: World,
                                                          paper: PaperFactory) -> None:
    w = world
    w.telegram.fail(Failure(401, "Unauthorized"), times=None)
    before = deliveries("telegram", "broken")
    await w.queue(paper())
    dispatcher = w.dispatcher()
    await dispatcher.drain()
    assert "telegram" in dispatcher.broken and deliveries("telegram", "broken") == before + 1
    assert len(w.telegram.calls_to("sendMessage")) == 1  # stopped at the first refusal
    await check_others(w, skip="telegram")
    assert all(r["status"] == "pending" for r in await w.rows("telegram"))


async def test_slack_invalid_auth_stops_slack_only(world: World, paper: PaperFactory) -> None:
    w = world
    w.slack.fail("invalid_auth", times=None)
    before = deliveries("slack", "broken")
    await w.queue(paper())
    dispatcher = w.dispatcher()
    await dispatcher.drain()
    assert "slack" in dispatcher.broken and deliveries("slack", "broken") == before + 1
    assert "invalid_auth" in dispatcher.broken["slack"]
    assert len(w.slack.calls_to("chat.postMessage")) == 1
    await check_others(w, skip="slack")
    assert w.slack.posts == []
    w.slack.clear_failures()  # the operator fixes the token and restarts: nothing was lost
    await w.dispatcher().drain()
    assert [len(w.slack.posts_to(a)) for a in ADDRESSES["slack"]] == [1] * RECIPIENTS


async def test_smtp_auth_failure_stops_email_only(world: World, paper: PaperFactory) -> None:
    w = world
    wrong = email_notifier(w.smtp, w.clock, password="not-the-password")
    w.notifiers["email"] = wrong
    before = deliveries("email", "broken")
    await w.queue(paper())
    dispatcher = w.dispatcher()
    try:
        await dispatcher.drain()
    finally:
        await wrong.close()
    assert "email" in dispatcher.broken and deliveries("email", "broken") == before + 1
    assert SMTP_USER in dispatcher.broken["email"] and SMTP_PASSWORD not in dispatcher.broken["email"]
    assert w.smtp.connections == 1 and w.smtp.messages == []  # one login tried, no more
    await check_others(w, skip="email")
    pending = await w.store.call(outbox.due_rows, w.subs["email"][1].id, w.clock.now())
    assert len(pending) == 1  # kept for when the password is fixed


# -- the same, seen from outside: the real daemon's /metrics -------------------------------------


def arxiv_paper(n: int, title: str, hours_ago: float) -> Paper:
    published = (datetime.now(UTC) - timedelta(hours=hours_ago)).replace(microsecond=0)
    return Paper(arxiv_id=f"2513.{n:05d}", version=1, title=title, abstract=f"{title}.",
                 authors=("Ada Lovelace",), published=published, updated=published,
                 primary_category="cs.LG", categories=("cs.LG",))


@pytest.mark.slow
async def test_daemon_metrics_count_a_blocked_chat(tmp_path: Path) -> None:
    old = arxiv_paper(1, "Fault counting baseline", 48)
    new = arxiv_paper(2, "Fault counting news", 0.2)
    async with FakeArxiv(papers=[old]) as arxiv, FakeTelegram(token=TOKEN) as telegram:
        config = write_config(tmp_path, f"""
[arxiv]
api_url = "{arxiv.url}"
keywords = ["fault counting"]
poll_interval = 1
schedule = "interval"
request_interval = 0
[storage]
path = "papers.db"
[digest]
path = ""
[telegram]
api_url = "{telegram.base_url}"
[web]
port = 0
""")
        cfg = load_config(config)
        s = Store(cfg.storage.path)
        try:
            for chat in ("801", "802"):
                subscribe_address(s, cfg, "telegram", chat, "fault counting", datetime.now(UTC))
        finally:
            s.close()
        telegram.block(801)
        async with DaemonProcess(config, "run", env={"TELEGRAM_BOT_TOKEN": TOKEN}) as daemon:
            port = (await daemon.wait_for_log(r"listening on http://[\d.]+:(\d+)"))[1]
            await daemon.wait_for_log(r"cycle: 1 keywords polled, 1 ok")
            arxiv.add(new)
            await telegram.wait_sent(1, 802, timeout=30)
            await daemon.wait_for_log(r"telegram 801 deactivated: .*blocked")
            async with aiohttp.ClientSession() as http, http.get(
                    f"http://127.0.0.1:{port}/metrics") as resp:
                text = await resp.text()
            assert await daemon.stop() == 0
    assert re.search(r'daily_papers_deliveries_total\{channel="telegram",result="gone"\} 1\.0',
                     text), text
    assert re.search(r'daily_papers_deliveries_total\{channel="telegram",result="sent"\} 1\.0',
                     text), text
