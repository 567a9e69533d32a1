"""The outbox: one row per (subscriber, paper), written with the poll, kept 90 days after it ends.

The dispatcher only reads due rows from here and marks each message's rows right after sending.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlite_utils import Database

from storage import fanout
from storage.database import from_db, to_db, write
from storage.records import DigestMark, OutboxRow, Subscriber
from storage.rows import PAPER_COLUMNS, paper_from_row, subscriber_from_row

MAX_ATTEMPTS = 10
MAX_AGE = timedelta(hours=24)


def release(db: Database, now: datetime, due_at: Callable[[Subscriber], datetime]) -> int:
    """At cycle end, all at once (tests, bench, tools): what the polls owe becomes due rows,
    one short transaction after another. The daemon runs the same steps from bot/poll/expansion
    with pauses between them."""
    written = 0
    while True:
        batch = fanout.expand(db, due_at)
        written += batch.written
        if not batch.more:
            return written + release_waiting(db, now, due_at)


def release_waiting(db: Database, now: datetime,
                    due_at: Callable[[Subscriber], datetime]) -> int:
    """Rows an older release wrote with no due time (its cycle had not ended) become due (now,
    or at the digest time).

    One UPDATE per distinct due time, not per subscriber: each per-subscriber UPDATE walked that
    subscriber's whole 90-day history (1-2 s a cycle with 10,000 subscribers)."""
    with write(db):
        subs = [subscriber_from_row(r) for r in db.query(
            """SELECT * FROM subscribers WHERE id IN (
                 SELECT DISTINCT subscriber_id FROM outbox
                 WHERE due_at IS NULL AND status = 'pending')""")]
        groups: dict[str, list[int]] = {}
        for sub in subs:
            when = due_at(sub) if sub.active else now
            groups.setdefault(to_db(when), []).append(sub.id)  # type: ignore[arg-type]
        total = 0
        for when, ids in groups.items():
            total += db.execute(
                """UPDATE outbox SET due_at = ? WHERE status = 'pending' AND due_at IS NULL
                   AND subscriber_id IN (SELECT value FROM json_each(?))""",
                [when, json.dumps(ids)]).rowcount
        return total


def due_subscribers(db: Database, channel: str, now: datetime, limit: int,
                    exclude: Sequence[int] = ()) -> list[Subscriber]:
    """Active subscribers of a channel with a row that may be sent now, longest waiting first.

    Walks the pending rows in due order and stops at `limit` distinct subscribers. Grouping
    every pending row instead took 28 ms per call at the start of a 50,000-row send-out, more
    than the sends it scheduled; this reads a few hundred rows (0.2 ms). CROSS JOIN keeps the
    outbox as the outer loop so the index gives the order and no sort is needed.
    `exclude` skips subscribers the dispatcher is serving right now.
    """
    skip = set(exclude)
    ids: list[int] = []
    cursor = db.execute(
        """SELECT o.subscriber_id
           FROM outbox o INDEXED BY idx_outbox_due_pending
           CROSS JOIN subscribers b ON b.id = o.subscriber_id
           WHERE o.status = 'pending' AND o.due_at IS NOT NULL AND o.due_at <= ?
             AND (o.next_attempt IS NULL OR o.next_attempt <= ?)
             AND b.channel = ? AND b.active = 1
           ORDER BY o.due_at""",
        [to_db(now), to_db(now), channel])
    try:
        for (sid,) in cursor:
            if sid not in skip:
                skip.add(sid)
                ids.append(sid)
                if len(ids) >= limit:
                    break
    finally:
        cursor.close()
    if not ids:
        return []
    found = {r["id"]: subscriber_from_row(r) for r in db.query(
        "SELECT * FROM subscribers WHERE id IN (SELECT value FROM json_each(?))",
        [json.dumps(ids)])}
    return [found[i] for i in ids if i in found]


def due_rows(db: Database, subscriber_id: int, now: datetime) -> list[OutboxRow]:
    # INDEXED BY: left to itself SQLite walks every pending row of every subscriber through
    # (status, due_at), 25 ms a call during a large send-out; this seeks the subscriber's own.
    cols = ", ".join("p." + c.strip() for c in PAPER_COLUMNS.split(","))
    rows = list(db.query(
        f"""SELECT o.id AS outbox_id, o.subscriber_id, o.keyword_ids, o.attempts, o.created_at,
                   o.due_at AS outbox_due_at,
                   {cols}
            FROM outbox o INDEXED BY idx_outbox_pending JOIN papers p ON p.arxiv_id = o.arxiv_id
            WHERE o.subscriber_id = ? AND o.status = 'pending' AND o.due_at IS NOT NULL
              AND o.due_at <= ? AND (o.next_attempt IS NULL OR o.next_attempt <= ?)
            ORDER BY p.published DESC, o.id""",
        [subscriber_id, to_db(now), to_db(now)]))
    names = _keyword_names(db, {k for r in rows for k in json.loads(r["keyword_ids"])})
    return [_row(r, names) for r in rows]


def _keyword_names(db: Database, ids: set[int]) -> dict[int, str]:
    if not ids:
        return {}
    marks = ",".join("?" * len(ids))
    return {r["id"]: r["display"] for r in db.query(
        f"SELECT id, display FROM keywords WHERE id IN ({marks})", list(ids))}


def _row(r: dict[str, Any], names: dict[int, str]) -> OutboxRow:
    return OutboxRow(
        id=r["outbox_id"], subscriber_id=r["subscriber_id"], paper=paper_from_row(r),
        keywords=tuple(names.get(k, "?") for k in json.loads(r["keyword_ids"])),
        attempts=r["attempts"], created_at=from_db(r["created_at"]),
        due_at=from_db(r["outbox_due_at"]),
    )


def mark_sent(db: Database, row_ids: Sequence[int], now: datetime,
              digest: tuple[int, DigestMark] | None = None) -> None:
    """One commit per message, right after the service answered.

    `digest` (subscriber id, local date or week) records a daily or weekly digest in the same
    commit, so a restart or a changed digest time never sends that date (week) a second one."""
    with write(db):
        db.conn.executemany(
            "UPDATE outbox SET status = 'sent', sent_at = ?, attempts = attempts + 1 WHERE id = ?",
            [(to_db(now), rid) for rid in row_ids])
        if digest is not None:
            _record_digest(db, *digest)


def _record_digest(db: Database, subscriber_id: int, mark: DigestMark) -> None:
    column, value = ("last_digest_date", mark.date) if mark.date else ("last_digest_week",
                                                                        mark.week)
    if value:
        db.execute(f"""UPDATE subscribers SET {column} = ? WHERE id = ?
                       AND ({column} IS NULL OR {column} < ?)""", [value, subscriber_id, value])


def retime(db: Database, subscriber_id: int, when: datetime) -> int:
    """A changed cadence: the subscriber's released pending rows wait for its new due time
    (rows of a cycle still running are released with it)."""
    return db.execute("""UPDATE outbox SET due_at = ? WHERE subscriber_id = ?
                         AND +status = 'pending' AND due_at IS NOT NULL""",
                      [to_db(when), subscriber_id]).rowcount


def mark_failed(db: Database, row_ids: Sequence[int], error: str, now: datetime) -> None:
    with write(db):
        db.conn.executemany(
            """UPDATE outbox SET status = 'failed', last_error = ?, sent_at = ?,
               attempts = attempts + 1 WHERE id = ?""",
            [(error, to_db(now), rid) for rid in row_ids])


def mark_retry(db: Database, row_ids: Sequence[int], error: str, now: datetime,
               next_attempt: datetime) -> list[int]:
    """Back off; rows past 10 attempts or 24 hours end failed (their ids come back)."""
    with write(db):
        gave_up = []
        for rid in row_ids:
            row = next(db.query("SELECT attempts, created_at FROM outbox WHERE id = ?", [rid]),
                       None)
            if row is None:
                continue
            created = from_db(row["created_at"]) or now
            if row["attempts"] + 1 >= MAX_ATTEMPTS or now - created >= MAX_AGE:
                db.execute("""UPDATE outbox SET status = 'failed', last_error = ?, sent_at = ?,
                              attempts = attempts + 1 WHERE id = ?""", [error, to_db(now), rid])
                gave_up.append(rid)
            else:
                db.execute("""UPDATE outbox SET next_attempt = ?, last_error = ?,
                              attempts = attempts + 1 WHERE id = ?""",
                           [to_db(next_attempt), error, rid])
        return gave_up


def postpone(db: Database, row_ids: Iterable[int], until: datetime,
             reason: str | None = None) -> None:
    """A channel-wide pause (rate limit, paused channel): not an attempt of the row."""
    with write(db):
        db.conn.executemany(
            "UPDATE outbox SET next_attempt = ?, last_error = coalesce(?, last_error) WHERE id = ?",
            [(to_db(until), reason, rid) for rid in row_ids])


def next_wakeup(db: Database, channel: str | None = None) -> datetime | None:
    """The earliest moment a pending row of this channel becomes sendable."""
    sql = """SELECT min(max(o.due_at, coalesce(o.next_attempt, o.due_at))) AS t
             FROM outbox o JOIN subscribers b ON b.id = o.subscriber_id
             WHERE o.status = 'pending' AND o.due_at IS NOT NULL AND b.active = 1"""
    params: list[Any] = []
    if channel:
        sql += " AND b.channel = ?"
        params.append(channel)
    return from_db(next(db.query(sql, params))["t"])


def remove_keyword(db: Database, subscriber_id: int, keyword_id: int) -> None:
    """Unsubscribing takes the keyword off pending rows and deletes rows left with none."""
    db.execute(
        """UPDATE outbox SET keyword_ids = (SELECT json_group_array(value) FROM
             json_each(outbox.keyword_ids) WHERE value != ?)
           WHERE subscriber_id = ? AND +status = 'pending'""", [keyword_id, subscriber_id])
    db.execute("""DELETE FROM outbox WHERE subscriber_id = ? AND +status = 'pending'
                  AND json_array_length(keyword_ids) = 0""", [subscriber_id])


def drop_pending(db: Database, subscriber_id: int) -> int:
    return db.execute("DELETE FROM outbox WHERE subscriber_id = ? AND +status = 'pending'",
                      [subscriber_id]).rowcount


def prune(db: Database, before: datetime, limit: int) -> int:
    """Up to `limit` sent or failed rows that ended before `before` (storage/retention)."""
    return db.execute(
        """DELETE FROM outbox WHERE id IN (SELECT id FROM outbox
             WHERE status != 'pending' AND sent_at < ? LIMIT ?)""",
        [to_db(before), limit]).rowcount


def counts(db: Database) -> dict[tuple[str, str], int]:
    """(channel, status) → rows, for status and /metrics: read from the tally kept by the
    outbox's triggers and storage/fanout (schema m006, m008), never by counting millions of rows."""
    return {(r["channel"], r["status"]): r["n"] for r in db.query(
        "SELECT channel, status, n FROM outbox_tally WHERE n != 0")}


def pending_per_channel(db: Database) -> dict[str, int]:
    """Channel → rows still to send, only channels that have some (status and /healthz)."""
    return {channel: n for (channel, status), n in counts(db).items() if status == "pending"}
