"""Storage faults while the real `daily-papers run` process works: the disk fills up (or fails
with I/O errors) under it. The test imposes a file-size limit on the running process from
outside (`prlimit`, no root): every write past it fails, exactly as on a full disk, and the
limit is lifted again later.

Nothing may end the daemon; each fault is one log line per place and episode; a message the
service accepted is never sent again because its "sent" mark could not be written; delivery
pauses (nothing else is sent) until the store writes again; /healthz says why meanwhile.
"""

from __future__ import annotations

import asyncio
import resource
import sqlite3
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest

from bot.deliver.dispatcher import Dispatcher
from bot.faces.tokens import Signer
from notifiers.telegram import TELEGRAM_LIMITS, TelegramNotifier, sendout_bot
from storage import outbox, polls
from storage.records import Paper
from storage.store import AsyncStore
from tests.conftest import Clock, KeywordFactory, SubscriberFactory, sent_papers
from tests.fakes.arxiv_server import FakeArxiv
from tests.fakes.daemon import DaemonProcess, run_cli, write_config
from tests.fakes.smtp_server import FakeSMTP
from tests.fakes.telegram_server import FakeTelegram
from tests.test_operability import LISTENING, config_text, free_port, get, health

pytestmark = pytest.mark.slow

TOKEN = "777777:storage-faults-token"
KEYWORD = "sparse autoencoders"
CHATS = (42, 43)
REFUSED = r"(database or disk is full|disk I/O error)"


def paper(n: int, hours_ago: float) -> Paper:
    published = (datetime.now(UTC) - timedelta(hours=hours_ago)).replace(microsecond=0)
    return Paper(arxiv_id=f"2603.{n:05d}", version=1, title=f"On {KEYWORD}, part {n}",
                 abstract=f"We study {KEYWORD} once more ({n}).", authors=("Ada Lovelace",),
                 published=published, updated=published, primary_category="cs.LG",
                 categories=("cs.LG",))


def disk_full(pid: int, db: Path) -> None:
    """Writes past the write-ahead log's current end fail (SQLite: "database or disk is
    full"; a write already past the limit: "disk I/O error")."""
    wal = db.with_name(db.name + "-wal")
    size = wal.stat().st_size if wal.exists() else 0
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (size + 1, resource.RLIM_INFINITY))


def disk_freed(pid: int) -> None:
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[tuple[FakeArxiv, FakeTelegram, Path]]:
    async with FakeArxiv(papers=[paper(n, 24 * n) for n in range(1, 4)]) as arxiv, \
            FakeTelegram(token=TOKEN) as telegram:
        extra = f'[digest]\npath = ""\n[telegram]\napi_url = "{telegram.base_url}"\n'
        config = write_config(tmp_path, config_text(arxiv, free_port(), keywords=(),
                                                    poll_interval=1, extra=extra))
        for chat in CHATS:
            code, _, err = await run_cli(config, "subscribe", "--telegram", str(chat), KEYWORD)
            assert code == 0, err
        yield arxiv, telegram, config


async def test_a_full_disk_during_a_send_out_pauses_delivery_and_sends_nothing_twice(
        world: tuple[FakeArxiv, FakeTelegram, Path]) -> None:
    """Telegram accepts a message, the disk is full when it is to be marked sent: the daemon
    keeps the mark in memory, sends nothing else, says so once, and writes the mark when the
    disk has room again, then serves the other chat. Before, the round aborted and the row went
    again with every wake-up: 5 copies in 4 minutes."""
    arxiv, telegram, config = world
    db = config.parent / "papers.db"
    env = {"TELEGRAM_BOT_TOKEN": TOKEN}
    async with DaemonProcess(config, "run", env=env) as daemon:
        assert daemon.proc is not None
        pid = daemon.proc.pid
        base = (await daemon.wait_for_log(LISTENING)).group(1)
        await daemon.wait_for_log(r"cycle: 1 keywords polled, 1 ok")
        for chat in CHATS:
            telegram.stall(chat)  # the first send of the send-out waits for our signal
        news = paper(100, 0.5)
        arxiv.add(news)
        await telegram.wait_for(lambda: telegram.stalls_waiting == 1, timeout=60)
        disk_full(pid, db)
        filled = time.monotonic()
        for chat in CHATS:
            telegram.unstall(chat)  # Telegram accepts the message in flight
        await daemon.wait_for_log(rf"telegram: delivery paused, the store refused: {REFUSED}; "
                                  r"1 accepted messages wait for their mark")
        code, body = await health(base)
        assert code == 503
        assert any("delivery paused" in p for p in body["problems"]), body
        await daemon.wait_for_log(rf"poll cycle stopped, the store refused: {REFUSED}")
        await arxiv.wait_requests(len(arxiv.requests) + 5)  # five more cycles fail meanwhile
        (first,) = [c for c in CHATS if telegram.messages_to(c)]
        other = next(c for c in CHATS if c != first)

        full_for = time.monotonic() - filled
        disk_freed(pid)
        freed = time.monotonic()
        await daemon.wait_for_log(r"the store writes again after \d+ s")
        await telegram.wait_sent(1, other, timeout=30)
        resumed = time.monotonic() - freed
        for _ in range(2):  # two whole cycles and their wake-ups: nothing goes again
            await daemon.wait_for_log(r"cycle: 1 keywords polled, 1 ok",
                                      after=len(daemon.lines))
        code, body = await health(base)
        assert code == 200 and body["problems"] == []
        assert await daemon.stop() == 0
    print(daemon.log)
    for chat in CHATS:
        got = [m for m in telegram.messages_to(chat) if news.title in m.visible_text]
        assert len(got) == 1, (chat, len(got))
    assert "Traceback" not in daemon.log
    paused = [line for line in daemon.lines if "delivery paused" in line]
    assert len(paused) <= 2, paused  # one per episode (a second only if the error changed)
    errors = len([line for line in daemon.lines if " ERROR " in line])
    print(f"\nfull disk for {full_for:.1f} s during a send-out: 1 copy per chat, nothing sent "
          f"meanwhile, {errors} ERROR lines in all (poll cycles failing every second); the next "
          f"chat served {resumed:.1f} s after the disk had room")


async def test_a_lock_held_past_the_busy_timeout_during_a_send_out_repeats_nothing(
        world: tuple[FakeArxiv, FakeTelegram, Path]) -> None:
    """Another process (a backup tool, a curious operator) holds the write lock for longer
    than the 10 s busy timeout just as Telegram accepts a message: the same as a full disk."""
    arxiv, telegram, config = world
    async with DaemonProcess(config, "run", env={"TELEGRAM_BOT_TOKEN": TOKEN}) as daemon:
        await daemon.wait_for_log(r"cycle: 1 keywords polled, 1 ok")
        for chat in CHATS:
            telegram.stall(chat)
        news = paper(200, 0.5)
        arxiv.add(news)
        await telegram.wait_for(lambda: telegram.stalls_waiting == 1, timeout=60)
        other = sqlite3.connect(config.parent / "papers.db", isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        try:
            for chat in CHATS:
                telegram.unstall(chat)
            await daemon.wait_for_log(r"telegram: delivery paused, the store refused: database "
                                      r"is locked; 1 accepted messages wait", timeout=40)
            assert sum(len(telegram.messages_to(c)) for c in CHATS) == 1
        finally:
            other.execute("ROLLBACK")
            other.close()
        await daemon.wait_for_log(r"the store writes again after \d+ s", timeout=40)
        await telegram.wait_for(lambda: all(telegram.messages_to(c) for c in CHATS), timeout=30)
        await daemon.wait_for_log(r"cycle: 1 keywords polled, 1 ok", after=len(daemon.lines))
        assert await daemon.stop() == 0
    for chat in CHATS:
        assert len([m for m in telegram.messages_to(chat) if news.title in m.visible_text]) == 1
    assert "Traceback" not in daemon.log


async def test_commands_during_a_full_disk_get_a_clear_answer_and_one_log_line(
        world: tuple[FakeArxiv, FakeTelegram, Path]) -> None:
    _, telegram, config = world
    db = config.parent / "papers.db"
    async with DaemonProcess(config, "run", env={"TELEGRAM_BOT_TOKEN": TOKEN}) as daemon:
        assert daemon.proc is not None
        await daemon.wait_for_log(r"cycle: 1 keywords polled, 1 ok")
        disk_full(daemon.proc.pid, db)
        for chat in (7, 8):
            telegram.push_command(chat, "/subscribe graph neural networks")
            await telegram.wait_sent(1, chat, timeout=60)
            assert telegram.messages_to(chat)[0].visible_text.startswith(
                "Sorry, Daily Papers cannot save changes right now")
        telegram.push_command(7, "/list")  # reading still works
        await telegram.wait_sent(2, 7, timeout=60)
        assert telegram.messages_to(7)[1].visible_text.startswith("No keywords are followed")
        disk_freed(daemon.proc.pid)
        await daemon.wait_for_log(r"the store writes again after \d+ s", timeout=30)
        telegram.push_command(7, "/subscribe graph neural networks")
        await telegram.wait_sent(3, 7, timeout=60)
        assert telegram.messages_to(7)[2].visible_text.startswith("Subscribed to")
        assert await daemon.stop() == 0
    lines = [line for line in daemon.lines if "commands not saved" in line]
    assert len(lines) == 1, lines
    assert "Traceback" not in daemon.log


async def test_run_once_stops_delivering_on_a_store_fault_and_marks_what_was_accepted(
        store: AsyncStore, clock: Clock, add_keyword: KeywordFactory,
        add_subscriber: SubscriberFactory, db_path: Path) -> None:
    """`run --once` (Dispatcher.drain): the store refuses the mark of a message Telegram just
    accepted. Nothing more is sent on the channel in this run; the mark is written as soon as
    the store takes it (here on the retry a second later), so the next run sends only the
    rest."""
    kw = await add_keyword(KEYWORD)
    subs = [await add_subscriber("telegram", str(chat), kw) for chat in CHATS]
    news = paper(300, 0.5)
    now = clock.now()
    await store.call(polls.commit_poll, kw, [news], baseline=False, now=now, max_papers=100,
                     notify_floor=now - timedelta(days=14), total_results=1)
    await store.call(outbox.release, now, lambda s: now)
    await store.run(lambda s: s.db.conn.execute("PRAGMA busy_timeout = 200"))
    async with FakeTelegram(token=TOKEN) as telegram:
        notifier = TelegramNotifier(sendout_bot(TOKEN, telegram.base_url), TELEGRAM_LIMITS)
        await notifier.start()
        try:
            dispatcher = Dispatcher(store, {"telegram": notifier}, clock.now)
            for chat in CHATS:
                telegram.stall(chat)
            drain = asyncio.create_task(dispatcher.drain())
            await telegram.wait_for(lambda: telegram.stalls_waiting == 1, timeout=60)
            other = sqlite3.connect(db_path, isolation_level=None)
            other.execute("BEGIN IMMEDIATE")  # past the (lowered) busy timeout
            for chat in CHATS:
                telegram.unstall(chat)
            await telegram.wait_sent(1, timeout=60)
            async with asyncio.timeout(60):
                while not dispatcher.faults.active:  # the mark was refused
                    await asyncio.sleep(0.01)
            assert len(dispatcher.answers.owed["telegram"]) == 1
            other.execute("ROLLBACK")
            other.close()
            await drain
            assert len(telegram.sent) == 1  # the channel stopped after the refused mark
            assert not dispatcher.answers.owed["telegram"]
            assert await Dispatcher(store, {"telegram": notifier}, clock.now).drain() == 1
        finally:
            await notifier.close()
    received = [await store.call(sent_papers, sub.id) for sub in subs]
    assert received == [[news.arxiv_id]] * 2
    assert sorted(m.chat_id for m in telegram.sent) == list(CHATS)


async def test_an_unsubscribe_link_during_a_full_disk_answers_503_and_works_after(
        tmp_path: Path) -> None:
    """A page whose change cannot be saved says so (503, try again) instead of a 500 with a
    traceback in the log; the same link works once the disk has room."""
    secret = "storage-faults-unsubscribe-key"
    reader = "reader@example.org"
    async with FakeArxiv(papers=[paper(1, 24)]) as arxiv, FakeSMTP() as smtp:
        port = free_port()
        config = write_config(tmp_path, config_text(
            arxiv, port, keywords=(), poll_interval=1,
            extra=f'[digest]\npath = ""\n{smtp.email_table()}'))
        code, _, err = await run_cli(config, "subscribe", "--email", reader, KEYWORD)
        assert code == 0, err
        link = f"http://127.0.0.1:{port}/unsubscribe?t={Signer(secret).token(reader)}"
        env = {"DAILY_PAPERS_SECRET": secret}
        async with DaemonProcess(config, "run", env=env) as daemon, aiohttp.ClientSession() as http:
            assert daemon.proc is not None
            await daemon.wait_for_log(r"cycle: 1 keywords polled, 1 ok")
            disk_full(daemon.proc.pid, tmp_path / "papers.db")
            for _ in range(2):
                async with http.post(link) as resp:
                    assert resp.status == 503
                    assert "try again in a few minutes" in await resp.text()
            assert (await get(link))[0] == 200  # showing the page only reads
            disk_freed(daemon.proc.pid)
            await daemon.wait_for_log(r"the store writes again after \d+ s", timeout=30)
            async with http.post(link) as resp:
                assert resp.status == 200
            assert await daemon.stop() == 0
    refused = [line for line in daemon.lines if "POST /unsubscribe not saved" in line]
    assert len(refused) == 1, refused
    assert "Traceback" not in daemon.log and secret not in daemon.log
    _, out, _ = await run_cli(config, "subscriptions")
    assert reader not in out
