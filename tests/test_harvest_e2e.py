"""Harvest mode end to end, as a reader sees it: the real `daily-papers` process with a clock
the test sets, the local arXiv (baselines), OAI-PMH and Telegram servers.

A new record that matches two of a reader's keywords arrives once; the announcements of days
the daemon was down are harvested and delivered when it starts again.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest

from bot.poll.calendar import Announcement
from storage.records import Paper
from tests.fakes.arxiv_server import FakeArxiv
from tests.fakes.clocked import FileClock
from tests.fakes.daemon import DaemonProcess, e2e_config_head, run_cli, write_config
from tests.fakes.oai_server import FakeOai
from tests.fakes.telegram_server import FakeTelegram

pytestmark = pytest.mark.slow

TOKEN = "123456:HARVEST-e2e-token"
CHAT = 7331
SUNDAY = Announcement(date(2026, 3, 8))  # 20:00 EDT = 00:00 UTC Monday
MONDAY = SUNDAY.following()
TUESDAY = MONDAY.following()


def paper(n: int, title: str, published: datetime) -> Paper:
    return Paper(arxiv_id=f"2603.{n:05d}", version=1, title=title,
                 abstract=f"We propose a method for paper {n} and evaluate it.",
                 authors=("Ada Lovelace",), published=published, updated=published,
                 primary_category="cs.LG", categories=("cs.LG",))


def in_oai(a: Announcement) -> date:
    """OAI-PMH dates an announcement's records the next UTC day."""
    return (a.at + timedelta(hours=4)).date()


def after_harvest_time(a: Announcement) -> datetime:
    return a.at + timedelta(hours=3)  # OAI-PMH shows it from about 22:30 New York time


OLD = paper(1, "Graph neural networks, an old baseline paper", SUNDAY.opens - timedelta(days=5))


@dataclass
class World:
    arxiv: FakeArxiv
    oai: FakeOai
    telegram: FakeTelegram
    config: Path
    tmp: Path

    def texts(self) -> list[str]:
        return [m.visible_text for m in self.telegram.messages_to(CHAT)]

    async def cli(self, when: datetime, *args: str) -> str:
        code, out, err = await run_cli(self.config, *args, env=self.env(when), timeout=120)
        assert code == 0, err + out
        return out

    def env(self, when: datetime | None = None) -> dict[str, str]:
        env = {"TELEGRAM_BOT_TOKEN": TOKEN}
        return env | ({"DAILY_PAPERS_NOW": when.isoformat()} if when else {})


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    async with FakeArxiv(papers=[OLD]) as arxiv, FakeOai(page_size=2) as oai, \
            FakeTelegram(token=TOKEN) as telegram:
        harvest = f'oai_url = "{oai.url}"\nsource = "harvest"\nharvest_sets = ["cs"]\n'
        config = write_config(tmp_path, f"""{e2e_config_head(arxiv.url, poll_interval=None, extra=harvest)}
[telegram]
api_url = "{telegram.base_url}"
""")
        yield World(arxiv, oai, telegram, config, tmp_path)


async def test_a_new_record_matching_two_keywords_of_a_reader_arrives_once(world: World):
    sunday_night = after_harvest_time(SUNDAY)
    for keyword in ("graph neural networks", "ti:networks"):
        await world.cli(sunday_night, "subscribe", "--telegram", str(CHAT), keyword)
    world.oai.add(OLD, in_oai(SUNDAY) - timedelta(days=6))
    await world.cli(sunday_night, "run", "--once")  # the two baselines, by search
    assert len(world.arxiv.requests) == 2
    assert world.texts() == []  # a baseline tells no one

    both = paper(2, "Graph neural networks for molecules", MONDAY.opens + timedelta(hours=2))
    other = paper(3, "Protein folding at scale", MONDAY.opens + timedelta(hours=3))
    for record in (both, other):
        world.oai.add(record, in_oai(MONDAY))
    out = await world.cli(after_harvest_time(MONDAY), "run", "--once")
    assert "harvest: 2 records, 2 new for keywords" in out, out
    assert len(world.arxiv.requests) == 2  # harvest only after the baselines
    (message,) = [t for t in world.texts() if "for molecules" in t]
    assert message.count("Graph neural networks for molecules") == 1, message
    assert "graph neural networks, ti:networks" in message  # one entry naming both keywords
    shown = "\n".join(world.texts())
    assert "Protein folding" not in shown and "old baseline paper" not in shown

    out = await world.cli(after_harvest_time(MONDAY) + timedelta(hours=1), "run", "--once")
    assert "\n".join(world.texts()).count("Graph neural networks for molecules") == 1


async def test_a_day_missed_while_down_is_delivered_after_restart(world: World):
    clock = FileClock(world.tmp / "clock", after_harvest_time(SUNDAY))
    await world.cli(clock.current, "subscribe", "--telegram", str(CHAT), "graph neural networks")
    world.oai.add(OLD, in_oai(SUNDAY))
    async with DaemonProcess(world.config, env=world.env(), clock=clock) as daemon:
        await daemon.wait_for_log(r"harvest: 1 records?", timeout=60)
        assert await daemon.stop() == 0
    first_start = len(world.oai.requests)
    assert world.texts() == []

    # down through Monday's and Tuesday's announcements
    monday = paper(4, "Graph neural networks on Monday", MONDAY.opens + timedelta(hours=1))
    tuesday = paper(5, "Graph neural networks on Tuesday", TUESDAY.opens + timedelta(hours=1))
    world.oai.add(monday, in_oai(MONDAY))
    world.oai.add(tuesday, in_oai(TUESDAY))
    clock.set(after_harvest_time(TUESDAY))
    async with DaemonProcess(world.config, env=world.env(), clock=clock) as daemon:
        await world.telegram.wait_for(
            lambda: all(any(title in t for t in world.texts()) for title in (
                "Graph neural networks on Monday", "Graph neural networks on Tuesday")),
            timeout=60)
        assert await daemon.stop() == 0
    restart = world.oai.requests[first_start][1]
    assert restart["from"] <= in_oai(MONDAY).isoformat()  # from before the missed day
    shown = "\n".join(world.texts())
    assert shown.count("on Monday") == 1 and shown.count("on Tuesday") == 1
    assert len(world.arxiv.requests) == 1  # the baseline; the rest came by harvest
