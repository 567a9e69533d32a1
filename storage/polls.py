"""Committing one keyword's poll, or one harvest page for every keyword it matched: papers,
seen set, window and what is owed to subscribers (storage/fanout) in ONE transaction."""

from __future__ import annotations

import json
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
    of this set resumes. Returns keyword id → its new papers.

    Written set by set, not keyword by keyword: with 30,000 keywords a page matches ~70,000
    (keyword, paper) pairs for ~17,000 keywords, and six statements per keyword cost more
    than the matching."""
    with write(db):
        unique = {p.arxiv_id: p for ps in matches.values() for p in ps}
        upsert_papers(db, list(unique.values()), now)
        published = {aid: to_db(p.published) for aid, p in unique.items()}
        _load_page_matches(db, [(kw.id, aid, published[aid]) for kw, ps in matches.items()
                                for aid in dict.fromkeys(p.arxiv_id for p in ps)])
        seen = set(db.conn.execute(
            """SELECT m.keyword_id, m.arxiv_id FROM temp.page_matches m
               JOIN keyword_seen s USING (keyword_id, arxiv_id)"""))
        stamp = to_db(now)
        db.execute("""INSERT OR IGNORE INTO keyword_seen (keyword_id, arxiv_id, first_seen)
                      SELECT keyword_id, arxiv_id, ? FROM temp.page_matches""", [stamp])
        db.execute("""INSERT INTO keyword_papers (keyword_id, arxiv_id, published)
                      SELECT keyword_id, arxiv_id, published FROM temp.page_matches WHERE true
                      ON CONFLICT DO UPDATE SET published = excluded.published
                      WHERE published != excluded.published""")
        _trim_windows(db, max_papers)
        db.execute(
            f"""UPDATE keywords SET {_SUCCESS}, last_total = coalesce(last_total, 0)
                WHERE id IN (SELECT value FROM json_each(:ids))""",
            {"now": stamp, "ids": json.dumps([kw.id for kw in matches])})
        found: dict[int, list[Paper]] = {}
        for keyword, papers in matches.items():
            new = [p for p in {p.arxiv_id: p for p in papers}.values()
                   if (keyword.id, p.arxiv_id) not in seen and p.published >= notify_floor]
            if new:
                found[keyword.id] = new
        fanout.record_many(db, found, now)
        db.execute("DELETE FROM temp.page_matches")
        if datestamp is not None:
            harvests.advance(db, set_spec, datestamp, now)
        return found


def _load_page_matches(db: Database, pairs: list[tuple[int, str, str]]) -> None:
    """The page's (keyword, paper, published) pairs in a temporary table of this connection,
    so the seen set, windows and keywords are each written by one statement."""
    db.execute("""CREATE TEMP TABLE IF NOT EXISTS page_matches (
                    keyword_id INTEGER NOT NULL, arxiv_id TEXT NOT NULL, published TEXT,
                    PRIMARY KEY (keyword_id, arxiv_id)) WITHOUT ROWID""")
    db.execute("DELETE FROM temp.page_matches")
    db.conn.executemany("INSERT INTO temp.page_matches VALUES (?, ?, ?)", pairs)


def _trim_windows(db: Database, keep: int) -> None:
    """Each matched keyword keeps its `keep` newest papers; only windows that grew past it
    are read in full."""
    db.execute(
        """DELETE FROM keyword_papers WHERE rowid IN (
             SELECT id FROM (
               SELECT kp.rowid AS id, row_number() OVER (
                 PARTITION BY kp.keyword_id ORDER BY kp.published DESC, kp.arxiv_id DESC) AS n
               FROM keyword_papers kp WHERE kp.keyword_id IN (
                 SELECT keyword_id FROM keyword_papers WHERE keyword_id IN (
                   SELECT DISTINCT keyword_id FROM temp.page_matches)
                 GROUP BY keyword_id HAVING count(*) > :keep))
             WHERE n > :keep)""",
        {"keep": keep})


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


_SUCCESS = ("last_poll = :now, last_success = :now, last_error = NULL, consecutive_failures = 0,"
            " empty_since = NULL")


def _mark_success(db: Database, keyword: Keyword, *, baseline: bool, now: datetime,
                  max_papers: int, total_results: int) -> None:
    sets = f"{_SUCCESS}, last_total = :total"
    if baseline:
        sets += ", baseline_query = :query, baseline_max_papers = :maxp"
    db.execute(
        f"UPDATE keywords SET {sets} WHERE id = :id",
        {"now": to_db(now), "total": total_results, "query": keyword.query,
         "maxp": max_papers, "id": keyword.id},
    )
