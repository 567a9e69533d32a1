"""Committing one keyword's poll, or one harvest page for every keyword it matched: papers,
seen set, window and what is owed to subscribers (storage/fanout) in ONE transaction."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, datetime

from sqlite_utils import Database

from storage import fanout, harvests
from storage import keywords as kw_repo
from storage.database import to_db, write
from storage.papers import upsert_papers
from storage.records import Keyword, Paper


def commit_poll(db: Database, keyword: Keyword, papers: Sequence[Paper], *, baseline: bool,
                now: datetime, max_papers: int, notify_floor: datetime,
                total_results: int, reset_window: bool = False) -> tuple[list[Paper], bool]:
    """Store what a successful poll returned; returns (papers new for this keyword, changed).

    `changed` says whether anything the digest shows may differ (papers, versions, window).

    On a baseline nothing is new: the seen set and window are filled, no one is told.
    A re-baseline after a query change starts the window afresh.
    """
    with write(db):
        before = db.conn.total_changes
        if reset_window:
            db.execute("DELETE FROM keyword_papers WHERE keyword_id = ?", [keyword.id])
        upsert_papers(db, papers, now)
        new = _remember(db, keyword, papers, baseline=baseline, now=now, max_papers=max_papers,
                        notify_floor=notify_floor)
        changed = db.conn.total_changes != before
        _mark_success(db, keyword, baseline=baseline, now=now, max_papers=max_papers,
                      total_results=total_results)
        if new:
            fanout.record(db, keyword.id, new, now)
        return new, changed


def commit_harvest_page(db: Database, matches: Mapping[Keyword, Sequence[Paper]], *,
                        now: datetime, max_papers: int, notify_floor: datetime,
                        set_spec: str, datestamp: date | None) -> dict[int, list[Paper]]:
    """One harvest page in ONE transaction: for each keyword that matched, exactly what a
    search poll of it writes (papers, seen set, window, what is owed), and where the harvest
    of this set resumes. Returns keyword id → its new papers."""
    with write(db):
        upsert_papers(db, list({p.arxiv_id: p for ps in matches.values() for p in ps}.values()),
                      now)
        found: dict[int, list[Paper]] = {}
        for keyword, papers in matches.items():
            new = _remember(db, keyword, papers, baseline=False, now=now,
                            max_papers=max_papers, notify_floor=notify_floor)
            _mark_success(db, keyword, baseline=False, now=now, max_papers=max_papers,
                          total_results=keyword.last_total or 0)
            if new:
                fanout.record(db, keyword.id, new, now)
                found[keyword.id] = new
        if datestamp is not None:
            harvests.advance(db, set_spec, datestamp, now)
        return found


def _remember(db: Database, keyword: Keyword, papers: Sequence[Paper], *, baseline: bool,
              now: datetime, max_papers: int, notify_floor: datetime) -> list[Paper]:
    """Seen set and display window of one keyword; returns the papers new for it."""
    ids = [p.arxiv_id for p in papers]
    seen = kw_repo.seen_among(db, keyword.id, ids)
    unseen = {p.arxiv_id: p for p in papers if p.arxiv_id not in seen}
    new = [] if baseline else [p for p in unseen.values() if p.published >= notify_floor]
    db.conn.executemany(
        "INSERT OR IGNORE INTO keyword_seen (keyword_id, arxiv_id, first_seen) VALUES (?,?,?)",
        [(keyword.id, aid, to_db(now)) for aid in unseen],
    )
    db.conn.executemany(
        """INSERT INTO keyword_papers (keyword_id, arxiv_id, published) VALUES (?, ?, ?)
           ON CONFLICT DO UPDATE SET published = excluded.published
           WHERE published != excluded.published""",
        [(keyword.id, p.arxiv_id, to_db(p.published)) for p in papers],
    )
    _trim_window(db, keyword.id, max_papers)
    return new


def _trim_window(db: Database, keyword_id: int, keep: int) -> None:
    db.execute(
        """DELETE FROM keyword_papers WHERE keyword_id = :kid AND arxiv_id NOT IN (
             SELECT arxiv_id FROM keyword_papers WHERE keyword_id = :kid
             ORDER BY published DESC, arxiv_id DESC LIMIT :keep)""",
        {"kid": keyword_id, "keep": keep},
    )


def _mark_success(db: Database, keyword: Keyword, *, baseline: bool, now: datetime,
                  max_papers: int, total_results: int) -> None:
    sets = ("last_poll = :now, last_success = :now, last_error = NULL, consecutive_failures = 0,"
            " last_total = :total, empty_since = NULL")
    if baseline:
        sets += ", baseline_query = :query, baseline_max_papers = :maxp"
    db.execute(
        f"UPDATE keywords SET {sets} WHERE id = :id",
        {"now": to_db(now), "total": total_results, "query": keyword.query,
         "maxp": max_papers, "id": keyword.id},
    )
