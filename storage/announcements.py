"""What each expected arXiv announcement brought, and when arXiv last answered at all.

The poll stage records every round here; status, /healthz and the chat commands read it so
that a quiet day is never mistaken for a fault.
"""

from __future__ import annotations

from datetime import datetime

from sqlite_utils import Database

from storage.database import from_db, to_db, write
from storage.records import AnnouncementRecord

LAST_REACHED = "arxiv_last_reached"
FAILED_ROUNDS = "arxiv_failed_rounds"


def _from_row(row: dict) -> AnnouncementRecord:
    return AnnouncementRecord(
        day=row["day"], expected_at=from_db(row["expected_at"]),  # type: ignore[arg-type]
        state=row["state"], new_papers=row["new_papers"] or 0, attempts=row["attempts"] or 0,
        reached=row["reached"] or 0, visible_at=from_db(row["visible_at"]),
        last_attempt=from_db(row["last_attempt"]), settled_at=from_db(row["settled_at"]),
    )


def get(db: Database, day: str) -> AnnouncementRecord | None:
    rows = list(db.query("SELECT * FROM announcements WHERE day = ?", [day]))
    return _from_row(rows[0]) if rows else None


def recent(db: Database, limit: int = 7) -> list[AnnouncementRecord]:
    """The latest recorded announcements, newest first."""
    return [_from_row(r) for r in db.query(
        "SELECT * FROM announcements ORDER BY day DESC LIMIT ?", [limit])]


def last_seen(db: Database) -> AnnouncementRecord | None:
    rows = list(db.query(
        "SELECT * FROM announcements WHERE state = 'seen' ORDER BY day DESC LIMIT 1"))
    return _from_row(rows[0]) if rows else None


def _ensure(db: Database, day: str, expected_at: datetime) -> None:
    db.execute("INSERT OR IGNORE INTO announcements (day, expected_at) VALUES (?, ?)",
               [day, to_db(expected_at)])


def record_round(db: Database, day: str, expected_at: datetime, now: datetime, *,
                 reached: bool, evidence: int) -> AnnouncementRecord:
    """One round (poll cycle, harvest or probe) after this announcement.

    `evidence`: papers it found that were submitted in or after the announcement's window,
    which only this announcement can have made visible. Any evidence makes it "seen", even
    after it was settled as missed or failed: the late answer was the truth.
    """
    with write(db):
        _ensure(db, day, expected_at)
        db.execute(
            """UPDATE announcements SET attempts = attempts + 1, reached = reached + :reached,
                 new_papers = new_papers + :evidence, last_attempt = :now,
                 state = CASE WHEN :evidence > 0 THEN 'seen' ELSE state END,
                 visible_at = CASE WHEN :evidence > 0 THEN coalesce(visible_at, :now)
                              ELSE visible_at END
               WHERE day = :day""",
            {"reached": int(reached), "evidence": evidence, "now": to_db(now), "day": day},
        )
        _record_reach(db, now, reached)
        return get(db, day)  # type: ignore[return-value]


def _record_reach(db: Database, now: datetime, reached: bool) -> None:
    if reached:
        db.execute("INSERT OR REPLACE INTO settings (key, value) VALUES (?, ?)",
                   [LAST_REACHED, to_db(now)])
        db.execute("INSERT OR REPLACE INTO settings (key, value) VALUES (?, '0')",
                   [FAILED_ROUNDS])
        return
    db.execute(
        """INSERT INTO settings (key, value) VALUES (?, '1')
           ON CONFLICT(key) DO UPDATE SET value = CAST(value AS INTEGER) + 1""",
        [FAILED_ROUNDS],
    )


def settle(db: Database, day: str, expected_at: datetime, now: datetime) -> AnnouncementRecord:
    """The next announcement has come: a pending one is now missed, failed or unchecked."""
    with write(db):
        _ensure(db, day, expected_at)
        db.execute(
            """UPDATE announcements SET settled_at = :now, state = CASE
                 WHEN reached > 0 THEN 'missed' WHEN attempts > 0 THEN 'failed'
                 ELSE 'unchecked' END
               WHERE day = :day AND state = 'pending'""",
            {"now": to_db(now), "day": day},
        )
        return get(db, day)  # type: ignore[return-value]


def reach(db: Database) -> tuple[datetime | None, int]:
    """(when arXiv last answered a round, rounds that failed since)."""
    values = {r["key"]: r["value"] for r in db.query(
        "SELECT key, value FROM settings WHERE key IN (?, ?)", [LAST_REACHED, FAILED_ROUNDS])}
    return from_db(values.get(LAST_REACHED)), int(values.get(FAILED_ROUNDS) or 0)
