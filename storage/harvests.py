"""Where the OAI-PMH harvest of each set resumes: the last datestamp a committed page held."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime

from sqlite_utils import Database

from storage.database import to_db, write


def datestamp(db: Database, set_spec: str) -> date | None:
    row = next(db.query("SELECT datestamp FROM harvest_sets WHERE set_spec = ?", [set_spec]),
               None)
    return date.fromisoformat(row["datestamp"]) if row and row["datestamp"] else None


def advance(db: Database, set_spec: str, stamp: date, now: datetime) -> None:
    """Never moves back: pages of one list come in datestamp order, a rerun overlaps."""
    db.execute(
        """INSERT INTO harvest_sets (set_spec, datestamp, last_harvest) VALUES (?, ?, ?)
           ON CONFLICT(set_spec) DO UPDATE SET last_harvest = excluded.last_harvest,
             datestamp = max(coalesce(datestamp, ''), excluded.datestamp)""",
        [set_spec, stamp.isoformat(), to_db(now)],
    )


def mark_harvested(db: Database, keyword_ids: Iterable[int], now: datetime) -> None:
    """A complete harvest is a successful poll of every keyword it matched against: their
    baselines stay valid even when nothing matched for a week."""
    with write(db):
        db.conn.executemany(
            """UPDATE keywords SET last_poll = ?, last_success = ?, last_error = NULL,
               consecutive_failures = 0 WHERE id = ?""",
            [(to_db(now), to_db(now), kid) for kid in keyword_ids],
        )
