"""End to end through the whole pipeline to apprise targets: the real `daily-papers run` process
against the local arXiv and a local receiver of apprise's `json://` targets. Each new paper
arrives once; a target answering 500 gets its rows retried, and nothing is lost across a kill -9
mid-delivery; the URLs (secrets in them) never reach the output, even with --verbose."""

from __future__ import annotations

import re
import sqlite3
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from storage.records import Paper
from tests.fakes.apprise_receiver import AppriseReceiver
from tests.fakes.arxiv_server import FakeArxiv
from tests.fakes.daemon import DaemonProcess, run_cli, write_config
from tests.test_operability import LISTENING, metrics, sample

pytestmark = pytest.mark.slow

KEYWORD = "video anomaly detection"
CYCLE = r"cycle: 1 keywords polled, 1 ok"
ABS = re.compile(r"https://arxiv\.org/abs/(\d{4}\.\d{5})")
PASSWORDS = {"lab": "Pa55-lab-secret-7", "flaky": "Pa55-flaky-secret-8"}
TOKENS = {"lab": "T0KEN-lab-4711", "flaky": "T0KEN-flaky-4712"}


def paper(n: int, *, hours_ago: float = 1.0) -> Paper:
    published = (datetime.now(UTC) - timedelta(hours=hours_ago)).replace(microsecond=0)
    title = f"Video anomaly detection, part {n}"
    return Paper(arxiv_id=f"2512.{n:05d}", version=1, title=title,
                 abstract=f"{title}. We watch every frame.", authors=("Ada Lovelace",),
                 published=published, updated=published, primary_category="cs.CV",
                 categories=("cs.CV",))


BASELINE = [paper(n, hours_ago=24 * n) for n in range(1, 4)]


@dataclass
class World:
    tmp: Path
    arxiv: FakeArxiv
    rx: AppriseReceiver
    config: Path
    env: dict[str, str]
    output: list[str] = field(default_factory=list)

    @property
    def db(self) -> Path:
        return self.tmp / "papers.db"

    def daemon(self, *options: str) -> DaemonProcess:
        return DaemonProcess(self.config, *options, "run", env=self.env)

    async def cli(self, *args: str) -> str:
        code, out, err = await run_cli(self.config, *args, env=self.env)
        self.output += (out + err).splitlines()
        assert code == 0, out + err
        return out

    def received(self, name: str, status: int = 200) -> Counter[str]:
        """How often each paper reached the target in a message it accepted."""
        return Counter(arxiv_id for post in self.rx.posts_to(f"hooks/{TOKENS[name]}")
                       if post.status == status for arxiv_id in ABS.findall(post.message))

    def rows(self, name: str) -> list[tuple[str, str, int, str | None]]:
        """(paper, status, attempts, last error) of the target's outbox rows."""
        conn = sqlite3.connect(self.db)
        try:
            return conn.execute(
                """SELECT o.arxiv_id, o.status, o.attempts, o.last_error FROM outbox o
                   JOIN subscribers b ON b.id = o.subscriber_id
                   WHERE b.channel = 'apprise' AND b.address = ? ORDER BY o.arxiv_id""",
                [name]).fetchall()
        finally:
            conn.close()

    def make_due(self, name: str) -> None:
        """What the row's backoff would do after half a minute, while the daemon is down."""
        conn = sqlite3.connect(self.db)
        try:
            with conn:
                conn.execute("""UPDATE outbox SET next_attempt = NULL WHERE status = 'pending'
                                AND subscriber_id IN (SELECT id FROM subscribers
                                WHERE channel = 'apprise' AND address = ?)""", [name])
        finally:
            conn.close()


def targets(*names: str) -> str:
    return "".join(f"""
[[apprise.targets]]
name = "{name}"
url_env = "{name.upper()}_APPRISE_URL"
keywords = ["{KEYWORD}"]
""" for name in names)


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    async with FakeArxiv(papers=list(BASELINE)) as arxiv, AppriseReceiver() as rx:
        config = write_config(tmp_path, f"""
[arxiv]
api_url = "{arxiv.url}"
keywords = ["{KEYWORD}"]
poll_interval = 1
schedule = "interval"
request_interval = 0
timeout = 5

[storage]
path = "papers.db"

[digest]
path = ""

[web]
port = 0
{targets("lab", "flaky", "unset")}""")
        env = {f"{name.upper()}_APPRISE_URL":
               rx.target(f"hooks/{TOKENS[name]}", f"reader:{PASSWORDS[name]}")
               for name in ("lab", "flaky")}
        yield World(tmp_path, arxiv, rx, config, env)


def leaks(w: World, lines: list[str]) -> list[str]:
    secrets = [*w.env.values(), *PASSWORDS.values(), *TOKENS.values()]
    return [line for line in lines for s in secrets if s in line]


async def test_each_new_paper_reaches_a_target_once_and_its_url_never_a_log_line(
        world: World) -> None:
    w = world
    w.rx.answer(f"hooks/{TOKENS['flaky']}", 500)
    async with w.daemon("--verbose") as daemon:
        base = (await daemon.wait_for_log(LISTENING)).group(1)
        await daemon.wait_for_log(CYCLE)  # the baseline
        assert "apprise target 'unset' is skipped, its papers wait: UNSET_APPRISE_URL is not set" in daemon.log
        first = [paper(10, hours_ago=0.5), paper(11, hours_ago=0.4)]
        w.arxiv.add(*first)
        await w.rx.wait_for(lambda: set(w.received("lab")) == {"2512.00010", "2512.00011"})
        second = paper(12, hours_ago=0.1)
        w.arxiv.add(second)
        await w.rx.wait_for(lambda: "2512.00012" in w.received("lab"))
        for _ in range(3):  # three more cycles with nothing new
            await daemon.wait_for_log(CYCLE, after=len(daemon.lines))
        status = await w.cli("status")
        scrape = await metrics(base)
        assert await daemon.stop() == 0
    assert w.received("lab") == Counter({"2512.00010": 1, "2512.00011": 1, "2512.00012": 1})
    assert {p.auth for p in w.rx.posts_to(f"hooks/{TOKENS['lab']}")} == {
        f"reader:{PASSWORDS['lab']}"}
    assert w.received("flaky", status=500)  # tried, refused, kept for later
    assert "Channels: telegram off (set TELEGRAM_BOT_TOKEN)" in status
    assert "apprise on" in status
    assert "Pending notifications: apprise: 6" in status  # flaky's 3 and unset's 3 wait
    assert "apprise target 'unset' is skipped, its papers wait: UNSET_APPRISE_URL is not set" in status
    assert sample(scrape, "daily_papers_outbox_rows", channel="apprise", status="pending") == 6
    assert sample(scrape, "daily_papers_outbox_rows", channel="apprise", status="sent") == 3
    assert sample(scrape, "daily_papers_subscribers", channel="apprise") == 3
    assert sample(scrape, "daily_papers_deliveries_total", channel="apprise", result="sent") == 2
    assert leaks(w, daemon.lines + w.output) == []


async def test_a_refusing_target_is_retried_and_a_kill_mid_delivery_loses_nothing(
        world: World) -> None:
    w = world
    flaky = f"hooks/{TOKENS['flaky']}"
    w.rx.answer(flaky, 500)
    await w.cli("run", "--once")  # the baseline
    w.arxiv.add(paper(20, hours_ago=0.5), paper(21, hours_ago=0.4))
    await w.cli("run", "--once")
    assert w.received("lab") == Counter({"2512.00020": 1, "2512.00021": 1})
    assert [p.status for p in w.rx.posts_to(flaky)] == [500]
    assert [(r[1], r[2], "error=500" in (r[3] or "")) for r in w.rows("flaky")] == [
        ("pending", 1, True)] * 2

    w.make_due("flaky")  # the backoff has passed; this time the answer never comes
    w.rx.answer(flaky, 200)
    release = w.rx.hold_next(flaky)
    async with w.daemon() as daemon:
        await w.rx.wait_for(lambda: w.rx.held == 1)
        await daemon.kill()  # kill -9 while the service holds the message
    release.set()
    assert [r[1] for r in w.rows("flaky")] == ["pending", "pending"]

    await w.cli("run", "--once")
    assert w.received("flaky") == Counter({"2512.00020": 1, "2512.00021": 1})
    assert w.received("lab") == Counter({"2512.00020": 1, "2512.00021": 1})
    assert [(r[1], r[2]) for r in w.rows("flaky")] == [("sent", 2)] * 2
    assert leaks(w, w.output) == []


async def test_sigterm_while_a_service_holds_a_message_stops_cleanly_and_keeps_the_rows(
        world: World) -> None:
    w = world
    await w.cli("run", "--once")  # the baseline
    w.arxiv.add(paper(30, hours_ago=0.5))
    release = w.rx.hold_next(f"hooks/{TOKENS['lab']}")
    async with w.daemon() as daemon:
        await w.rx.wait_for(lambda: w.rx.held == 1)
        assert await daemon.stop(timeout=10) == 0  # the send's worker thread gives up in time
    release.set()
    assert [r[1] for r in w.rows("lab")] == ["pending"]  # never answered: sent again later
