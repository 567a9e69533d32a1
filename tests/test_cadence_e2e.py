"""Each reader's cadence end to end: the real `daily-papers run` process with a clock the test
moves (tests/fakes/clocked.py), the local arXiv, Telegram and Slack servers.

A Telegram chat in Asia/Tokyo on `daily HH:MM` gets its papers at that minute, not at the end of
the cycle that found them; a Slack channel on `weekly` gets one digest that week and the next
papers a week later; a reader's `-word` keeps a matching paper out.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from bot.deliver.cadence import WEEKDAYS, parse_cadence
from bot.deliver.schedule import next_slot
from storage import subscribers as sub_repo
from storage.records import Paper, Subscriber
from storage.store import Store
from tests.fakes.arxiv_server import FakeArxiv
from tests.fakes.clocked import FileClock
from tests.fakes.daemon import DaemonProcess, e2e_config_head, write_config
from tests.fakes.slack_server import FakeSlack
from tests.fakes.telegram_server import FakeTelegram
from tests.test_slack_e2e import command, digests, free_port, papers_shown

pytestmark = pytest.mark.slow

TOKEN = "123456:CADENCE-e2e-token"
SIGNING = "8f14e45fceea167a5a36dedd4bea2543"
CHAT = 4242
SLACK_CHANNEL = "C0PAPERS1"
KEYWORD = "video anomaly detection"
TOKYO, BERLIN = ZoneInfo("Asia/Tokyo"), ZoneInfo("Europe/Berlin")


def paper(n: int, title: str, *, hours_ago: float = 1.0) -> Paper:
    published = (datetime.now(UTC) - timedelta(hours=hours_ago)).replace(microsecond=0)
    return Paper(arxiv_id=f"2512.{n:05d}", version=1, title=title,
                 abstract=f"{title}. We propose a method and evaluate it.",
                 authors=("Ada Lovelace",), published=published, updated=published,
                 primary_category="cs.CV", categories=("cs.CV",))


BASELINE = [paper(i, f"Video anomaly detection baseline {i}", hours_ago=24 * i)
            for i in range(1, 4)]


def config(tmp: Path, arxiv: FakeArxiv, channel: str, port: int = 0) -> Path:
    return write_config(tmp, f"""{e2e_config_head(arxiv.url)}{channel}
[web]
host = "127.0.0.1"
port = {port}
public_url = "http://127.0.0.1:{port}"
""")


def subscriber(tmp: Path, channel: str, address: str) -> Subscriber:
    store = Store(tmp / "papers.db")
    try:
        found = sub_repo.find(store.db, channel, address)
        assert found is not None
        return found
    finally:
        store.close()


def outbox_rows(tmp: Path, sub: Subscriber) -> list[dict[str, Any]]:
    store = Store(tmp / "papers.db")
    try:
        return list(store.db.query("SELECT arxiv_id, due_at, status, sent_at FROM outbox "
                                   "WHERE subscriber_id = ? ORDER BY id", [sub.id]))
    finally:
        store.close()


def at(text: str | None) -> datetime:
    assert text is not None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


async def cycle_that_queued(d: DaemonProcess) -> None:
    """Until a cycle ends that queued notifications, then one more whole cycle (the dispatcher
    was woken at that cycle's end and had time to send anything due)."""
    mark = len(d.lines)
    await d.wait_for_log(r"cycle: .* [1-9]\d* notifications queued", after=mark)
    mark = len(d.lines)
    await d.wait_for_log(r"cycle: ", after=mark)


# -- Telegram: daily at a Tokyo time ----------------------------------------------------------
@dataclass
class Chat:
    telegram: FakeTelegram
    chat: int = CHAT

    def texts(self) -> list[str]:
        return [m.visible_text for m in self.telegram.messages_to(self.chat)]

    async def say(self, text: str, replies: int = 1) -> list[str]:
        before = len(self.texts())
        self.telegram.push_command(self.chat, text)
        await self.telegram.wait_sent(before + replies, self.chat, timeout=30)
        return self.texts()[before:]


@pytest.fixture
async def telegram_world(tmp_path: Path) -> AsyncIterator[tuple[FakeArxiv, Chat, Path]]:
    async with FakeArxiv(papers=list(BASELINE)) as arxiv, FakeTelegram(token=TOKEN) as telegram:
        path = config(tmp_path, arxiv, f'[telegram]\napi_url = "{telegram.base_url}"')
        yield arxiv, Chat(telegram), path


async def test_a_tokyo_chat_gets_its_daily_digest_at_its_minute_not_at_the_cycle_end(
        tmp_path: Path, telegram_world: tuple[FakeArxiv, Chat, Path]) -> None:
    arxiv, chat, path = telegram_world
    start = datetime.now(UTC).replace(second=0, microsecond=0)
    digest_at = start + timedelta(minutes=10)
    hhmm = digest_at.astimezone(TOKYO).strftime("%H:%M")
    clock = FileClock(tmp_path / "clock", start)
    async with DaemonProcess(path, env={"TELEGRAM_BOT_TOKEN": TOKEN}, clock=clock) as d:
        (reply,) = await chat.say("/timezone Asia/Tokyo")
        assert reply.endswith("Time zone: Asia/Tokyo.")
        (reply,) = await chat.say(f"/digest daily {hhmm}")
        local = digest_at.astimezone(TOKYO)
        assert reply == (f"Done: papers arrive here as one digest a day at {hhmm} (Asia/Tokyo "
                         f"time); the next on {local:%A} {local.day} {local:%B} at {hhmm}.")
        await chat.say(f"/subscribe {KEYWORD}", replies=2)  # the reply and the first look
        clock.set(digest_at - timedelta(seconds=30))
        arxiv.add(paper(100, "Video anomaly detection with a Tokyo digest", hours_ago=0.5))
        await cycle_that_queued(d)

        sub = subscriber(tmp_path, "telegram", str(CHAT))
        (row,) = outbox_rows(tmp_path, sub)
        assert (row["arxiv_id"], at(row["due_at"]), row["status"]) == (
            "2512.00100", digest_at, "pending")
        assert not any("Tokyo digest" in t for t in chat.texts()), "sent at the cycle end"

        clock.set(digest_at + timedelta(seconds=1))
        await chat.telegram.wait_for(lambda: any("Tokyo digest" in t for t in chat.texts()),
                                     timeout=30)
        await cycle_that_queued_none(d)  # marked sent right after the answer: long done
        assert sum("Tokyo digest" in t for t in chat.texts()) == 1
        (row,) = outbox_rows(tmp_path, sub)
        assert row["status"] == "sent" and at(row["sent_at"]) >= digest_at
        sent = subscriber(tmp_path, "telegram", str(CHAT))
        assert sent.last_digest_date == digest_at.astimezone(TOKYO).date().isoformat()
        assert await d.stop() == 0


async def cycle_that_queued_none(d: DaemonProcess) -> None:
    """Two more whole cycles: anything sent twice would be sent by then."""
    for _ in range(2):
        mark = len(d.lines)
        await d.wait_for_log(r"cycle: ", after=mark)


async def test_a_readers_exclusion_keeps_a_matching_paper_out(
        tmp_path: Path, telegram_world: tuple[FakeArxiv, Chat, Path]) -> None:
    arxiv, chat, path = telegram_world
    async with DaemonProcess(path, env={"TELEGRAM_BOT_TOKEN": TOKEN}) as d:
        first, _ = await chat.say(f'/subscribe {KEYWORD} -surveillance -"crowd counting"',
                                  replies=2)
        assert first.startswith(
            f"Subscribed to '{KEYWORD} -surveillance -\"crowd counting\"' (arXiv query: "
            f'(ti:"{KEYWORD}" OR abs:"{KEYWORD}") ANDNOT (ti:"crowd counting" OR abs:"crowd '
            'counting") ANDNOT (ti:"surveillance" OR abs:"surveillance"))')
        arxiv.add(paper(200, "Video anomaly detection for surveillance cameras", hours_ago=0.3),
                  paper(201, "Video anomaly detection in crowd counting scenes", hours_ago=0.2),
                  paper(202, "Video anomaly detection on factory floors", hours_ago=0.1))
        await chat.telegram.wait_for(lambda: any("factory floors" in t for t in chat.texts()),
                                     timeout=30)
        await cycle_that_queued_none(d)
        shown = "\n".join(chat.texts())
        assert "surveillance cameras" not in shown and "crowd counting scenes" not in shown
        queries = {r.params["search_query"] for r in arxiv.requests}
        assert any("ANDNOT" in q for q in queries)
        (reply,) = await chat.say("/subscribe video anomaly detection NOT surveillance")
        assert reply.startswith("arXiv has no NOT. To leave a word out, put a minus before it")
        assert await d.stop() == 0


# -- Slack: weekly in Berlin ------------------------------------------------------------------
@dataclass
class SlackDaemon:
    url: str  # what tests.test_slack_e2e.command needs of a daemon


async def test_a_slack_channel_on_weekly_gets_one_digest_that_week_and_the_next_a_week_later(
        tmp_path: Path) -> None:
    start = datetime.now(UTC).replace(second=0, microsecond=0)
    digest_at = start + timedelta(minutes=10)
    local = digest_at.astimezone(BERLIN)
    cadence = f"weekly {WEEKDAYS[local.weekday()]} {local:%H:%M}"
    clock = FileClock(tmp_path / "clock", start)
    port = free_port()
    async with FakeArxiv(papers=list(BASELINE)) as arxiv, FakeSlack() as slack:
        path = config(tmp_path, arxiv, f'[slack]\napi_url = "{slack.api_url}"', port)
        env = {"SLACK_BOT_TOKEN": slack.bot_token, "SLACK_SIGNING_SECRET": SIGNING}
        async with DaemonProcess(path, env=env, clock=clock) as d:
            await d.wait_for_log("web server listening")
            web = SlackDaemon(f"http://127.0.0.1:{port}")

            async def say(text: str) -> str:
                status, body = await command(web, slack, "/papers", text,  # type: ignore[arg-type]
                                             channel=SLACK_CHANNEL)
                assert status == 200, body
                return body["text"]

            assert (await say("timezone Berlin")).endswith("Time zone: Europe/Berlin.")
            assert f"a week, {local:%A} at {local:%H:%M} (Europe/Berlin time)" in await say(
                f"digest {cadence}")
            await say(f"subscribe {KEYWORD}")
            await slack.wait_for(lambda: len(slack.responses) >= 1, timeout=30)  # first look

            clock.set(digest_at - timedelta(seconds=30))
            arxiv.add(paper(300, "Video anomaly detection, weekly edition", hours_ago=0.5))
            await cycle_that_queued(d)
            assert digests(slack, SLACK_CHANNEL) == [], "sent at the cycle end"

            clock.set(digest_at + timedelta(seconds=1))
            await slack.wait_for(lambda: len(digests(slack, SLACK_CHANNEL)) >= 1, timeout=30)
            await cycle_that_queued_none(d)  # marked sent right after the answer: long done
            assert papers_shown(digests(slack, SLACK_CHANNEL)) == [
                "https://arxiv.org/abs/2512.00300"]
            sub = subscriber(tmp_path, "slack", SLACK_CHANNEL)
            year, week, _ = local.date().isocalendar()
            assert sub.last_digest_week == f"{year}-W{week:02d}"

            # A paper found later that week waits for the next week's digest.
            clock.set(digest_at + timedelta(hours=2))
            arxiv.add(paper(301, "Video anomaly detection, the week after", hours_ago=0.2))
            await cycle_that_queued(d)
            row = outbox_rows(tmp_path, sub)[-1]
            expected = next_slot(digest_at + timedelta(minutes=1), parse_cadence(cadence),
                                 "Europe/Berlin")
            assert (row["arxiv_id"], at(row["due_at"])) == ("2512.00301", expected)
            assert expected.astimezone(BERLIN).date() == local.date() + timedelta(days=7)
            assert len(digests(slack, SLACK_CHANNEL)) == 1
            assert await d.stop() == 0
