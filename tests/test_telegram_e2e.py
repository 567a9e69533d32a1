"""End to end through the whole pipeline (fetch → diff/store → outbox → deliver): the real
`daily-papers run` process against the local arXiv and Telegram Bot API servers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.config import load_config
from bot.faces.commands import subscribe_address
from storage import subscribers as sub_repo
from storage.records import Paper, Subscriber
from storage.store import Store
from tests.fakes import zygote
from tests.fakes.arxiv_server import FakeArxiv, Fault
from tests.fakes.telegram_server import Failure, FakeTelegram

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "123456:E2E-secret-token"
KEYWORD = "video anomaly detection"
QUERY = f'ti:"{KEYWORD}" OR abs:"{KEYWORD}"'
SENTINEL = 1  # a chat that only says /help to see that the bot is up

pytestmark = pytest.mark.slow


def paper(n: int, title: str, *, hours_ago: float = 1.0) -> Paper:
    published = datetime.now(UTC) - timedelta(hours=hours_ago)
    return Paper(arxiv_id=f"2511.{n:05d}", version=1, title=title,
                 abstract=f"{title}. We propose a method and evaluate it.",
                 authors=("Ada Lovelace", "Alan Turing"), published=published,
                 updated=published, primary_category="cs.CV", categories=("cs.CV",))


OLD_PAPERS = [paper(i, f"Video anomaly detection baseline {i}", hours_ago=24 * i)
              for i in range(1, 5)]


class Daemon:
    """One `daily-papers run` process with a temporary config; its output kept for failures."""

    def __init__(self, tmp: Path, arxiv: FakeArxiv, telegram: FakeTelegram, extra: str = ""):
        self.config = tmp / "config.toml"
        self.config.write_text(
            f"""
[arxiv]
api_url = "{arxiv.url}"
keywords = []
poll_interval = 1
schedule = "interval"
request_interval = 0.05
timeout = 5

[storage]
path = "papers.db"

[digest]
path = ""

[telegram]
api_url = "{telegram.base_url}"
{extra}

[web]
port = 0
""", encoding="utf-8")
        self.db_path = tmp / "papers.db"
        self.proc: zygote.Process | None = None
        self.output: list[str] = []
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        env = {**os.environ, "TELEGRAM_BOT_TOKEN": TOKEN, "PYTHONPATH": str(ROOT)}
        env.pop("DAILY_PAPERS_CONFIG", None)
        self.proc = await zygote.spawn("bot", "--config", str(self.config), "run", cwd=ROOT,
                                       env=env, stdout=zygote.PIPE, stderr=zygote.STDOUT)
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        async for line in self.proc.stdout:
            self.output.append(line.decode(errors="replace").rstrip())

    async def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(sig)
        code = await asyncio.wait_for(self.proc.wait(), 20)
        if self._reader is not None:
            await self._reader
        return code

    def store(self) -> Store:
        return Store(self.db_path)

    def seed(self, chats: Iterator[int] | list[int], keyword: str = KEYWORD) -> None:
        """Subscriptions written before the daemon starts, as `daily-papers subscribe` would."""
        cfg = load_config(self.config)
        store = self.store()
        try:
            for chat in chats:
                subscribe_address(store, cfg, "telegram", str(chat), keyword,
                                  datetime.now(UTC))
        finally:
            store.close()

    def subscriber(self, chat: int) -> Subscriber | None:
        store = self.store()
        try:
            return sub_repo.find(store.db, "telegram", str(chat))
        finally:
            store.close()


@pytest.fixture
async def arxiv() -> AsyncIterator[FakeArxiv]:
    async with FakeArxiv(papers=list(OLD_PAPERS)) as fake:
        yield fake


@pytest.fixture
async def telegram() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram(token=TOKEN) as fake:
        yield fake


@pytest.fixture
async def start_daemon(tmp_path: Path, arxiv: FakeArxiv, telegram: FakeTelegram
                       ) -> AsyncIterator[Callable[..., Daemon]]:
    daemons: list[Daemon] = []

    def make(extra: str = "") -> Daemon:
        daemon = Daemon(tmp_path, arxiv, telegram, extra)
        daemons.append(daemon)
        return daemon

    yield make
    for daemon in daemons:
        if daemon.proc is not None and daemon.proc.returncode is None:
            await daemon.stop()
    assert not any(TOKEN in line for d in daemons for line in d.output), "token in the log"


async def listening(telegram: FakeTelegram, daemon: Daemon) -> None:
    """Start the daemon and wait until it answers a command (a long poll is only recorded
    when it ends, so waiting for getUpdates itself would wait out its timeout)."""
    await daemon.start()
    telegram.push_command(SENTINEL, "/help")
    try:
        await telegram.wait_sent(len(telegram.messages_to(SENTINEL)) + 1, SENTINEL, timeout=60)
    except AssertionError:
        print("\n".join(daemon.output))
        raise


async def next_cycle(arxiv: FakeArxiv, last_query: str) -> None:
    """Wait until a cycle polled its last keyword: the next poll starts a new cycle."""
    seen = len(arxiv.requests)
    while True:
        await arxiv.wait_requests(seen + 1)
        seen += 1
        if arxiv.requests[seen - 1].params.get("search_query") == last_query:
            return


async def publish_between_cycles(arxiv: FakeArxiv, last_query: str, *papers: Paper) -> None:
    """Add papers so that one whole cycle sees them: hold its first poll, add, release."""
    await next_cycle(arxiv, last_query)
    release = asyncio.Event()
    arxiv.push(Fault("hold", release=release))
    count = len(arxiv.requests)
    await arxiv.wait_requests(count + 1)
    arxiv.add(*papers)
    release.set()


def titled(telegram: FakeTelegram, chat: int, title: str) -> list[str]:
    return [m.visible_text for m in telegram.messages_to(chat) if title in m.visible_text]


async def subscribe(telegram: FakeTelegram, chat: int, keyword: str, *, replies: int = 2,
                    **options: object) -> None:
    """Subscribe through the bot; wait for the reply and (a new keyword's) first look."""
    before = len(telegram.messages_to(chat))
    telegram.push_command(chat, f"/subscribe {keyword}", **options)  # type: ignore[arg-type]
    await telegram.wait_sent(before + replies, chat, timeout=60)


# -- scenarios --------------------------------------------------------------------------------


async def test_a_new_paper_arrives_once_naming_every_matching_keyword(
    telegram: FakeTelegram, arxiv: FakeArxiv, start_daemon: Callable[..., Daemon]
) -> None:
    daemon = start_daemon()
    await listening(telegram, daemon)
    await subscribe(telegram, 42, KEYWORD)
    reply, first_look = [m.visible_text for m in telegram.messages_to(42)]
    assert reply.startswith(f"Subscribed to '{KEYWORD}' (arXiv query: {QUERY})")
    assert first_look.startswith(f"First look done for '{KEYWORD}'")
    assert "Video anomaly detection baseline 1" in first_look
    await subscribe(telegram, 42, "anomaly detection")
    await subscribe(telegram, 43, KEYWORD, replies=1)

    title = "Video anomaly detection with world models"
    await publish_between_cycles(arxiv, 'ti:"anomaly detection" OR abs:"anomaly detection"',
                                 paper(900, title, hours_ago=0.5))
    await telegram.wait_for(lambda: bool(titled(telegram, 42, title))
                            and bool(titled(telegram, 43, title)), timeout=20)
    await next_cycle(arxiv, QUERY)
    await next_cycle(arxiv, QUERY)  # two more cycles: nothing is sent again
    (to_42,) = titled(telegram, 42, title)
    (to_43,) = titled(telegram, 43, title)
    assert to_42.startswith("New on arXiv: 1 paper\n\n" + title)
    assert "· video anomaly detection, anomaly detection\n" in to_42 or \
        "· anomaly detection, video anomaly detection\n" in to_42
    assert "· video anomaly detection\n" in to_43
    assert await daemon.stop() == 0


async def test_a_blocked_chat_is_deactivated_and_not_tried_again(
    telegram: FakeTelegram, arxiv: FakeArxiv, start_daemon: Callable[..., Daemon]
) -> None:
    daemon = start_daemon()
    await listening(telegram, daemon)
    await subscribe(telegram, 42, KEYWORD)
    await subscribe(telegram, 43, KEYWORD, replies=1)
    telegram.block(42)
    await publish_between_cycles(arxiv, QUERY, paper(901, "Video anomaly detection first"))
    await telegram.wait_for(lambda: bool(titled(telegram, 43, "first")), timeout=60)
    await telegram.wait_for(lambda: any(c.status == 403 for c in telegram.calls_to("sendMessage")))
    await publish_between_cycles(arxiv, QUERY, paper(902, "Video anomaly detection second"))
    await telegram.wait_for(lambda: bool(titled(telegram, 43, "second")), timeout=60)
    await next_cycle(arxiv, QUERY)
    tries = [c for c in telegram.calls_to("sendMessage") if c.chat_id == 42 and c.status == 403]
    assert len(tries) == 1
    await daemon.stop()
    gone = daemon.subscriber(42)
    assert gone is not None and not gone.active
    assert "blocked" in (gone.inactive_reason or "")


async def test_flood_control_delays_but_loses_nothing(
    telegram: FakeTelegram, arxiv: FakeArxiv, start_daemon: Callable[..., Daemon]
) -> None:
    daemon = start_daemon()
    await listening(telegram, daemon)
    await subscribe(telegram, 42, KEYWORD)
    telegram.fail(Failure.retry_after(1), chat_id=42)
    title = "Video anomaly detection under flood control"
    await publish_between_cycles(arxiv, QUERY, paper(903, title))
    await telegram.wait_for(lambda: bool(titled(telegram, 42, title)), timeout=60)
    refused = [c for c in telegram.calls_to("sendMessage") if c.status == 429]
    assert len(refused) == 1
    (delivered,) = [m for m in telegram.messages_to(42) if title in m.visible_text]
    assert delivered.at - refused[0].at >= 1.0  # Telegram's retry_after was honoured
    assert await daemon.stop() == 0


async def test_a_group_that_became_a_supergroup_keeps_its_subscription(
    telegram: FakeTelegram, arxiv: FakeArxiv, start_daemon: Callable[..., Daemon]
) -> None:
    daemon = start_daemon("group_admins_only = false")
    await listening(telegram, daemon)
    await subscribe(telegram, -55, KEYWORD, chat_type="group")
    telegram.fail(Failure.migrated(-100055), chat_id=-55, times=None)  # no service message seen
    title = "Video anomaly detection in supergroups"
    await publish_between_cycles(arxiv, QUERY, paper(904, title))
    await telegram.wait_for(lambda: bool(titled(telegram, -100055, title)), timeout=60)
    telegram.push_command(-100055, "/list", chat_type="supergroup")
    await telegram.wait_sent(2, -100055)
    assert telegram.messages_to(-100055)[1].visible_text.startswith(
        f"1 keyword followed here:\n• {KEYWORD}")
    await daemon.stop()
    assert daemon.subscriber(-55) is None


async def test_sigkill_during_a_send_out_then_restart_loses_nothing(
    telegram: FakeTelegram, arxiv: FakeArxiv, start_daemon: Callable[..., Daemon]
) -> None:
    chats = list(range(1000, 1200))
    daemon = start_daemon()
    daemon.seed(chats)
    await listening(telegram, daemon)
    title = "Video anomaly detection survives a crash"
    await publish_between_cycles(arxiv, QUERY, paper(905, title))
    await telegram.wait_sent(40, timeout=30)
    await daemon.stop(signal.SIGKILL)
    assert len(telegram.sent) < len(chats), "killed too late to prove anything"

    again = start_daemon()
    await again.start()
    await telegram.wait_for(lambda: {m.chat_id for m in telegram.sent} >= set(chats),
                            timeout=60)
    counts = Counter(m.chat_id for m in telegram.sent if title in m.visible_text)
    assert set(counts) == set(chats)
    assert sum(n - 1 for n in counts.values()) <= 1  # max_in_flight = 1: at most one twice
    assert await again.stop() == 0


async def test_a_command_during_a_big_send_out_is_answered_first(
    telegram: FakeTelegram, arxiv: FakeArxiv, start_daemon: Callable[..., Daemon]
) -> None:
    daemon = start_daemon()
    daemon.seed(range(10_000, 12_000))
    await listening(telegram, daemon)
    await publish_between_cycles(arxiv, QUERY, paper(906, "Video anomaly detection for all"))
    await telegram.wait_sent(30, timeout=30)
    telegram.push_command(7, "/subscribe graph neural networks")
    queued_before = len(telegram.sent)
    await telegram.wait_sent(1, 7, timeout=60)
    reply_at = next(i for i, m in enumerate(telegram.sent) if m.chat_id == 7)
    # Send-outs go at 30 a second: 60 of them would be two seconds.
    assert reply_at - queued_before < 60, f"reply came after {reply_at - queued_before} sends"
    assert telegram.sent[reply_at].visible_text.startswith("Subscribed to 'graph neural networks'")
    with contextlib.suppress(AssertionError):
        await telegram.wait_sent(2, 7, timeout=5)
    assert await daemon.stop() == 0


async def test_a_flood_wait_of_an_hour_during_a_send_out_leaves_no_command_unanswered(
    telegram: FakeTelegram, arxiv: FakeArxiv, start_daemon: Callable[..., Daemon]
) -> None:
    """Telegram answers the send-out with 429 retry_after 3600: the send-out waits its hour,
    but replies are still tried (a flood wait is often per method or per chat) and answered
    at once. A reply refused for 3 s holds its own chat only and goes 3 s later; other chats'
    commands are answered meanwhile (commands are handled concurrently)."""
    chats = range(2000, 2010)
    daemon = start_daemon()
    daemon.seed(chats)
    await listening(telegram, daemon)
    telegram.fail(Failure.retry_after(3600))  # the next sendMessage: the send-out's first
    await publish_between_cycles(arxiv, QUERY, paper(907, "Video anomaly detection, paused"))
    await telegram.wait_for(lambda: any(c.status == 429 for c in telegram.calls), timeout=60)

    telegram.fail(Failure.retry_after(3), chat_id=7)
    telegram.push_command(7, "/list")
    await telegram.wait_for(lambda: any(c.chat_id == 7 and c.status == 429
                                        for c in telegram.calls), timeout=10)
    asked = time.monotonic()
    telegram.push_command(8, "/help")
    await telegram.wait_sent(1, 8, timeout=60)
    await telegram.wait_sent(1, 7, timeout=60)
    (refused,) = [c for c in telegram.calls if c.chat_id == 7 and c.status == 429]
    (to_7,), (to_8,) = telegram.messages_to(7), telegram.messages_to(8)
    assert to_8.at < to_7.at and to_7.at - refused.at >= 3.0
    assert to_7.visible_text.startswith("No keywords are followed")
    assert not [m for m in telegram.sent if m.chat_id in chats]  # the send-out still waits
    print(f"\nflood wait of 3600 s on the send-out: a command answered in "
          f"{(to_8.at - asked) * 1000:.0f} ms (including the long poll); a reply refused for "
          f"3 s went {to_7.at - refused.at:.1f} s later")
    assert await daemon.stop() == 0
