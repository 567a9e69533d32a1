"""A clean stop (SIGTERM: a deploy, a reboot) of the real `daily-papers run` process: it repeats
nothing a kill would not have to, and it never waits long for the store.

A message the service is answering when the stop comes is waited for and marked sent, so the
next start does not send it again; a store call that cannot end (another process holds the
write lock for the whole busy timeout, a long statement) does not keep the process past 10 s.
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import threading
from pathlib import Path

import pytest

from storage.database import write
from storage.store import AsyncStore, Store
from tests.fakes.arxiv_server import FakeArxiv
from tests.fakes.daemon import DaemonProcess, run_cli
from tests.fakes.telegram_server import FakeTelegram
from tests.test_storage_faults import CHATS, TOKEN, paper
from tests.test_storage_faults import world as world  # the same daemon world, a fixture

CYCLE = r"cycle: 1 keywords polled, 1 ok"


def statuses(db: Path) -> list[str]:
    with sqlite3.connect(db) as conn:
        return [s for (s,) in conn.execute("SELECT status FROM outbox ORDER BY id")]


@pytest.mark.slow
async def test_sigterm_while_telegram_holds_a_message_marks_it_and_the_next_start_repeats_nothing(
        world: tuple[FakeArxiv, FakeTelegram, Path]) -> None:
    """Before: the stop cancelled the send; Telegram, which had read the request, posted the
    message anyway, its row stayed pending and the next start sent it a second time."""
    arxiv, telegram, config = world
    env = {"TELEGRAM_BOT_TOKEN": TOKEN}
    async with DaemonProcess(config, "run", env=env) as daemon:
        await daemon.wait_for_log(CYCLE)
        for chat in CHATS:
            telegram.stall(chat)
        news = paper(100, 0.5)
        arxiv.add(news)
        await telegram.wait_for(lambda: telegram.stalls_waiting == 1, timeout=60)
        assert daemon.proc is not None
        daemon.proc.send_signal(signal.SIGTERM)
        await daemon.wait_for_log(r"stopping")
        for chat in CHATS:  # Telegram answers while the daemon stops
            telegram.unstall(chat)
        assert await daemon.stop(timeout=10) == 0
    first = [c for c in CHATS if telegram.messages_to(c)]
    assert len(first) == 1  # the one held; the other was not started after the stop
    assert sorted(statuses(config.parent / "papers.db")) == ["pending", "sent"]

    code, _, err = await run_cli(config, "run", "--once", env=env)
    assert code == 0, err
    for chat in CHATS:
        assert [news.title in m.visible_text for m in telegram.messages_to(chat)] == [True]
    assert statuses(config.parent / "papers.db") == ["sent", "sent"]


@pytest.mark.slow
async def test_sigterm_while_another_process_holds_the_write_lock_stops_within_10_s(
        world: tuple[FakeArxiv, FakeTelegram, Path]) -> None:
    """The stop writes too (the lease given back) and a poll's write may be waiting: before,
    each waited out the whole 10 s busy timeout."""
    _, _, config = world
    async with DaemonProcess(config, "run", env={"TELEGRAM_BOT_TOKEN": TOKEN}) as daemon:
        await daemon.wait_for_log(CYCLE)
        other = sqlite3.connect(config.parent / "papers.db", isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        try:
            assert await daemon.stop(timeout=10) == 0
        finally:
            other.execute("ROLLBACK")
            other.close()
    assert "Traceback" not in daemon.log
    code, _, err = await run_cli(config, "status")  # the next command finds the store intact
    assert code == 0, err


async def test_closing_the_store_interrupts_a_long_statement_and_keeps_nothing_of_it(
        tmp_path: Path) -> None:
    """Closing waits a little for the call in progress, then interrupts it: its transaction
    rolls back (before: close waited for it to end, however long)."""
    path = tmp_path / "papers.db"
    astore = await AsyncStore(path).open()
    started = threading.Event()

    def long_write(store: Store) -> None:
        with write(store.db):
            store.db.execute("INSERT INTO settings (key, value) VALUES ('half', 'written')")
            started.set()
            store.db.execute("""WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c
                                WHERE i < 1000000000000) SELECT count(*) FROM c""").fetchall()

    call = asyncio.ensure_future(astore.run(long_write))
    assert await asyncio.to_thread(started.wait, 60)
    await asyncio.wait_for(astore.close(grace=0.1), 60)
    with pytest.raises(sqlite3.OperationalError, match="interrupted"):
        await call
    store = Store(path)
    try:
        assert store.setting("half") is None
        assert store.db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        store.close()
