"""Keywords: what is watched, with its baseline and poll health."""

from __future__ import annotations

from datetime import datetime

from sqlite_utils import Database

from storage.database import to_db, write
from storage.records import Keyword
from storage.rows import keyword_from_row


class InstanceFull(Exception):
    """max_keywords distinct keywords exist already."""



def get(db: Database, keyword_id: int) -> Keyword | None:
    rows = list(db.query("SELECT * FROM keywords WHERE id = ?", [keyword_id]))
    return keyword_from_row(rows[0]) if rows else None


def by_canonical(db: Database, canonical: str) -> Keyword | None:
    rows = list(db.query("SELECT * FROM keywords WHERE canonical = ?", [canonical]))
    return keyword_from_row(rows[0]) if rows else None


def ensure(db: Database, display: str, canonical: str, query: str, now: datetime,
           *, max_keywords: int) -> tuple[Keyword, bool]:
    """The keyword with this identity, created if new; (keyword, created)."""
    with write(db):
        found = by_canonical(db, canonical)
        if found is not None:
            if found.query != query:  # compiler changed: re-baseline, arXiv's rejection is stale
                db.execute("UPDATE keywords SET query = ?, rejected = NULL WHERE id = ?",
                           [query, found.id])
                found = get(db, found.id)
            return found, False  # type: ignore[return-value]
        total = next(db.query("SELECT count(*) AS n FROM keywords"))["n"]
        if total >= max_keywords:
            raise InstanceFull(max_keywords)
        cur = db.execute(
            "INSERT INTO keywords (display, canonical, query, created_at) VALUES (?, ?, ?, ?)",
            [display, canonical, query, to_db(now)],
        )
        return get(db, cur.lastrowid), True  # type: ignore[return-value]


def set_config_keywords(db: Database, ids: set[int]) -> None:
    with write(db):
        db.execute("UPDATE keywords SET in_config = 0 WHERE in_config = 1")
        for kid in ids:
            db.execute("UPDATE keywords SET in_config = 1 WHERE id = ?", [kid])


def to_poll(db: Database) -> list[Keyword]:
    """Keywords in config or in an active subscription, not rejected, in a stable order."""
    rows = db.query(
        """SELECT * FROM keywords k WHERE k.rejected IS NULL AND (k.in_config = 1 OR EXISTS (
             SELECT 1 FROM subscriptions s JOIN subscribers b ON b.id = s.subscriber_id
             WHERE s.keyword_id = k.id AND b.active = 1))
           ORDER BY k.id"""
    )
    return [keyword_from_row(r) for r in rows]


def in_config(db: Database) -> list[Keyword]:
    return [keyword_from_row(r) for r in db.query(
        "SELECT * FROM keywords WHERE in_config = 1 ORDER BY id")]


def all_keywords(db: Database) -> list[Keyword]:
    return [keyword_from_row(r) for r in db.query("SELECT * FROM keywords ORDER BY id")]


def record_failure(db: Database, keyword_id: int, error: str, now: datetime) -> None:
    with write(db):
        db.execute(
            """UPDATE keywords SET last_poll = ?, last_error = ?,
               consecutive_failures = consecutive_failures + 1 WHERE id = ?""",
            [to_db(now), error, keyword_id],
        )


def record_rejected(db: Database, keyword_id: int, message: str, now: datetime) -> None:
    """arXiv refused the query: not polled again until the keyword changes."""
    with write(db):
        db.execute(
            """UPDATE keywords SET last_poll = ?, last_error = ?, rejected = ?,
               consecutive_failures = consecutive_failures + 1 WHERE id = ?""",
            [to_db(now), f"arXiv rejected the query: {message}", message, keyword_id],
        )


def record_waiting(db: Database, keyword_id: int, now: datetime) -> None:
    """An empty baseline answer waits for a second one at least 10 minutes later."""
    with write(db):
        db.execute(
            """UPDATE keywords SET last_poll = ?, last_error = NULL,
               empty_since = coalesce(empty_since, ?) WHERE id = ?""",
            [to_db(now), to_db(now), keyword_id],
        )


def seen_among(db: Database, keyword_id: int, arxiv_ids: list[str]) -> set[str]:
    if not arxiv_ids:
        return set()
    marks = ",".join("?" * len(arxiv_ids))
    return {r["arxiv_id"] for r in db.query(
        f"SELECT arxiv_id FROM keyword_seen WHERE keyword_id = ? AND arxiv_id IN ({marks})",
        [keyword_id, *arxiv_ids])}


def window_size(db: Database, keyword_id: int) -> int:
    return next(db.query(
        "SELECT count(*) AS n FROM keyword_papers WHERE keyword_id = ?", [keyword_id]))["n"]
