"""The fan-out: a poll stores one "new for keyword" record per (keyword, new paper) and the
expansion turns them into outbox rows in short transactions, exactly once even when the process
is SIGKILLed between (or inside) two of them."""

from __future__ import annotations

import dataclasses
import json
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlite_utils import Database

from bot.fetch.keywords import parse_keyword
from storage import fanout, outbox
from storage import keywords as kw_repo
from storage import subscribers as sub_repo
from storage.database import migrate, write
from storage.polls import commit_harvest_page, commit_poll
from storage.records import Keyword, Paper
from storage.schema import MIGRATIONS
from storage.store import Store
from tests.fakes.arxiv_server import FakeArxiv
from tests.fakes.daemon import DaemonProcess, run_cli, write_config
from tests.test_operability import config_text, free_port

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
FLOOR = NOW - timedelta(days=14)


def paper(n: int) -> Paper:
    published = NOW - timedelta(hours=n)
    return Paper(arxiv_id=f"2611.{n:05d}", version=1, title=f"Paper {n}", abstract="About it.",
                 authors=("Ada Lovelace",), published=published, updated=published)


def keyword(db: Database, text: str) -> Keyword:
    kw, _ = kw_repo.ensure(db, text, text, f'ti:"{text}"', NOW, max_keywords=500)
    commit_poll(db, kw, [], baseline=True, now=NOW, max_papers=100, notify_floor=FLOOR,
                total_results=0)
    current = kw_repo.get(db, kw.id)
    assert current is not None
    return current


def poll(db: Database, kw: Keyword, papers: list[Paper]) -> None:
    new, _ = commit_poll(db, kw_repo.get(db, kw.id), papers, baseline=False, now=NOW,  # type: ignore[arg-type]
                         max_papers=100, notify_floor=FLOOR, total_results=len(papers))
    assert new == papers


def rows(db: Database) -> dict[tuple[str, str], tuple[list[int], str, str | None]]:
    """(address, paper) → (keyword ids, status, due) for every outbox row."""
    return {(r["address"], r["arxiv_id"]): (json.loads(r["keyword_ids"]), r["status"], r["due_at"])
            for r in db.query("""SELECT b.address, o.arxiv_id, o.keyword_ids, o.status, o.due_at
                                 FROM outbox o JOIN subscribers b ON b.id = o.subscriber_id""")}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = Store(tmp_path / "fanout.db")
    try:
        yield opened
    finally:
        opened.close()


def world(db: Database) -> tuple[Keyword, Keyword, dict[str, int]]:
    """60 readers of `gnn`, every third also of `mp`; a few who leave before the expansion."""
    gnn, mp = keyword(db, "graph neural networks"), keyword(db, "message passing")
    ids = {}
    for n in range(60):
        sub = sub_repo.ensure(db, "telegram", str(1000 + n), NOW)
        sub_repo.subscribe(db, sub, gnn, "user", NOW)
        if n % 3 == 0:
            sub_repo.subscribe(db, sub, mp, "user", NOW)
        ids[sub.address] = sub.id
    return gnn, mp, ids


def expected(gnn: Keyword, mp: Keyword, gone: set[str] = frozenset()) -> dict:  # type: ignore[assignment]
    due = "2026-11-20T12:00:00.000000Z"
    want = {}
    for n in range(60):
        address = str(1000 + n)
        if address in gone:
            continue
        for p in (1, 2, 3):
            want[(address, f"2611.{p:05d}")] = ([gnn.id], "pending", due)
        if n % 3 == 0:
            want[(address, "2611.00002")] = ([gnn.id, mp.id], "pending", due)
            want[(address, "2611.00004")] = ([mp.id], "pending", due)
    return want


def test_the_poll_writes_one_record_per_new_paper_and_the_expansion_the_rows(store: Store):
    db = store.db
    gnn, mp, _ = world(db)
    poll(db, gnn, [paper(1), paper(2), paper(3)])
    poll(db, mp, [paper(2), paper(4)])
    assert fanout.owed(db) == 5 and rows(db) == {}  # the polls wrote 5 records, no rows

    left = sub_repo.find(db, "telegram", "1003")
    blocked = sub_repo.find(db, "telegram", "1006")
    assert left is not None and blocked is not None
    sub_repo.unsubscribe(db, left, gnn, NOW)  # before the expansion: never told of gnn's papers
    sub_repo.deactivate(db, blocked.id, "blocked the bot")
    batches = []
    while True:
        batch = fanout.expand(db, lambda _sub: NOW, rows=40)
        batches.append(batch.written)
        if not batch.more:
            break
    want = expected(gnn, mp, gone={"1006"})
    want = {k: v for k, v in want.items() if not (k[0] == "1003" and v[0] == [gnn.id])}
    want[("1003", "2611.00002")] = ([mp.id], "pending", "2026-11-20T12:00:00.000000Z")
    assert rows(db) == want
    assert sum(batches) == len(want) and max(batches) <= 40  # no giant transaction
    assert fanout.owed(db) == 0


def test_a_harvest_sized_fan_out_is_written_in_batches_of_its_size_not_one_reader_each(
        store: Store):
    """A harvest page owes many records (here 1,000: 200 keywords × 5 papers) to readers who
    each want a few of them: a batch takes readers until their rows fill it."""
    db = store.db
    keywords = [keyword(db, f"topic {n}") for n in range(200)]
    for n, kw in enumerate(keywords):
        sub = sub_repo.ensure(db, "telegram", str(5000 + n), NOW)
        sub_repo.subscribe(db, sub, kw, "user", NOW)
    matches = {kw: [dataclasses.replace(paper(1), arxiv_id=f"2611.{100 + 5 * n + i:05d}")
                    for i in range(5)] for n, kw in enumerate(keywords)}
    commit_harvest_page(db, matches, now=NOW, max_papers=100, notify_floor=FLOOR,
                        set_spec="cs", datestamp=None)
    assert fanout.owed(db) == 1000
    batches = []
    while (batch := fanout.expand(db, lambda _sub: NOW, rows=100)).more:
        batches.append(batch.written)
    batches.append(batch.written)
    assert sum(batches) == 1000 and len(rows(db)) == 1000
    assert len(batches) <= 11 and max(batches) <= 100  # 10 batches of 20 readers, not 200
    assert fanout.owed(db) == 0


def test_a_paper_already_sent_to_a_reader_is_never_changed_nor_sent_again(store: Store):
    db = store.db
    gnn, mp, ids = world(db)
    poll(db, gnn, [paper(2)])
    outbox.release(db, NOW, lambda _sub: NOW)
    sent = [r.id for r in outbox.due_rows(db, ids["1000"], NOW)]
    outbox.mark_sent(db, sent, NOW)
    poll(db, mp, [paper(2)])  # new for mp later (say a new version matches it)
    assert outbox.release(db, NOW, lambda _sub: NOW) == 0  # every mp reader had the row
    assert rows(db)[("1000", "2611.00002")][:2] == ([gnn.id], "sent")
    assert rows(db)[("1003", "2611.00002")][:2] == ([gnn.id, mp.id], "pending")


EXPAND = """
import sys
from datetime import datetime, UTC
from pathlib import Path
from storage import fanout
from storage.store import Store
store = Store(Path(sys.argv[1]))
now = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
while True:
    batch = fanout.expand(store.db, lambda _sub: now, rows=int(sys.argv[2]))
    print(batch.written, batch.more, flush=True)
    if not batch.more:
        break
    sys.stdin.readline()  # the test says when to go on
"""


@pytest.mark.parametrize("kill_after", [1, 3, 7])
def test_a_kill_in_the_middle_of_the_expansion_loses_nothing_and_repeats_nothing(
        store: Store, kill_after: int):
    db = store.db
    gnn, mp, _ = world(db)
    poll(db, gnn, [paper(1), paper(2), paper(3)])
    poll(db, mp, [paper(2), paper(4)])
    path = store.path
    store.close()

    proc = subprocess.Popen([sys.executable, "-c", EXPAND, str(path), "25"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdin is not None and proc.stdout is not None
    for _ in range(kill_after):  # batches committed; then the next one is under way
        assert proc.stdout.readline().split()[1] == "True"
        proc.stdin.write("go\n")
        proc.stdin.flush()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stdin.close()
    proc.stdout.close()
    with sqlite3.connect(path) as conn:
        written = conn.execute("SELECT count(*) FROM outbox").fetchone()[0]
    assert 0 < written < len(expected(gnn, mp))

    finish = subprocess.run([sys.executable, "-c", EXPAND, str(path), "25"],
                            input="go\n" * 100, capture_output=True, text=True, check=True)
    assert finish.stdout.splitlines()[-1].endswith("False")
    store.db = Store(path).db
    assert rows(store.db) == expected(gnn, mp)
    assert fanout.owed(store.db) == 0


def counted(db: Database) -> dict[tuple[str, str], int]:
    return {(r["channel"], r["status"]): r["n"] for r in db.query(
        """SELECT b.channel, o.status, count(*) AS n FROM outbox o
           JOIN subscribers b ON b.id = o.subscriber_id GROUP BY b.channel, o.status""")}


def test_the_outbox_tally_equals_a_count_after_every_kind_of_change(store: Store):
    """/healthz, /metrics and `status` read the tally kept by triggers and by the expansion
    (every code path that inserts outbox rows), never a count."""
    db = store.db
    gnn, mp, ids = world(db)
    mail = sub_repo.ensure(db, "email", "a@example.org", NOW)
    sub_repo.subscribe(db, mail, gnn, "user", NOW)
    group = sub_repo.ensure(db, "telegram", "-55", NOW)
    sub_repo.subscribe(db, group, gnn, "user", NOW)
    supergroup = sub_repo.ensure(db, "telegram", "-1000055", NOW)
    sub_repo.subscribe(db, supergroup, mp, "user", NOW)
    poll(db, gnn, [paper(1), paper(2), paper(3)])
    poll(db, mp, [paper(2), paper(4)])
    steps = [
        lambda: outbox.release(db, NOW, lambda _sub: NOW),
        lambda: outbox.mark_sent(db, [r.id for r in outbox.due_rows(db, ids["1000"], NOW)], NOW),
        lambda: outbox.mark_failed(db, [r.id for r in outbox.due_rows(db, ids["1001"], NOW)],
                                   "refused", NOW),
        lambda: outbox.mark_retry(db, [r.id for r in outbox.due_rows(db, ids["1002"], NOW)],
                                  "later", NOW + timedelta(days=2), NOW + timedelta(days=2)),
        lambda: poll(db, mp, [paper(3)]),  # rows sent, pending (takes mp too) and new at once
        lambda: outbox.release(db, NOW, lambda _sub: NOW),
        lambda: sub_repo.unsubscribe(db, sub_repo.get(db, ids["1003"]), gnn, NOW),
        lambda: sub_repo.deactivate(db, ids["1004"], "blocked the bot"),
        lambda: sub_repo.move_address(db, "telegram", "-55", "-1000055"),
        lambda: outbox.prune(db, NOW + timedelta(days=91), 2),  # some of each kind stay
    ]
    for step in steps:
        step()
        db.conn.commit()
        assert outbox.counts(db) == counted(db)
    assert counted(db)[("email", "pending")] == 3
    assert {status for _, status in counted(db)} == {"pending", "sent", "failed"}


@pytest.mark.slow
async def test_sigterm_during_a_large_fan_out_stops_at_once_and_the_next_start_finishes_it(
        tmp_path: Path) -> None:
    """3,000 readers × 60 new papers: SIGTERM while the rows are written stops the daemon
    within its 10 s (before: it waited for the whole transaction), and the next start writes
    exactly the rows still owed."""
    readers, news = 3000, 60
    now = datetime.now(UTC)
    old = [dataclasses.replace(paper(n), published=now - timedelta(days=2, hours=n),
                               updated=now - timedelta(days=2, hours=n)) for n in range(1, 4)]
    new = [dataclasses.replace(paper(100 + n), title=f"On graph neural networks, part {n}",
                               published=now - timedelta(minutes=n),
                               updated=now - timedelta(minutes=n)) for n in range(news)]
    old = [dataclasses.replace(p, title=f"On graph neural networks, old {i}")
           for i, p in enumerate(old)]
    store = Store(tmp_path / "papers.db")
    parsed = parse_keyword("graph neural networks")
    kw, _ = kw_repo.ensure(store.db, parsed.display, parsed.canonical, parsed.query, now,
                           max_keywords=10)
    with write(store.db):
        for n in range(readers):
            sub_repo.subscribe(store.db, sub_repo.ensure(store.db, "telegram", str(n + 1), now),
                               kw, "user", now)
    commit_poll(store.db, kw, old, baseline=True, now=now, max_papers=100,
                notify_floor=now - timedelta(days=14), total_results=3)
    store.close()
    async with FakeArxiv(papers=old + new) as arxiv:
        config = write_config(tmp_path, config_text(arxiv, free_port(),
                                                    keywords=("graph neural networks",)))
        async with DaemonProcess(config, "run") as daemon:
            await daemon.wait_for_log(rf"'graph neural networks': \d+ papers, {news} new",
                                      timeout=60)
            assert await daemon.stop(timeout=10) == 0
        with sqlite3.connect(tmp_path / "papers.db") as conn:
            written = conn.execute("SELECT count(*) FROM outbox").fetchone()[0]
        assert written < readers * news  # it stopped in the middle
        code, _, err = await run_cli(config, "run", "--once")
        assert code == 0, err
    with sqlite3.connect(tmp_path / "papers.db") as conn:
        assert conn.execute("SELECT count(*), count(DISTINCT subscriber_id || arxiv_id) "
                            "FROM outbox").fetchone() == (readers * news, readers * news)
        assert conn.execute("SELECT count(*) FROM fanout").fetchone() == (0,)
        assert conn.execute("SELECT n FROM outbox_tally WHERE status = 'pending'"
                            ).fetchone() == (readers * news,)


def test_a_database_whose_trigger_counted_insertions_starts_exact_and_stays_so(tmp_path: Path):
    """Schema 8 drops the per-row insert trigger (the expansion counts its rows) and counts the
    outbox afresh once: an older database's tally, even one that drifted, ends exact."""
    path = tmp_path / "older.db"
    db = Database(sqlite3.connect(str(path)))
    MIGRATIONS.apply(db, stop_before=["m008_tally_insertions_by_code"])
    gnn, mp, _ = world(db)
    poll(db, gnn, [paper(1), paper(2)])
    with write(db):  # rows as a release before schema 8 wrote them: its trigger counted them
        db.execute("""INSERT INTO outbox (subscriber_id, arxiv_id, keyword_ids, status, attempts,
                      created_at) SELECT subscriber_id, '2611.00001', json_array(?), 'pending',
                      0, ? FROM subscriptions WHERE keyword_id = ?""", [gnn.id, NOW.isoformat(),
                                                                         gnn.id])
        db.execute("UPDATE outbox_tally SET n = n + 7")  # a drift, say from a hand-made row
    assert outbox.counts(db) != counted(db)

    migrate(db, path)
    assert "outbox_tally_insert" not in {r["name"] for r in db.query(
        "SELECT name FROM sqlite_master WHERE type = 'trigger'")}
    assert outbox.counts(db) == counted(db) == {("telegram", "pending"): 60}
    poll(db, mp, [paper(2), paper(4)])
    outbox.release(db, NOW, lambda _sub: NOW)
    assert outbox.counts(db) == counted(db) == {("telegram", "pending"): 60 + 60 + 20}
