"""The Store (synchronous, one connection) and AsyncStore, its thin facade for the event loop.

One thread owns the daemon's connection; async code sends it callables through AsyncStore.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import secrets as pysecrets
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from pathlib import Path
from typing import Any, TypeVar

from sqlite_utils import Database

from storage import database
from storage.database import write

T = TypeVar("T")

log = logging.getLogger(__name__)

CLOSE_GRACE = 2.0  # s `AsyncStore.close` waits for the call in progress before interrupting it
INTERRUPT_GRACE = 1.0  # s it then waits for the interrupted call to give up


class Store:
    """An open database. Repositories are plain functions of `store.db` in the storage modules."""

    def __init__(self, path: Path, busy_timeout: float = database.BUSY_TIMEOUT) -> None:
        self.path = path
        self.db: Database = database.connect(path, busy_timeout)
        self.identity = _identity(path)  # the file just opened, to notice it being replaced

    def replaced(self) -> str | None:
        """Why the path no longer names the open database (deleted, moved, restored over it),
        or None. Writes would go on into a file nobody will read again."""
        now = _identity(self.path)
        if now == self.identity:
            return None
        if now is None:
            return (f"the database file {self.path} was deleted or moved while the daemon runs; "
                    "what it writes now is lost at the next start: restart it")
        return (f"the database file {self.path} was replaced while the daemon runs; it still "
                "uses the old file: restart it to use the new one")

    def close(self) -> None:
        self.db.close()

    def interrupt(self) -> None:
        """Abort the statement running now, from any thread: its transaction rolls back, as
        after a kill. (A wait for another process's lock is not a statement: it goes on.)"""
        self.db.conn.interrupt()

    def setting(self, key: str) -> str | None:
        row = next(self.db.query("SELECT value FROM settings WHERE key = ?", [key]), None)
        return row["value"] if row else None

    def generated_secret(self) -> str:
        """The unsubscribe-token key when DAILY_PAPERS_SECRET is unset: made once, kept here."""
        with write(self.db):
            value = self.setting("unsubscribe_secret")
            if value is None:
                value = pysecrets.token_urlsafe(32)
                self.db.execute("INSERT INTO settings (key, value) VALUES (?, ?)",
                                ["unsubscribe_secret", value])
            return value

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.path.parent.glob(self.path.name + "*")
                   if not p.name.startswith(self.path.name + ".bak"))

    def maintenance(self) -> None:
        """Nightly: reclaim free pages a little at a time."""
        self.db.execute("PRAGMA incremental_vacuum(2000)")
        self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


class StoreThread(Executor):
    """One thread runs every store call, in order. Unlike a ThreadPoolExecutor's worker it is a
    daemon thread: a call stuck waiting for another process's lock never keeps a stopping
    process alive (the interpreter joins a pool's workers at exit)."""

    def __init__(self) -> None:
        self._calls: queue.SimpleQueue[tuple[Future[Any], Callable[[], Any]] | None] = (
            queue.SimpleQueue())
        self._thread = threading.Thread(target=self._work, name="store", daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        future: Future[T] = Future()
        self._calls.put((future, lambda: fn(*args, **kwargs)))
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._calls.put(None)
        if wait:
            self._thread.join()

    def _work(self) -> None:
        while (item := self._calls.get()) is not None:
            future, call = item
            if not future.set_running_or_notify_cancel():  # cancelled while queued
                continue
            try:
                future.set_result(call())
            except BaseException as exc:  # handed to the caller
                future.set_exception(exc)


class AsyncStore:
    """Runs store calls on the one thread that owns the connection."""

    def __init__(self, path: Path) -> None:
        self._pool = StoreThread()
        self._path = path
        self.store: Store | None = None

    async def open(self) -> AsyncStore:
        self.store = await self._submit(lambda: Store(self._path))
        return self

    async def _submit(self, fn: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, fn)

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """`await astore.call(outbox.mark_sent, ids, now)` runs fn(store.db, *args)."""
        store = self.store
        assert store is not None
        return await self._submit(lambda: fn(store.db, *args, **kwargs))

    async def run(self, fn: Callable[[Store], T]) -> T:
        store = self.store
        assert store is not None
        return await self._submit(lambda: fn(store))

    def replaced(self) -> str | None:
        """Store.replaced, asked from the event loop: a stat, never queued behind store work."""
        return self.store.replaced() if self.store is not None else None

    async def close(self, grace: float = CLOSE_GRACE,
                    last: Callable[[Store], object] | None = None) -> None:
        """Close once the call in progress ends (after `last`, a final call whose failure is
        only logged), but a stop never waits long for it (SIGTERM within 10 s): past `grace`
        its statement is interrupted and rolls back; a call still waiting for another
        process's lock is left to the thread, which does not hold the process. Either way
        nothing half-written remains: a transaction commits or not."""
        if self.store is not None:
            store = self.store

            def finish() -> None:
                try:
                    if last is not None:
                        last(store)
                except sqlite3.Error as exc:
                    log.warning("before closing the store: %s", exc)
                finally:
                    store.close()

            closing = asyncio.wrap_future(self._pool.submit(finish))
            done, _ = await asyncio.wait({closing}, timeout=grace)
            if not done:
                store.interrupt()
                done, _ = await asyncio.wait({closing}, timeout=INTERRUPT_GRACE)
            if not done:
                log.warning("the store is still busy (waiting for another process's lock); "
                            "stopping without waiting for it, its transaction rolls back")
            self.store = None
        self._pool.shutdown(wait=False)
