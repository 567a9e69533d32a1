"""Opening the SQLite file: pragmas, write transactions, schema checks and the migration backup.

Every other storage module works on the `Database` this one opens.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from sqlite_utils import Database

from storage.schema import MIGRATIONS, known_names


class SchemaError(Exception):
    """The database cannot be used by this code as it is; the message says what to do."""


def to_db(dt: datetime | None) -> str | None:
    """Datetimes are stored as sortable UTC ISO strings."""
    if dt is None:
        return None
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def from_db(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


BUSY_TIMEOUT = 10.0  # seconds a connection waits for another one's lock


def connect(path: Path, busy_timeout: float = BUSY_TIMEOUT) -> Database:
    """Open (creating if missing) with the storage settings of the design."""
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists() or path.stat().st_size == 0
    conn = sqlite3.connect(str(path), timeout=busy_timeout, check_same_thread=True)
    db = Database(conn, execute_plugins=False)
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
    if new:
        conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA foreign_keys = ON")
    if new:
        MIGRATIONS.apply(db)
    return db


@contextmanager
def write(db: Database) -> Iterator[Database]:
    """One write transaction taken with BEGIN IMMEDIATE (no lock upgrade deadlocks)."""
    if db.conn.in_transaction:
        with db.atomic():
            yield db
        return
    db.conn.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        if db.conn.in_transaction:
            db.conn.execute("ROLLBACK")
        raise
    db.conn.execute("COMMIT")


def probe_write(db: Database, key: str) -> None:
    """The smallest write transaction: whether the store writes at all (after a full disk)."""
    with write(db):
        db.execute("INSERT OR REPLACE INTO settings (key, value) VALUES (?, "
                   "strftime('%Y-%m-%dT%H:%M:%fZ'))", [key])


def schema_version(db: Database) -> int:
    return len(MIGRATIONS.applied(db))


def pending_migrations(db: Database) -> list[str]:
    applied = {m.name for m in MIGRATIONS.applied(db)}
    unknown = applied - known_names()
    if unknown:
        raise SchemaError(
            f"the database was written by a newer Daily Papers (schema {len(applied)}, this code "
            f"knows {len(known_names())}); upgrade the program, do not downgrade the database"
        )
    return [m.name for m in MIGRATIONS.pending(db)]


def require_current(db: Database) -> None:
    """Commands other than run/migrate refuse an out-of-date database."""
    if pending_migrations(db):
        raise SchemaError("the database schema is out of date: run `daily-papers migrate`")


def migrate(db: Database, path: Path) -> Path | None:
    """Apply pending migrations after a VACUUM INTO backup; returns the backup path."""
    pending = pending_migrations(db)
    if not pending:
        return None
    backup = path.with_name(f"{path.name}.bak-{schema_version(db)}")
    if backup.exists():
        backup.unlink()
    db.conn.execute("VACUUM INTO ?", [str(backup)])
    MIGRATIONS.apply(db)
    return backup
