"""The store itself: storage settings, migrations with their backup, refusal of newer schemas,
the instance lease, and one poll committed in one transaction."""

from __future__ import annotations

import dataclasses
import os
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlite_utils import Database

from storage import keywords as kw_repo
from storage import lease, outbox, retention
from storage import papers as paper_repo
from storage import subscribers as sub_repo
from storage.database import SchemaError, migrate, pending_migrations, require_current, to_db
from storage.polls import commit_poll
from storage.records import Keyword
from storage.schema import MIGRATIONS
from storage.store import AsyncStore, Store
from tests.conftest import Clock, PaperFactory

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
QUERY = 'ti:"graph neural networks" OR abs:"graph neural networks"'


@pytest.fixture
def sync_store(db_path: Path) -> Iterator[Store]:
    store = Store(db_path)
    try:
        yield store
    finally:
        store.close()


def add_keyword(db: Database) -> Keyword:
    kw, _ = kw_repo.ensure(db, "graph neural networks", "graph neural networks", QUERY, NOW,
                           max_keywords=500)
    return kw


def pragma(db: Database, name: str) -> object:
    return db.conn.execute(f"PRAGMA {name}").fetchone()[0]


# -- storage settings and schema --------------------------------------------------------------
def test_a_new_database_has_the_designed_settings_and_the_current_schema(
        db_path: Path, sync_store: Store):
    db = sync_store.db
    assert pragma(db, "journal_mode") == "wal"
    assert pragma(db, "synchronous") == 1  # NORMAL
    assert pragma(db, "auto_vacuum") == 2  # INCREMENTAL
    assert pragma(db, "busy_timeout") >= 5000  # type: ignore[operator]
    assert pending_migrations(db) == []
    require_current(db)
    sync_store.close()

    reopened = Store(db_path)
    try:
        assert pragma(reopened.db, "journal_mode") == "wal"
        assert pragma(reopened.db, "synchronous") == 1
        assert pragma(reopened.db, "auto_vacuum") == 2
    finally:
        reopened.close()


def _database_at_schema_1(path: Path, paper_factory: PaperFactory, now: datetime) -> list[str]:
    """A database as the first release left it, holding one keyword's window."""
    db = Database(sqlite3.connect(str(path)))
    MIGRATIONS.apply(db, stop_before="m002_channels")
    kw = add_keyword(db)
    papers = [paper_factory(days=d) for d in (1, 2)]
    commit_poll(db, kw, papers, baseline=True, now=now, max_papers=10,
                notify_floor=now - timedelta(days=14), total_results=2)
    db.close()
    return [p.arxiv_id for p in papers]


def test_migrating_an_older_database_keeps_its_data_after_a_backup(
        db_path: Path, paper: PaperFactory, clock: Clock):
    stored = _database_at_schema_1(db_path, paper, clock.now())
    store = Store(db_path)
    try:
        with pytest.raises(SchemaError, match="run `daily-papers migrate`"):
            require_current(store.db)
        backup = migrate(store.db, db_path)
        assert backup == db_path.with_name(f"{db_path.name}.bak-1") and backup.exists()
        require_current(store.db)
        kw = kw_repo.by_canonical(store.db, "graph neural networks")
        assert kw is not None and kw.baseline_query == QUERY
        assert [p.arxiv_id for p in paper_repo.window(store.db, kw.id)] == stored
        assert outbox.counts(store.db) == {}  # the new tables exist and work
        assert migrate(store.db, db_path) is None  # nothing left to do
    finally:
        store.close()

    old = Database(sqlite3.connect(str(backup)))
    try:
        assert [m.name for m in MIGRATIONS.applied(old)] == ["m001_core"]
        assert old.table("papers").count == 2
    finally:
        old.close()


def test_a_database_from_a_newer_version_is_refused(db_path: Path, sync_store: Store):
    sync_store.db.table("_sqlite_migrations").insert(
        {"migration_set": "daily_papers", "name": "m999_from_the_future",
         "applied_at": "2027-01-01 00:00:00+00:00"})
    for check in (pending_migrations, require_current):
        with pytest.raises(SchemaError, match="newer"):
            check(sync_store.db)
    with pytest.raises(SchemaError, match="newer"):
        migrate(sync_store.db, db_path)
    assert list(db_path.parent.glob("*.bak-*")) == []


async def test_async_store_runs_every_call_on_its_one_thread(store: AsyncStore):
    threads = {await store.call(lambda _db: threading.current_thread().name) for _ in range(3)}
    assert len(threads) == 1 and threads.pop().startswith("store")
    assert threading.current_thread().name == "MainThread"


# -- the lease --------------------------------------------------------------------------------
def test_a_second_holder_is_refused_while_the_first_is_fresh(sync_store: Store):
    db = sync_store.db
    me = os.getpid()
    assert lease.acquire(db, "first", me, "here", NOW) is None
    refusal = lease.acquire(db, "second", me, "here", NOW + timedelta(seconds=30))
    assert refusal is not None and f"pid {me} on here" in refusal
    assert lease.heartbeat(db, "first", NOW + timedelta(seconds=40))
    # a holder on another host cannot be checked for life: its heartbeat decides
    assert lease.acquire(db, "third", 999_999_999, "elsewhere",
                         NOW + timedelta(seconds=90)) is not None


def test_a_lease_of_a_dead_local_process_is_taken_over_at_once(sync_store: Store):
    db = sync_store.db
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # reaped: its pid names no process now
    assert lease.acquire(db, "crashed", child.pid, "here", NOW) is None
    assert lease.acquire(db, "restarted", os.getpid(), "here", NOW + timedelta(seconds=1)) is None
    assert not lease.heartbeat(db, "crashed", NOW + timedelta(seconds=2))
    assert lease.heartbeat(db, "restarted", NOW + timedelta(seconds=2))


def test_an_expired_lease_is_taken_over(sync_store: Store):
    db = sync_store.db
    assert lease.acquire(db, "stuck", os.getpid(), "elsewhere", NOW) is None
    assert lease.acquire(db, "new", os.getpid(), "here", NOW + timedelta(seconds=59)) is not None
    assert lease.acquire(db, "new", os.getpid(), "here", NOW + timedelta(seconds=61)) is None
    assert not lease.heartbeat(db, "stuck", NOW + timedelta(seconds=62))
    lease.release(db, "new")
    assert lease.acquire(db, "another", os.getpid(), "here", NOW + timedelta(seconds=63)) is None


# -- one poll, one transaction ----------------------------------------------------------------
def test_a_poll_that_fails_midway_writes_nothing(sync_store: Store, paper: PaperFactory,
                                                 clock: Clock):
    db = sync_store.db
    now = clock.now()
    kw = add_keyword(db)
    shown = [paper(days=d) for d in (1, 2, 3)]
    floor = now - timedelta(days=14)
    commit_poll(db, kw, shown, baseline=True, now=now, max_papers=10, notify_floor=floor,
                total_results=3)
    kw = kw_repo.get(db, kw.id)
    assert kw is not None
    window = paper_repo.window(db, kw.id)

    good = paper(days=0.5)
    broken = dataclasses.replace(paper(days=0.4), title=None)  # type: ignore[arg-type]
    later = now + timedelta(hours=1)
    with pytest.raises(sqlite3.IntegrityError):
        # reset_window deletes the window first, and `good` is inserted before `broken` fails
        commit_poll(db, kw, [good, broken], baseline=False, now=later, max_papers=10,
                    notify_floor=floor, total_results=5, reset_window=True)
    assert not db.conn.in_transaction
    assert paper_repo.window(db, kw.id) == window
    assert paper_repo.count(db) == 3
    assert kw_repo.seen_among(db, kw.id, [good.arxiv_id]) == set()
    assert kw_repo.get(db, kw.id) == kw

    new, changed = commit_poll(db, kw, [good], baseline=False, now=later, max_papers=10,
                               notify_floor=floor, total_results=4)
    assert new == [good] and changed


# -- retention: 90 days, by each keyword's last success, never by a clock that jumped ----------
def test_retention_prunes_by_each_keywords_last_success_not_by_the_clock(
        sync_store: Store, paper: PaperFactory):
    db = sync_store.db
    polled = add_keyword(db)  # last success NOW
    failing, _ = kw_repo.ensure(db, "message passing", "message passing",
                                'ti:"message passing"', NOW, max_keywords=500)
    sub = sub_repo.ensure(db, "telegram", "1", NOW)
    ages = {"2601.00001": 120, "2601.00002": 60}  # days before NOW
    for arxiv_id, days in ages.items():
        commit_poll(db, kw_repo.get(db, failing.id), [paper(arxiv_id=arxiv_id)], baseline=True,
                    now=NOW - timedelta(days=200 + days), max_papers=10,
                    notify_floor=NOW - timedelta(days=400), total_results=1)
        commit_poll(db, kw_repo.get(db, polled.id), [paper(arxiv_id=arxiv_id)], baseline=True,
                    now=NOW - timedelta(days=days), max_papers=10,
                    notify_floor=NOW - timedelta(days=400), total_results=1)
    # `failing` last succeeded 260 days ago, `polled` now; both saw each paper
    commit_poll(db, kw_repo.get(db, polled.id), [], baseline=True, now=NOW, max_papers=10,
                notify_floor=NOW, total_results=0)
    for arxiv_id, days in ages.items():
        db.execute("""INSERT INTO outbox (subscriber_id, arxiv_id, keyword_ids, status,
                      created_at, sent_at) VALUES (?, ?, '[1]', 'sent', ?, ?)""",
                   [sub.id, arxiv_id, NOW.isoformat(), to_db(NOW - timedelta(days=days))])
    db.conn.commit()

    def seen(kw: Keyword) -> list[str]:
        return sorted(r["arxiv_id"] for r in db.query(
            "SELECT arxiv_id FROM keyword_seen WHERE keyword_id = ?", [kw.id]))

    def sent() -> list[str]:
        return sorted(r["arxiv_id"] for r in db.query("SELECT arxiv_id FROM outbox"))

    ahead = NOW + timedelta(days=100)  # a clock that jumped: prunes no more than the right one
    assert retention.prune(db, ahead, batch=1) == retention.Pruned(seen=1, outbox=1, papers=0)
    assert seen(polled) == ["2601.00002"]  # 120 days before its last success: gone
    assert seen(failing) == ["2601.00001", "2601.00002"]  # not polled successfully since
    assert sent() == ["2601.00002"]
    behind = NOW - timedelta(days=40)  # a stale clock: only what is 90 days old by it too
    assert retention.prune(db, behind, batch=1).seen == 0


def test_journal_ref_and_doi_arrive_without_a_new_version(tmp_path: Path) -> None:
    """arXiv adds them to a paper later at the same version; an older version changes nothing."""
    from dataclasses import replace
    from datetime import UTC, datetime

    from storage import papers as paper_repo
    from storage.database import connect, write
    from storage.records import Paper

    db = connect(tmp_path / "p.db")
    now = datetime(2026, 11, 20, tzinfo=UTC)
    v2 = Paper("2511.00001", 2, "Title v2", "Abstract", ("A",), now, now)
    with write(db):
        paper_repo.upsert_papers(db, [v2], now)
        paper_repo.upsert_papers(db, [replace(v2, journal_ref="CVPR 2026", doi="10.1/x")], now)
        paper_repo.upsert_papers(db, [replace(v2, version=1, title="Title v1", doi="")], now)
    row = next(db.query("SELECT version, title, journal_ref, doi FROM papers"))
    assert row == {"version": 2, "title": "Title v2", "journal_ref": "CVPR 2026", "doi": "10.1/x"}
    db.close()


# -- a Telegram group that became a supergroup ------------------------------------------------
def test_a_group_moved_onto_a_supergroup_already_known_merges_keywords_and_rows(
        sync_store: Store, paper: PaperFactory) -> None:
    db = sync_store.db
    gnn = add_keyword(db)
    llm, _ = kw_repo.ensure(db, "language models", "language models",
                            'ti:"language models" OR abs:"language models"', NOW, max_keywords=500)
    old = sub_repo.ensure(db, "telegram", "-55", NOW)
    new = sub_repo.ensure(db, "telegram", "-1000055", NOW)  # subscribed before the move arrived
    sub_repo.subscribe(db, old, gnn, "user", NOW)
    sub_repo.subscribe(db, new, llm, "user", NOW)
    both, only_old = paper(days=0.1), paper(days=0.2)
    floor = NOW - timedelta(days=14)
    commit_poll(db, gnn, [both, only_old], baseline=False, now=NOW, max_papers=100,
                notify_floor=floor, total_results=2)
    commit_poll(db, kw_repo.get(db, llm.id), [both], baseline=False, now=NOW, max_papers=100,
                notify_floor=floor, total_results=1)
    outbox.release(db, NOW, lambda s: NOW)

    assert sub_repo.move_address(db, "telegram", "-55", "-1000055")
    assert sub_repo.find(db, "telegram", "-55") is None
    moved = sub_repo.find(db, "telegram", "-1000055")
    assert moved is not None and moved.id == new.id
    assert sorted(k.display for k, _ in sub_repo.subscriptions(db, moved.id)) == [
        "graph neural networks", "language models"]
    rows = {r.paper.arxiv_id: sorted(r.keywords) for r in outbox.due_rows(db, moved.id, NOW)}
    assert rows == {both.arxiv_id: ["graph neural networks", "language models"],
                    only_old.arxiv_id: ["graph neural networks"]}
