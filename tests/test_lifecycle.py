"""Lifecycle: upgrading an old database (nothing lost, backup written), one daemon per database,
a daily digest across a DST change (once per local date), a changed keyword re-baselining
without notifying, and a one-click unsubscribe that survives a restart with the address still
in config.toml."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import aiohttp
import pytest
from sqlite_utils import Database

from bot.config import Config, EmailConfig
from bot.deliver.dispatcher import Dispatcher
from bot.deliver.schedule import digest_period_factory, due_at_factory, next_digest_time
from bot.fetch.keywords import parse_keyword
from notifiers.base import Delivery, Limits, Message, Notifier, Outcome
from storage import keywords as kw_repo
from storage import outbox, polls
from storage import subscribers as sub_repo
from storage.database import to_db, write
from storage.papers import upsert_papers
from storage.records import Keyword, OutboxRow, Paper, Subscriber
from storage.schema import MIGRATIONS, known_names
from storage.store import AsyncStore
from tests.conftest import Clock, KeywordFactory, SubscriberFactory
from tests.fakes.arxiv_server import FakeArxiv
from tests.fakes.daemon import DaemonProcess, run_cli, write_config
from tests.fakes.smtp_server import FakeSMTP
from tests.test_operability import LISTENING, config_text, free_port, health, paper

pytestmark = pytest.mark.slow

KEYWORD = "graph neural networks"
BOB = "bob@example.org"
SECRET = "lifecycle-unsubscribe-key-0123456789"
BERLIN = ZoneInfo("Europe/Berlin")


# -- end-to-end world: fake arXiv, fake SMTP, one config subscriber -----------------------------
@dataclass
class World:
    tmp: Path
    arxiv: FakeArxiv
    smtp: FakeSMTP
    port: int
    keyword: str = KEYWORD

    @property
    def db(self) -> Path:
        return self.tmp / "papers.db"

    @property
    def config(self) -> Path:
        extra = f"""
{self.smtp.email_table()}[[email.subscribers]]
address = "{BOB}"
keywords = ["{self.keyword}"]
"""
        return write_config(self.tmp, config_text(self.arxiv, self.port,
                                                  keywords=(self.keyword,), extra=extra))

    async def once(self) -> str:
        code, out, err = await run_cli(self.config, "run", "--once",
                                       env={"DAILY_PAPERS_SECRET": SECRET})
        assert code == 0, out + err
        return err

    def titles(self) -> list[str]:
        return [line[2:] for m in self.smtp.messages_to(BOB)
                for line in m.message.get_body(("plain",)).get_content().splitlines()
                if line.startswith("* On ")]


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    async with FakeArxiv() as arxiv, FakeSMTP() as smtp:
        arxiv.add(*(paper(n, days=1 + n) for n in range(1, 4)))
        yield World(tmp_path, arxiv, smtp, free_port())


# -- upgrades ---------------------------------------------------------------------------------
def database_at(path: Path, last: str) -> Database:
    """A database as the release whose newest migration was `last` left it."""
    names = [m.name for m in MIGRATIONS._migrations]
    later = names[names.index(last) + 1:]
    db = Database(sqlite3.connect(str(path)))
    MIGRATIONS.apply(db, stop_before=later or None)
    return db


def baseline_keyword(db: Database, text: str, papers: Sequence[Paper], now: datetime):
    """The keyword as a finished baseline poll of the old release left it."""
    parsed = parse_keyword(text)
    kw, _ = kw_repo.ensure(db, parsed.display, parsed.canonical, parsed.query, now,
                           max_keywords=500)
    kw_repo.set_config_keywords(db, {kw.id})
    polls.commit_poll(db, kw, papers, baseline=True, now=now, max_papers=100,
                      notify_floor=now - timedelta(days=14), total_results=len(papers))
    return kw_repo.get(db, kw.id)


def old_release_poll(db: Database, kw: Keyword, item: Paper, now: datetime) -> list[Paper]:
    """A poll with one new paper as releases before schema 6 committed it: the outbox rows
    themselves, waiting for the end of their cycle (no due time yet)."""
    with write(db):
        upsert_papers(db, [item], now)
        db.execute("INSERT INTO keyword_seen (keyword_id, arxiv_id, first_seen) VALUES (?, ?, ?)",
                   [kw.id, item.arxiv_id, to_db(now)])
        db.execute("INSERT INTO keyword_papers (keyword_id, arxiv_id, published) VALUES (?, ?, ?)",
                   [kw.id, item.arxiv_id, to_db(item.published)])
        db.execute("""INSERT INTO outbox (subscriber_id, arxiv_id, keyword_ids, status, attempts,
                      created_at) SELECT subscriber_id, ?, json_array(?), 'pending', 0, ?
                      FROM subscriptions WHERE keyword_id = ?""",
                   [item.arxiv_id, kw.id, to_db(now), kw.id])
    return [item]


async def test_a_schema_5_database_with_rows_in_every_state_is_upgraded_and_counted(
        world: World) -> None:
    """Schema 6 counts the outbox by triggers: the counts start from the rows already there."""
    w = world
    db = database_at(w.db, "m005_announcements")
    now = datetime.now(UTC)
    kw = baseline_keyword(db, KEYWORD, w.arxiv.papers, now - timedelta(hours=2))
    sub = sub_repo.ensure(db, "email", BOB, now)
    sub_repo.subscribe(db, sub, kw, "config", now)
    sent, due, interrupted = paper(30, days=3), paper(31, days=0.2), paper(32, days=0.1)
    w.arxiv.add(sent, due, interrupted)
    for item in (sent, due, interrupted):
        old_release_poll(db, kw, item, now)
        if item is not interrupted:
            outbox.release_waiting(db, now, lambda _sub: now)
        if item is sent:
            outbox.mark_sent(db, [r.id for r in outbox.due_rows(db, sub.id, now)], now)
    db.close()

    log = await w.once()
    assert "database migrated to schema" in log
    assert sorted(w.titles()) == [f"On {KEYWORD}, part 31", f"On {KEYWORD}, part 32"]
    with sqlite3.connect(w.db) as conn:
        counted = conn.execute("""SELECT b.channel, o.status, count(*) FROM outbox o
                                  JOIN subscribers b ON b.id = o.subscriber_id
                                  GROUP BY b.channel, o.status""").fetchall()
        tally = conn.execute("SELECT channel, status, n FROM outbox_tally WHERE n != 0 "
                             "ORDER BY channel, status").fetchall()
        assert counted == tally == [("email", "sent", 3)]
    code, out, _ = await run_cli(w.config, "status")
    assert code == 0 and "Pending notifications: none" in out


async def test_a_schema_1_database_is_migrated_with_a_backup_and_keeps_its_baseline(
        world: World) -> None:
    w = world
    db = database_at(w.db, "m001_core")
    baseline_keyword(db, KEYWORD, w.arxiv.papers, datetime.now(UTC) - timedelta(hours=2))
    db.close()
    w.arxiv.add(paper(10, days=0.1))

    log = await w.once()
    assert f"database migrated to schema {len(known_names())} (backup: " in log
    backup = w.tmp / "papers.db.bak-1"
    with sqlite3.connect(backup) as old:
        assert old.execute("SELECT count(*) FROM keyword_seen").fetchone() == (3,)
        assert "outbox" not in {r[0] for r in old.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
    # the baseline survived the upgrade: only the paper that arrived since is news
    assert w.titles() == [f"On {KEYWORD}, part 10"]
    code, out, _ = await run_cli(w.config, "status")
    assert code == 0 and f"{KEYWORD}  [config]  papers: 4" in out


async def test_pending_outbox_rows_are_delivered_after_a_restart_on_an_older_release_database(
        world: World) -> None:
    """Rows a previous release left pending, due or still waiting for their cycle's end (the
    process died mid-cycle), all arrive once; a migration, if one is due, keeps a backup."""
    w = world
    db = database_at(w.db, "m002_channels")
    pending_migrations = len(known_names()) > 2
    now = datetime.now(UTC)
    kw = baseline_keyword(db, KEYWORD, w.arxiv.papers, now - timedelta(hours=2))
    sub = sub_repo.ensure(db, "email", BOB, now)
    sub_repo.subscribe(db, sub, kw, "config", now)
    due, interrupted = paper(20, days=0.2), paper(21, days=0.1)
    w.arxiv.add(due, interrupted)
    for item in (due, interrupted):
        new = old_release_poll(db, kw, item, now)
        assert new == [item]
        if item is due:
            outbox.release_waiting(db, now, lambda _sub: now)
    db.close()

    log = await w.once()
    assert sorted(w.titles()) == [f"On {KEYWORD}, part 20", f"On {KEYWORD}, part 21"]
    assert len(w.smtp.messages) == 1
    backup = w.tmp / "papers.db.bak-2"
    assert backup.exists() == pending_migrations
    assert ("database migrated" in log) == pending_migrations
    with sqlite3.connect(w.db) as conn:
        assert conn.execute("SELECT status, count(*) FROM outbox GROUP BY status").fetchall() \
            == [("sent", 2)]
    await w.once()
    assert len(w.smtp.messages) == 1  # sent once, never again


# -- retention in run --once ------------------------------------------------------------------
async def test_run_once_prunes_what_the_daemon_prunes(world: World) -> None:
    """A scheduled-CI deployment only ever runs `run --once`: it must not grow without limit."""
    w = world
    await w.once()  # the baseline
    w.arxiv.add(paper(30, days=0.1))
    await w.once()
    assert w.titles() == [f"On {KEYWORD}, part 30"]
    long_ago = (datetime.now(UTC) - timedelta(days=120)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    with sqlite3.connect(w.db) as conn:  # as if all of it had happened 120 days ago
        conn.execute("UPDATE keyword_seen SET first_seen = ?", [long_ago])
        conn.execute("UPDATE outbox SET sent_at = ?", [long_ago])

    log = await w.once()
    assert "retention: 4 seen entries, 1 ended notifications and 0 papers older than 90 days " \
           "pruned" in log
    with sqlite3.connect(w.db) as conn:
        assert conn.execute("SELECT count(*) FROM keyword_seen").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM outbox").fetchone() == (0,)
    code, out, _ = await run_cli(w.config, "status")  # the digest's window is not retention's
    assert code == 0 and f"{KEYWORD}  [config]  papers: 4" in out


# -- one daemon per database ------------------------------------------------------------------
async def test_a_second_daemon_on_the_same_database_is_refused(world: World) -> None:
    w = world
    async with DaemonProcess(w.config, "run", env={"DAILY_PAPERS_SECRET": SECRET}) as first:
        base = (await first.wait_for_log(LISTENING)).group(1)
        await first.wait_for_log(r"cycle: 1 keywords polled")
        for args in (("run",), ("run", "--once"), ("migrate",)):
            code, out, err = await run_cli(w.config, *args)
            assert code == 2, (args, out, err)
            assert "another daily-papers process" in err and "holds this database" in err
            assert "Traceback" not in err
        assert (await health(base))[0] == 200  # the first one did not notice
        assert await first.stop() == 0


# -- the daily digest across a DST change -----------------------------------------------------
def berlin(*args: int, fold: int = 0) -> datetime:
    return datetime(*args, tzinfo=BERLIN, fold=fold).astimezone(UTC)


@pytest.mark.parametrize(("now", "hhmm", "expected"), [
    # the last Sunday of October 2025: 03:00 CEST becomes 02:00 CET
    (berlin(2025, 10, 25, 9, 0), "08:00", berlin(2025, 10, 26, 8, 0)),  # 07:00 UTC now
    (berlin(2025, 10, 26, 2, 0), "02:30", berlin(2025, 10, 26, 2, 30)),  # first 02:30
    (berlin(2025, 10, 26, 2, 45), "02:30", berlin(2025, 10, 27, 2, 30)),  # not the second
    (berlin(2025, 10, 26, 2, 15, fold=1), "02:30", berlin(2025, 10, 27, 2, 30)),
    (berlin(2025, 10, 26, 2, 30), "02:30", berlin(2025, 10, 26, 2, 30)),  # at the time: now
    # the last Sunday of March 2026: 02:00 CET becomes 03:00 CEST; 02:30 does not exist
    (berlin(2026, 3, 29, 1, 0), "02:30", berlin(2026, 3, 29, 3, 30)),
    (berlin(2026, 3, 28, 23, 0), "08:00", berlin(2026, 3, 29, 8, 0)),
])
def test_next_digest_time_across_dst(now: datetime, hhmm: str, expected: datetime) -> None:
    assert next_digest_time(now, hhmm, "Europe/Berlin") == expected
    assert berlin(2025, 10, 26, 8, 0) == datetime(2025, 10, 26, 7, 0, tzinfo=UTC)


class Recorder(Notifier):
    """An in-memory channel: what the dispatcher handed over, and when (the injected clock)."""

    channel = "email"

    def __init__(self, clock: Clock) -> None:
        self.limits = Limits()
        self.clock = clock
        self.sent: list[tuple[datetime, list[str]]] = []

    def pack(self, subscriber: Subscriber, rows: Sequence[OutboxRow]) -> list[Message]:
        return [Message(tuple(rows), None)]

    async def send(self, subscriber: Subscriber, message: Message) -> Delivery:
        self.sent.append((self.clock.now(), [r.paper.arxiv_id for r in message.rows]))
        return Delivery(Outcome.SENT)


@pytest.mark.parametrize("hhmm", ["02:30", "08:00"])
async def test_a_daily_digest_goes_once_per_local_date_across_the_october_change(
        store: AsyncStore, clock: Clock, add_keyword: KeywordFactory,
        add_subscriber: SubscriberFactory, hhmm: str) -> None:
    """Four days, a new paper every hour, a cycle and a dispatcher round every 15 minutes."""
    clock.current = berlin(2025, 10, 24, 12, 0)
    cfg = Config(email=EmailConfig(host="smtp.test", digest_time=hhmm, timezone="Europe/Berlin"))
    due_at = due_at_factory(cfg, clock.now)
    kw = await add_keyword(KEYWORD)
    await add_subscriber("email", BOB, kw)
    await store.call(polls.commit_poll, kw, [], baseline=True, now=clock.now(), max_papers=100,
                     notify_floor=clock.now(), total_results=0)
    recorder = Recorder(clock)
    dispatcher = Dispatcher(store, {"email": recorder}, clock.now, digest_period_factory(cfg))
    made: list[tuple[str, datetime]] = []
    for step in range(4 * 24 * 4):
        if step % 4 == 0:
            made.append((f"2510.{step:05d}", clock.now()))
            news = Paper(arxiv_id=made[-1][0], version=1, title="t", abstract="a", authors=("A",),
                         published=clock.now(), updated=clock.now())
            current = await store.call(kw_repo.get, kw.id)
            await store.call(polls.commit_poll, current, [news], baseline=False,
                             now=clock.now(), max_papers=100,
                             notify_floor=clock.now() - timedelta(days=14), total_results=step)
            await store.call(outbox.release, clock.now(), due_at)
        await dispatcher.drain()
        clock.advance(timedelta(minutes=15))

    local_dates = [when.astimezone(BERLIN).date() for when, _ in recorder.sent]
    assert len(local_dates) == len(set(local_dates)) == 4  # Oct 25, 26, 27, 28
    hour, minute = (int(x) for x in hhmm.split(":"))
    for when, _ in recorder.sent:
        local = when.astimezone(BERLIN)
        assert (local.hour, local.minute, local.fold) == (hour, minute, 0)
    delivered = [aid for _, ids in recorder.sent for aid in ids]
    assert len(delivered) == len(set(delivered))  # each paper once
    last = recorder.sent[-1][0]
    assert set(delivered) == {aid for aid, at in made if at <= last}


async def publish(store: AsyncStore, kw: Keyword, arxiv_id: str, now: datetime,
                  due_at: Callable[[Subscriber], datetime]) -> None:
    """A cycle at `now` that found one new paper, then the release at its end."""
    news = Paper(arxiv_id=arxiv_id, version=1, title="t", abstract="a", authors=("A",),
                 published=now, updated=now)
    current = await store.call(kw_repo.get, kw.id)
    await store.call(polls.commit_poll, current, [news], baseline=False, now=now,
                     max_papers=100, notify_floor=now - timedelta(days=14), total_results=1)
    await store.call(outbox.release, now, due_at)


async def daily_reader(store: AsyncStore, clock: Clock, add_keyword: KeywordFactory,
                       add_subscriber: SubscriberFactory) -> Keyword:
    kw = await add_keyword(KEYWORD)
    await add_subscriber("email", BOB, kw)
    await store.call(polls.commit_poll, kw, [], baseline=True, now=clock.now(), max_papers=100,
                     notify_floor=clock.now(), total_results=0)
    return kw


def daily(hhmm: str) -> Config:
    return Config(email=EmailConfig(host="smtp.test", digest_time=hhmm,
                                    timezone="Europe/Berlin"))


async def test_a_digest_missed_while_down_goes_at_the_next_start(
        store: AsyncStore, clock: Clock, add_keyword: KeywordFactory,
        add_subscriber: SubscriberFactory) -> None:
    clock.current = berlin(2025, 10, 25, 20, 0)
    cfg = daily("08:00")
    kw = await daily_reader(store, clock, add_keyword, add_subscriber)
    await publish(store, kw, "2510.00001", clock.now(), due_at_factory(cfg, clock.now))
    clock.current = berlin(2025, 10, 27, 6, 0)  # down over the digest of the 26th
    recorder = Recorder(clock)
    dispatcher = Dispatcher(store, {"email": recorder}, clock.now, digest_period_factory(cfg))
    await dispatcher.drain()
    assert recorder.sent == [(clock.now(), ["2510.00001"])]
    # That was the 26th's digest, late: the 27th still gets its own at 08:00.
    clock.current = berlin(2025, 10, 27, 7, 0)
    await publish(store, kw, "2510.00002", clock.now(), due_at_factory(cfg, clock.now))
    clock.current = berlin(2025, 10, 27, 8, 0)
    await dispatcher.drain()
    assert recorder.sent[1:] == [(berlin(2025, 10, 27, 8, 0), ["2510.00002"])]


async def test_a_digest_time_moved_later_the_same_day_waits_for_the_next_date(
        store: AsyncStore, clock: Clock, add_keyword: KeywordFactory,
        add_subscriber: SubscriberFactory) -> None:
    clock.current = berlin(2025, 11, 3, 7, 0)
    kw = await daily_reader(store, clock, add_keyword, add_subscriber)
    morning = daily("08:00")
    await publish(store, kw, "2511.00001", clock.now(), due_at_factory(morning, clock.now))
    clock.current = berlin(2025, 11, 3, 8, 0)
    recorder = Recorder(clock)
    await Dispatcher(store, {"email": recorder}, clock.now, digest_period_factory(morning)).drain()
    assert recorder.sent == [(berlin(2025, 11, 3, 8, 0), ["2511.00001"])]

    evening = daily("20:00")  # the operator edits config.toml and restarts at 09:00
    clock.current = berlin(2025, 11, 3, 9, 0)
    await publish(store, kw, "2511.00002", clock.now(), due_at_factory(evening, clock.now))
    dispatcher = Dispatcher(store, {"email": recorder}, clock.now, digest_period_factory(evening))
    for hour in (20, 23):  # the 3rd had its digest: none at 20:00
        clock.current = berlin(2025, 11, 3, hour, 0)
        await dispatcher.drain()
    clock.current = berlin(2025, 11, 4, 20, 0)
    await dispatcher.drain()
    assert recorder.sent[1:] == [(berlin(2025, 11, 4, 20, 0), ["2511.00002"])]


# -- a changed keyword ------------------------------------------------------------------------
async def test_a_changed_keyword_rebaselines_without_notifying(world: World) -> None:
    w = world
    w.arxiv.add(*(paper(30 + n, "graph neural network", days=0.5 + n) for n in range(3)))
    await w.once()  # baseline of "graph neural networks"
    w.keyword = "graph neural network"  # the operator edits config.toml: a new query
    log = await w.once()
    assert "keyword 'graph neural network': 3 papers, 0 new (baseline)" in log
    assert w.smtp.messages == []  # three recent papers match the new query: none is news
    readme = (w.tmp / "README.md").read_text(encoding="utf-8")
    assert "## graph neural network\n" in readme and "## graph neural networks" not in readme
    w.arxiv.add(paper(40, "graph neural network", days=0.05))
    await w.once()
    assert w.titles() == ["On graph neural network, part 40"]


# -- one-click unsubscribe, then a restart with the address still in config.toml ------------------
async def test_one_click_unsubscribe_holds_across_a_restart(world: World) -> None:
    w = world
    await w.once()
    w.arxiv.add(paper(50, days=0.1))
    await w.once()
    (mail,) = w.smtp.messages
    link = str(mail.message["List-Unsubscribe"]).strip()[1:-1]
    env = {"DAILY_PAPERS_SECRET": SECRET}
    async with DaemonProcess(w.config, "run", env=env) as daemon:
        await daemon.wait_for_log(LISTENING)
        async with aiohttp.ClientSession() as http, http.post(
                link, data={"List-Unsubscribe": "One-Click"}) as resp:
            assert resp.status == 200
        assert await daemon.stop() == 0

    w.arxiv.add(paper(51, days=0.05))
    async with DaemonProcess(w.config, "run", env=env) as daemon:  # config still names bob
        await daemon.wait_for_log(r"cycle: 1 keywords polled, 1 ok, 1 new papers, "
                                  r"0 notifications queued")
        assert await daemon.stop() == 0
    assert any(BOB in line and "not re-created" in line for line in daemon.lines)
    assert len(w.smtp.messages) == 1
    code, out, _ = await run_cli(w.config, "subscriptions")
    assert code == 0 and BOB not in out
