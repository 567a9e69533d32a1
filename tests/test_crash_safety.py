"""Crash safety of the whole pipeline (fetch → diff/store → outbox → deliver): the real daemon is
SIGKILLed at a random moment of a cycle that has new papers for 120 subscribers on Telegram,
Slack and email, then restarted. Nothing may be lost, at most `max_in_flight` messages per
channel and kill may arrive twice, and the database must stay intact. It runs at the default
`max_in_flight = 1` (10 rounds) and at 4 (6 rounds).

Each setting kills once while the poll's arXiv answer is in flight and otherwise once in each
equal stretch of the send-out (a random moment inside it, the stretches in random order): every
part of a send-out is hit with a few kills, where uniformly random moments needed many more.
`CRASH_SEED=n` replays one sequence of kill moments; the seed is printed either way.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
import sqlite3
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path

import pytest

from bot.config import load_config
from bot.faces.commands import subscribe_address
from storage.records import Paper
from storage.store import Store
from tests.fakes.arxiv_server import FakeArxiv, Fault
from tests.fakes.daemon import DaemonProcess, write_config
from tests.fakes.slack_server import FakeSlack
from tests.fakes.smtp_server import FakeSMTP
from tests.fakes.telegram_server import FakeTelegram

pytestmark = pytest.mark.slow

PER_CHANNEL = 40
DELIVERIES = 2 * 3 * PER_CHANNEL  # (recipient, paper) pairs of one run: two papers each
KEYWORD = "crash safe delivery"
TOKEN = "424242:crash-test-token"

TELEGRAM_CHATS = [str(5_000 + n) for n in range(PER_CHANNEL)]
SLACK_CHANNELS = [f"C0CRASH{n:04d}" for n in range(PER_CHANNEL)]
EMAILS = [f"reader{n}@example.org" for n in range(PER_CHANNEL)]
CHANNELS = ("telegram", "slack", "email")


def paper(n: int, title: str, hours_ago: float) -> Paper:
    published = (datetime.now(UTC) - timedelta(hours=hours_ago)).replace(microsecond=0)
    return Paper(arxiv_id=f"2512.{n:05d}", version=1, title=title,
                 abstract=f"{title}. We measure what survives a SIGKILL.",
                 authors=("Ada Lovelace", "Alan Turing"), published=published,
                 updated=published, primary_category="cs.DC", categories=("cs.DC",))


BASELINE = [paper(n, f"Crash safe delivery baseline {n}", 24 * n) for n in range(1, 4)]


def run_papers(run: int) -> tuple[Paper, Paper]:
    """Two new papers per run, so a message holds several and packing is exercised."""
    return (paper(100 + 2 * run, f"Crash safe delivery, run {run}, first", 0.2),
            paper(101 + 2 * run, f"Crash safe delivery, run {run}, second", 0.1))


@dataclass(frozen=True)
class Setting:
    max_in_flight: int  # of every channel
    runs: int  # kills, one per run


SETTINGS = [Setting(max_in_flight=1, runs=10), Setting(max_in_flight=4, runs=6)]


def kill_plan(runs: int, rng: random.Random) -> list[int | None]:
    """When each run's kill comes: None while the poll waits for arXiv (one run), else after
    that many of the run's deliveries arrived, one random moment in each of `runs - 1` equal
    stretches of the send-out, in random order."""
    bounds = [1 + i * (DELIVERIES - 1) // (runs - 1) for i in range(runs)]  # 1 … DELIVERIES
    plan: list[int | None] = [rng.randrange(lo, hi) for lo, hi in itertools.pairwise(bounds)]
    plan.append(None)
    rng.shuffle(plan)
    return plan


def config_text(arxiv: FakeArxiv, telegram: FakeTelegram, slack: FakeSlack,
                smtp: FakeSMTP, max_in_flight: int) -> str:
    return f"""
[arxiv]
api_url = "{arxiv.url}"
keywords = []
poll_interval = 1
schedule = "interval"
request_interval = 0
timeout = 5

[storage]
path = "papers.db"

[digest]
path = ""

[telegram]
api_url = "{telegram.base_url}"
max_in_flight = {max_in_flight}

[slack]
api_url = "{slack.api_url}"
max_in_flight = {max_in_flight}

{smtp.email_table()}max_per_minute = 100000
max_in_flight = {max_in_flight}

[web]
port = 0
public_url = "https://papers.example.org"
"""


@dataclass
class Tally:
    """How often each (channel, recipient, paper) arrived; read from the fakes incrementally."""

    telegram: FakeTelegram
    slack: FakeSlack
    smtp: FakeSMTP
    watched: dict[str, str] = field(default_factory=dict)  # abs URL → arxiv id
    counts: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    _done: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CHANNELS, 0))

    def watch(self, papers: Iterable[Paper]) -> None:
        self.watched.update({p.abs_url: p.arxiv_id for p in papers})

    def refresh(self) -> None:
        self._take("telegram", self.telegram.sent, lambda m: (str(m.chat_id), m.text))
        self._take("slack", self.slack.posts, lambda p: (p.channel, json.dumps(p.blocks)))
        self._take("email", self.smtp.messages,
                   lambda m: (m.rcpt_tos[0].lower(), _plain(m.message)))

    def _take(self, channel: str, items: list, read: Callable) -> None:
        for item in items[self._done[channel]:]:
            recipient, text = read(item)
            for url, arxiv_id in self.watched.items():
                if url in text:
                    self.counts[(channel, recipient, arxiv_id)] += 1
        self._done[channel] = len(items)

    def delivered(self, papers: Iterable[Paper]) -> int:
        self.refresh()
        ids = {p.arxiv_id for p in papers}
        return sum(1 for (_, _, a) in self.counts if a in ids)

    def missing(self, papers: Iterable[Paper]) -> list[tuple[str, str, str]]:
        self.refresh()
        return [(c, r, p.arxiv_id) for p in papers for c, rs in RECIPIENTS.items() for r in rs
                if self.counts[(c, r, p.arxiv_id)] == 0]

    def duplicates(self, runs: dict[str, int]) -> Counter[str]:
        """Messages that arrived twice, per channel: a recipient that got a run's papers again
        counts once, however many of them the resent message held."""
        self.refresh()
        extra: dict[tuple[str, str, int], int] = {}
        for (channel, recipient, arxiv_id), n in self.counts.items():
            key = (channel, recipient, runs[arxiv_id])
            extra[key] = max(extra.get(key, 0), n - 1)
        dups: Counter[str] = Counter(dict.fromkeys(CHANNELS, 0))
        for (channel, _, _), n in extra.items():
            dups[channel] += n
        return dups

    async def until(self, predicate: Callable[[], bool], timeout: float) -> None:
        """Wait until `predicate` holds; every fake wakes the check when it records something."""
        waits = [asyncio.ensure_future(fake.wait_for(predicate, timeout))
                 for fake in (self.telegram, self.slack, self.smtp)]
        try:
            done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()  # an AssertionError says what the fake saw last
        finally:
            for task in waits:
                task.cancel()
            await asyncio.gather(*waits, return_exceptions=True)


RECIPIENTS = {"telegram": TELEGRAM_CHATS, "slack": SLACK_CHANNELS, "email": EMAILS}


def _plain(message: EmailMessage) -> str:
    part = message.get_body(("plain",))
    return part.get_content() if isinstance(part, EmailMessage) else ""


def seed_subscribers(config: Path) -> None:
    """300 subscriptions written before the daemon starts, as `daily-papers subscribe` does."""
    cfg = load_config(config)
    store = Store(cfg.storage.path)
    try:
        for channel, addresses in RECIPIENTS.items():
            for address in addresses:
                subscribe_address(store, cfg, channel, address, KEYWORD, datetime.now(UTC))
    finally:
        store.close()


def check_database(path: Path) -> None:
    """What a crash leaves must open cleanly (WAL recovery) and pass SQLite's own checks."""
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    finally:
        conn.close()


def pending_rows(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT count(*) FROM outbox WHERE status != 'sent'").fetchone()[0]
    finally:
        conn.close()


@dataclass
class World:
    tmp: Path
    arxiv: FakeArxiv
    telegram: FakeTelegram
    slack: FakeSlack
    smtp: FakeSMTP
    config: Path
    tally: Tally
    env: dict[str, str]
    setting: Setting
    daemons: list[DaemonProcess] = field(default_factory=list)

    @property
    def db(self) -> Path:
        return self.tmp / "papers.db"

    async def start(self) -> DaemonProcess:
        daemon = await DaemonProcess(self.config, "run", env=self.env).start()
        self.daemons.append(daemon)
        return daemon

    async def kill_leftovers(self) -> None:
        """A failed run must not leave a daemon behind, busy with fakes that are gone."""
        for daemon in self.daemons:
            if daemon.proc and daemon.proc.returncode is None:
                await daemon.kill()


@pytest.fixture
async def world(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[World]:
    setting: Setting = request.param
    async with (FakeArxiv(papers=list(BASELINE)) as arxiv, FakeTelegram(token=TOKEN) as telegram,
                FakeSlack() as slack, FakeSMTP() as smtp):
        config = write_config(tmp_path, config_text(arxiv, telegram, slack, smtp,
                                                    setting.max_in_flight))
        seed_subscribers(config)
        env = {"TELEGRAM_BOT_TOKEN": TOKEN, "SLACK_BOT_TOKEN": slack.bot_token,
               "DAILY_PAPERS_SECRET": "crash-test-unsubscribe-key"}
        w = World(tmp_path, arxiv, telegram, slack, smtp, config, Tally(telegram, slack, smtp),
                  env, setting)
        try:
            yield w
        finally:
            await w.kill_leftovers()


async def settled(w: World, daemon: DaemonProcess) -> None:
    """Until the restarted daemon has marked every row sent. A message the kill left unmarked
    may reach its recipient before the kill and is sent again only later: counted after the
    next run began, that duplicate was charged to the next kill (two in one run at
    `max_in_flight = 1`), and the final stop could come before it was sent (rows left pending)."""
    await daemon.wait_until(lambda: pending_rows(w.db) == 0, timeout=90,
                            what="rows still pending after every delivery arrived")


async def kill_during_poll(w: World, daemon: DaemonProcess, papers: tuple[Paper, ...]) -> str:
    """Hold the next arXiv answer, publish, and kill while the poll waits for it."""
    release = asyncio.Event()
    w.arxiv.push(Fault("hold", release=release))
    seen = len(w.arxiv.requests)
    w.arxiv.add(*papers)
    await w.arxiv.wait_requests(seen + 1)
    await daemon.kill()
    release.set()
    return "poll in flight"


async def kill_during_sendout(w: World, daemon: DaemonProcess, papers: tuple[Paper, ...],
                              after: int) -> str:
    """Publish, and kill once `after` of the run's (recipient, paper) deliveries arrived."""
    w.arxiv.add(*papers)
    await w.tally.until(lambda: w.tally.delivered(papers) >= after, timeout=60)
    await daemon.kill()
    return f"after {w.tally.delivered(papers)} of {DELIVERIES} deliveries"


@pytest.mark.timeout(600)  # a long scenario on a busy machine; every wait in it is bounded
@pytest.mark.parametrize("world", SETTINGS, indirect=True,
                         ids=[f"max_in_flight={s.max_in_flight}" for s in SETTINGS])
async def test_sigkill_at_random_moments_loses_nothing(world: World) -> None:
    w = world
    width = w.setting.max_in_flight
    seed = int(os.environ.get("CRASH_SEED") or random.SystemRandom().randrange(1 << 32))
    print(f"\ncrash safety: CRASH_SEED={seed}")
    plan = kill_plan(w.setting.runs, random.Random(seed))
    daemon = await w.start()
    await daemon.wait_for_log(r"cycle: 1 keywords polled, 1 ok", timeout=60)  # the baseline
    published: list[Paper] = []
    runs: dict[str, int] = {}
    kills = 0
    for run in range(w.setting.runs):
        papers = run_papers(run)
        published.extend(papers)
        runs.update(dict.fromkeys((p.arxiv_id for p in papers), run))
        w.tally.watch(papers)
        before = w.tally.duplicates(runs)
        if (after := plan[run]) is None:
            moment = await kill_during_poll(w, daemon, papers)
        else:
            moment = await kill_during_sendout(w, daemon, papers, after)
        kills += 1
        check_database(w.db)
        daemon = await w.start()
        try:
            await w.tally.until(lambda p=papers: not w.tally.missing(p), timeout=90)
            await settled(w, daemon)
        except AssertionError:
            print(daemon.log)
            raise
        dups = w.tally.duplicates(runs)
        print(f"run {run + 1:2d}: killed {moment}; duplicates so far {dict(dups)}")
        for channel in CHANNELS:  # only messages in flight at this kill went twice
            assert dups[channel] - before[channel] <= width, (channel, moment, dups, before)
    assert await daemon.stop() == 0  # a clean stop commits the last marks
    check_database(w.db)

    assert w.tally.missing(published) == []
    assert pending_rows(w.db) == 0
    dups = w.tally.duplicates(runs)
    print(f"crash safety: {kills} kills survived, {sum(dups.values())} duplicates seen "
          f"({dict(dups)}), {len(published) * 3 * PER_CHANNEL} deliveries checked, seed {seed}")
    for channel in CHANNELS:
        assert dups[channel] <= kills * width, (channel, dups)
