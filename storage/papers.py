"""Papers: one row per arXiv id at its newest version; rows come back as records.Paper."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlite_utils import Database

from storage.database import from_db, to_db
from storage.records import Paper
from storage.rows import PAPER_COLUMNS, paper_from_row

# A first-version date further ahead of our clock than this is not trusted: it never counts as
# a keyword's newest paper, and the next answer may correct it.
FUTURE_SKEW = timedelta(days=2)


def upsert_papers(db: Database, papers: Iterable[Paper], now: datetime) -> None:
    """A newer version updates the row; an older one changes nothing. At the same version only
    journal_ref and DOI may change (arXiv adds them without a new version), and a first-version
    date that lay in the future (beyond FUTURE_SKEW) takes arXiv's correction."""
    newer = "excluded.version > papers.version"
    future = f"papers.published > '{to_db(now + FUTURE_SKEW)}'"
    db.conn.executemany(
        f"""INSERT INTO papers ({PAPER_COLUMNS}, first_seen)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            ON CONFLICT(arxiv_id) DO UPDATE SET
              version = excluded.version,
              title = CASE WHEN {newer} THEN excluded.title ELSE title END,
              abstract = CASE WHEN {newer} THEN excluded.abstract ELSE abstract END,
              authors = CASE WHEN {newer} THEN excluded.authors ELSE authors END,
              comment = CASE WHEN {newer} THEN excluded.comment ELSE comment END,
              primary_category = CASE WHEN {newer} THEN excluded.primary_category
                                 ELSE primary_category END,
              categories = CASE WHEN {newer} THEN excluded.categories ELSE categories END,
              updated = CASE WHEN {newer} THEN excluded.updated ELSE updated END,
              published = CASE WHEN {future} THEN excluded.published ELSE published END,
              journal_ref = excluded.journal_ref, doi = excluded.doi
            WHERE {newer} OR (excluded.version = papers.version AND (
              excluded.journal_ref IS NOT papers.journal_ref OR excluded.doi IS NOT papers.doi))
              OR ({future} AND excluded.version >= papers.version
                  AND excluded.published != papers.published)""",
        [
            (p.arxiv_id, p.version, p.title, p.abstract, json.dumps(list(p.authors)),
             p.comment, p.journal_ref, p.doi, p.primary_category, json.dumps(list(p.categories)),
             to_db(p.published), to_db(p.updated), to_db(now))
            for p in papers
        ],
    )


def window(db: Database, keyword_id: int, limit: int | None = None) -> list[Paper]:
    """A keyword's display window, newest first by first-version date."""
    sql = f"""SELECT {", ".join("p." + c.strip() for c in PAPER_COLUMNS.split(","))}
              FROM keyword_papers kp JOIN papers p ON p.arxiv_id = kp.arxiv_id
              WHERE kp.keyword_id = ? ORDER BY kp.published DESC, kp.arxiv_id DESC"""
    params: list[Any] = [keyword_id]
    if limit is not None:
        sql += " LIMIT ?"
        params.append(limit)
    return [paper_from_row(r) for r in db.query(sql, params)]


def newest_of(db: Database, keyword_ids: Sequence[int],
              limit: int) -> list[tuple[Paper, list[str]]]:
    """The newest papers of these keywords' windows together (all.atom, a reader's private
    feed), newest first by first-version date, each once with its keywords' display texts."""
    if not keyword_ids:
        return []
    columns = ", ".join("p." + c.strip() for c in PAPER_COLUMNS.split(","))
    marks = ", ".join("?" * len(keyword_ids))
    rows = db.query(
        f"""SELECT {columns}, json_group_array(k.display) AS labels
            FROM keyword_papers kp JOIN papers p ON p.arxiv_id = kp.arxiv_id
            JOIN keywords k ON k.id = kp.keyword_id
            WHERE kp.keyword_id IN ({marks}) GROUP BY p.arxiv_id
            ORDER BY p.published DESC, p.arxiv_id DESC LIMIT ?""", [*keyword_ids, limit])
    return [(paper_from_row(r), sorted(json.loads(r["labels"]))) for r in rows]


def subscriber_window(db: Database, subscriber_id: int,
                      limit: int) -> list[tuple[Paper, list[str]]]:
    """A subscriber's private feed: the newest papers of its keywords' windows."""
    ids = [r["keyword_id"] for r in db.query(
        "SELECT keyword_id FROM subscriptions WHERE subscriber_id = ?", [subscriber_id])]
    return newest_of(db, ids, limit)


def newest_published(db: Database, keyword_id: int, now: datetime) -> datetime | None:
    """The keyword's newest first-version date that can be believed at `now`: a paper dated
    beyond FUTURE_SKEW must not make every later, correct answer look stale."""
    row = next(db.query(
        "SELECT max(published) AS m FROM keyword_papers WHERE keyword_id = ? AND published <= ?",
        [keyword_id, to_db(now + FUTURE_SKEW)]))
    return from_db(row["m"])


def count(db: Database) -> int:
    return next(db.query("SELECT count(*) AS n FROM papers"))["n"]


def prune_orphans(db: Database) -> int:
    """Papers no window shows and no notification needs (written or still to expand)."""
    cur = db.execute(
        """DELETE FROM papers WHERE arxiv_id NOT IN (SELECT arxiv_id FROM keyword_papers)
           AND arxiv_id NOT IN (SELECT arxiv_id FROM outbox)
           AND arxiv_id NOT IN (SELECT arxiv_id FROM fanout)"""
    )
    return cur.rowcount
