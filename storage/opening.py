"""Opening the store for a command or the daemon: migrations (run and migrate only, holding the
instance lease, after a backup), and the lease itself."""

from __future__ import annotations

import logging
import os
import socket
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from storage import database, lease
from storage.faults import StoreUnusable
from storage.store import Store

log = logging.getLogger(__name__)


class LeaseHeld(Exception):
    """Another live process holds the database; the message names it."""


def prepare_store(path: Path, *, migrate: bool, holder: str | None = None,
                  busy_timeout: float = database.BUSY_TIMEOUT) -> Store:
    """Open the database; only run/migrate upgrade it (with a backup), holding the lease.

    A fault of the file (missing folder, corrupt, full disk, locked) raises StoreUnusable
    with the operator's one line."""
    try:
        return _prepare(path, migrate, holder, busy_timeout)
    except (sqlite3.Error, OSError) as exc:
        raise StoreUnusable(path, exc) from None


def _prepare(path: Path, migrate: bool, holder: str | None, busy_timeout: float) -> Store:
    store = Store(path, busy_timeout=busy_timeout)
    try:
        if migrate:
            if holder is not None:
                take_lease(store, holder)
            backup = database.migrate(store.db, path)
            if backup:
                log.info("database migrated to schema %d (backup: %s)",
                         database.schema_version(store.db), backup)
        else:
            database.require_current(store.db)
    except BaseException:
        store.close()
        raise
    return store


def take_lease(store: Store, holder: str) -> None:
    busy = lease.acquire(store.db, holder, os.getpid(), socket.gethostname(), datetime.now(UTC))
    if busy:
        raise LeaseHeld(busy)
