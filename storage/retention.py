"""Retention: what is kept 90 days, pruned after each cycle by `run` and by `run --once`.

A clock that jumps must not prune: a keyword's seen set is pruned relative to that keyword's
last successful poll (a keyword that has not succeeded since keeps all of it), and sent rows
only when they are 90 days old by both our clock and the newest successful poll.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlite_utils import Database

from storage import outbox, papers
from storage.database import from_db, to_db, write

KEEP = timedelta(days=90)


BATCH = 5000  # rows per transaction: retention never holds the writer for long


@dataclass(frozen=True)
class Pruned:
    seen: int
    outbox: int
    papers: int


def prune(db: Database, now: datetime, batch: int = BATCH) -> Pruned:
    """One pass of retention, in short transactions."""
    successes = {r["id"]: from_db(r["last_success"]) for r in db.query(
        "SELECT id, last_success FROM keywords WHERE last_success IS NOT NULL")}
    seen = 0
    for keyword_id, success in successes.items():
        cutoff = min(success, now) - KEEP  # type: ignore[type-var]
        with write(db):
            seen += db.execute(
                "DELETE FROM keyword_seen WHERE keyword_id = ? AND first_seen < ?",
                [keyword_id, to_db(cutoff)]).rowcount
    sent = 0
    if successes:
        cutoff = min(max(successes.values()), now) - KEEP  # type: ignore[type-var]
        while True:
            with write(db):
                done = outbox.prune(db, cutoff, batch)
            sent += done
            if done < batch:
                break
    with write(db):
        orphans = papers.prune_orphans(db)
    return Pruned(seen=seen, outbox=sent, papers=orphans)
