"""An answer the client cannot read, from the real `daily-papers run` process's point of view: a
service (or a proxy in its way) that posts the message and answers with a body the library
chokes on. The message may have gone, so it is never sent again, and the daemon lives on.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tests.fakes.arxiv_server import FakeArxiv
from tests.fakes.daemon import DaemonProcess
from tests.fakes.telegram_server import FakeTelegram
from tests.test_storage_faults import CHATS, TOKEN, paper
from tests.test_storage_faults import world as world  # the same daemon world, a fixture

pytestmark = pytest.mark.slow

CYCLE = r"cycle: 1 keywords polled, 1 ok"


async def test_an_unreadable_answer_fails_that_message_once_and_the_daemon_goes_on(
        world: tuple[FakeArxiv, FakeTelegram, Path]) -> None:
    """Before: python-telegram-bot's KeyError ended the dispatcher and the daemon (exit 1);
    under systemd every restart posted the same message again before ending once more."""
    arxiv, telegram, config = world
    garbled, fine = CHATS
    telegram.garbled.add(garbled)
    async with DaemonProcess(config, "run", env={"TELEGRAM_BOT_TOKEN": TOKEN}) as daemon:
        await daemon.wait_for_log(CYCLE)
        news = paper(300, 0.5)
        arxiv.add(news)
        await telegram.wait_for(lambda: all(telegram.messages_to(c) for c in CHATS), timeout=30)
        await daemon.wait_for_log(r"telegram: sending 1 papers to \d+ failed unexpectedly")
        for _ in range(2):  # two more cycles: nothing goes again
            await daemon.wait_for_log(CYCLE, after=len(daemon.lines))
        later = paper(301, 0.2)
        arxiv.add(later)  # the channel still delivers
        await telegram.wait_for(lambda: len(telegram.messages_to(fine)) == 2, timeout=30)
        assert await daemon.stop() == 0
    assert [len(telegram.messages_to(c)) for c in CHATS] == [2, 2]
    with sqlite3.connect(config.parent / "papers.db") as conn:
        rows = conn.execute("""SELECT b.address, o.arxiv_id, o.status, o.last_error FROM outbox o
                               JOIN subscribers b ON b.id = o.subscriber_id
                               ORDER BY b.address, o.arxiv_id""").fetchall()
    assert rows == [
        (str(garbled), news.arxiv_id, "failed", "unexpected error: KeyError"),
        (str(garbled), later.arxiv_id, "failed", "unexpected error: KeyError"),
        (str(fine), news.arxiv_id, "sent", None),
        (str(fine), later.arxiv_id, "sent", None),
    ]
