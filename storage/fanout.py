"""What polls owe subscribers: one durable "new for keyword" record per (keyword, new paper),
written in the poll's transaction, then expanded into per-subscriber outbox rows in short
batches. Each batch writes its rows and moves the records' cursors in one transaction, so a
crash mid-expansion loses nothing and repeats nothing.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

from sqlite_utils import Database

from storage.database import to_db, write
from storage.records import Paper, Subscriber
from storage.rows import subscriber_from_row

ROWS_PER_BATCH = 2000  # outbox rows one transaction may write: tens of milliseconds


@dataclass(frozen=True)
class Expanded:
    """One batch: outbox rows written, and whether records are still owed."""

    written: int
    more: bool


def record(db: Database, keyword_id: int, papers: Sequence[Paper], now: datetime) -> None:
    """Inside the poll's transaction: these papers are new for this keyword."""
    record_many(db, {keyword_id: papers}, now)


def record_many(db: Database, new: Mapping[int, Sequence[Paper]], now: datetime) -> None:
    """`record` for many keywords at once (a harvest page), in the order given."""
    stamp = to_db(now)
    db.conn.executemany(
        """INSERT OR IGNORE INTO fanout (keyword_id, arxiv_id, created_at, next_subscriber)
           VALUES (?, ?, ?, 0)""",
        [(keyword_id, p.arxiv_id, stamp) for keyword_id, papers in new.items() for p in papers])


def owed(db: Database) -> int:
    return next(db.query("SELECT count(*) AS n FROM fanout"))["n"]


def expand(db: Database, due_at: Callable[[Subscriber], datetime],
           rows: int = ROWS_PER_BATCH) -> Expanded:
    """The next few subscribers (by id) of every owed record, in one transaction.

    All of a subscriber's rows of a cycle are written together, so the dispatcher sees them
    at once; a paper new for two of a subscriber's keywords is one row naming both (in the
    order the keywords were polled); a row already sent or failed never changes."""
    with write(db):
        last = db.execute("SELECT max(id) FROM fanout").fetchone()[0]
        if last is None:
            return Expanded(0, more=False)
        window, complete = _next_window(db, last, rows)
        written = _write_rows(db, last, window, due_at) if window else 0
        if complete:  # every owed subscriber is written: the records are done
            db.execute("DELETE FROM fanout WHERE id <= ?", [last])
            return Expanded(written, more=False)
        db.execute("UPDATE fanout SET next_subscriber = ? WHERE id <= ? AND next_subscriber < ?",
                   [window[-1], last, window[-1]])
        return Expanded(written, more=True)


def _next_window(db: Database, last: int, rows: int) -> tuple[list[int], bool]:
    """The next subscribers (ascending ids) whose owed rows together reach `rows` (at least
    one subscriber), and whether they are all the records still owe.

    Counted per subscriber, not assumed one row per record each: a harvest owes 200,000
    records to thousands of readers, a few dozen each, and a batch of one reader per
    200,000-record read made its expansion take hours."""
    window: list[int] = []
    total = 0
    for subscriber_id, owed in db.execute(
            """SELECT s.subscriber_id, count(*) FROM fanout f
               JOIN subscriptions s ON s.keyword_id = f.keyword_id
               WHERE f.id <= ? AND s.subscriber_id > f.next_subscriber
               GROUP BY s.subscriber_id ORDER BY s.subscriber_id""", [last]):
        if total >= rows:
            return window, False
        window.append(subscriber_id)
        total += owed
    return window, True


def _write_rows(db: Database, last: int, window: list[int],
                due_at: Callable[[Subscriber], datetime]) -> int:
    subscribers = {r["id"]: subscriber_from_row(r) for r in db.query(
        "SELECT * FROM subscribers WHERE id IN (SELECT value FROM json_each(?)) AND active = 1",
        [json.dumps(window)])}
    owed: dict[tuple[int, str], tuple[list[int], str]] = {}
    for r in db.query(
            """SELECT f.keyword_id, f.arxiv_id, f.created_at, s.subscriber_id
               FROM fanout f JOIN subscriptions s ON s.keyword_id = f.keyword_id
               WHERE f.id <= ? AND s.subscriber_id BETWEEN ? AND ?
                 AND s.subscriber_id > f.next_subscriber
               ORDER BY f.id""", [last, window[0], window[-1]]):
        if r["subscriber_id"] in subscribers:
            keyword_ids, _ = owed.setdefault((r["subscriber_id"], r["arxiv_id"]),
                                             ([], r["created_at"]))
            keyword_ids.append(r["keyword_id"])
    due = {sid: to_db(due_at(sub)) for sid, sub in subscribers.items()}
    return _write(db, owed, due, {sid: sub.channel for sid, sub in subscribers.items()})


def _write(db: Database, owed: dict[tuple[int, str], tuple[list[int], str]],
           due: dict[int, str | None], channels: dict[int, str]) -> int:
    """New rows in one statement; a pending row of another keyword takes these keywords too
    (a row sent or failed never changes). Returns the rows written."""
    pairs = json.dumps([[sid, arxiv_id] for sid, arxiv_id in owed])
    existing = {(r["subscriber_id"], r["arxiv_id"]) for r in db.query(
        """SELECT o.subscriber_id, o.arxiv_id FROM json_each(?) AS j
           JOIN outbox o ON o.subscriber_id = j.value ->> 0 AND o.arxiv_id = j.value ->> 1""",
        [pairs])}
    fresh = [(sid, arxiv_id, _ids(kids), created, due[sid])
             for (sid, arxiv_id), (kids, created) in sorted(owed.items())
             if (sid, arxiv_id) not in existing]
    db.conn.executemany(
        """INSERT INTO outbox (subscriber_id, arxiv_id, keyword_ids, status, attempts,
               created_at, due_at) VALUES (?, ?, ?, 'pending', 0, ?, ?)""", fresh)
    db.conn.executemany(  # the outbox tally: triggers count every change but these
        """INSERT INTO outbox_tally (channel, status, n) VALUES (?, 'pending', ?)
           ON CONFLICT (channel, status) DO UPDATE SET n = n + excluded.n""",
        Counter(channels[row[0]] for row in fresh).items())
    db.conn.executemany(
        """UPDATE outbox SET keyword_ids = json_insert(keyword_ids, '$[#]', ?)
           WHERE subscriber_id = ? AND arxiv_id = ? AND status = 'pending'
             AND NOT EXISTS (SELECT 1 FROM json_each(outbox.keyword_ids) WHERE value = ?)""",
        [(kid, sid, arxiv_id, kid) for sid, arxiv_id in existing
         for kid in owed[(sid, arxiv_id)][0]])
    return len(fresh)


@lru_cache(maxsize=1024)
def _ids_text(keyword_ids: tuple[int, ...]) -> str:
    return json.dumps(list(keyword_ids))


def _ids(keyword_ids: list[int]) -> str:
    return _ids_text(tuple(keyword_ids))
