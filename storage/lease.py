"""The instance lease: one daemon per database, taken over at once from a dead local process."""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from sqlite_utils import Database

from storage.database import from_db, to_db, write

TTL = timedelta(seconds=60)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def acquire(db: Database, holder: str, pid: int, host: str, now: datetime) -> str | None:
    """Take the lease; None on success, else who holds it (for the operator's message)."""
    with write(db):
        row = next(db.query("SELECT * FROM instance WHERE id = 1"), None)
        if row and row["holder"] != holder:
            beat = from_db(row["heartbeat"])
            fresh = beat is not None and now - beat < TTL
            local_dead = row["host"] == host and not _alive(row["pid"])
            if fresh and not local_dead:
                return (f"another daily-papers process (pid {row['pid']} on {row['host']}) "
                        f"holds this database; last heartbeat {row['heartbeat']}")
        db.execute(
            """INSERT INTO instance (id, holder, pid, host, heartbeat) VALUES (1, ?, ?, ?, ?)
               ON CONFLICT(id) DO UPDATE SET holder = excluded.holder, pid = excluded.pid,
               host = excluded.host, heartbeat = excluded.heartbeat""",
            [holder, pid, host, to_db(now)])
        return None


def heartbeat(db: Database, holder: str, now: datetime) -> bool:
    """False when someone else took the lease (we must stop)."""
    with write(db):
        return db.execute("UPDATE instance SET heartbeat = ? WHERE id = 1 AND holder = ?",
                          [to_db(now), holder]).rowcount == 1


def release(db: Database, holder: str) -> None:
    with write(db):
        db.execute("DELETE FROM instance WHERE id = 1 AND holder = ?", [holder])
