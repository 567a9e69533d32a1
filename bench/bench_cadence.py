"""Benchmark of the reader's cadence: what the delivery clock and the settings commands cost.

Run from the repository root: `python -m bench.bench_cadence [--subscribers N]`.
(a) The due time of each of N subscribers at a cycle's end (instant, daily, weekly in twelve
    zones, own or the channel's): µs per subscriber.
(b) `/digest` for a reader with 100 and 10,000 waiting rows: the change and moving the rows, in
    one transaction (ms).
(c) `/timezone`: an exact name, a city alone, and an unknown name answered with the closest
    ones; the first call reads the zone list (ms).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bot.config import Config, TelegramConfig
from bot.deliver import cadence
from bot.deliver.schedule import due_at_factory
from bot.faces.settings import change_settings
from storage.database import to_db, write
from storage.records import Subscriber
from storage.store import Store

ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Tokyo", "Asia/Kolkata",
         "Australia/Sydney", "America/Sao_Paulo", "Africa/Lagos", "Pacific/Auckland",
         "Asia/Kathmandu", "America/St_Johns", "Europe/London"]
CADENCES = [None, "instant", "daily 08:00", "daily 23:30", "weekly mon 08:00", "weekly sun 02:30"]
NOW = datetime(2026, 3, 29, 0, 30, tzinfo=UTC)  # Europe's spring change is this night


def timed(action: Callable[[], object], repeat: int = 5) -> float:
    """Median wall time of `action` in ms."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        action()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def due_times(n: int) -> None:
    cfg = Config(telegram=TelegramConfig(digest_time="daily 09:00", timezone="Europe/Berlin"))
    subs = [Subscriber(id=i, channel="telegram", address=str(i),
                       digest_time=CADENCES[i % len(CADENCES)],
                       timezone=ZONES[i % len(ZONES)] if i % 3 else None) for i in range(n)]
    due_at = due_at_factory(cfg, lambda: NOW)
    ms = timed(lambda: [due_at(s) for s in subs])
    print(f"(a) due times of {n:,} subscribers: {ms:.1f} ms ({ms * 1000 / n:.1f} µs each)")


def seed_rows(store: Store, rows: int) -> None:
    db = store.db
    with write(db):
        db.execute("INSERT INTO subscribers (channel, address, topic, active, permanent_failures,"
                   " created_at) VALUES ('telegram', '42', '', 1, 0, ?)", [to_db(NOW)])
        db.execute("INSERT INTO keywords (display, canonical, query) VALUES ('k', 'k', 'q')")
        for i in range(rows):
            db.execute("""INSERT INTO papers (arxiv_id, version, title, published, updated,
                          first_seen) VALUES (?, 1, 't', ?, ?, ?)""",
                       [f"2603.{i:05d}", to_db(NOW), to_db(NOW), to_db(NOW)])
        db.conn.executemany(
            """INSERT INTO outbox (subscriber_id, arxiv_id, keyword_ids, due_at, status,
               attempts, created_at) VALUES (1, ?, '[1]', ?, 'pending', 0, ?)""",
            [(f"2603.{i:05d}", to_db(NOW - timedelta(minutes=i)), to_db(NOW))
             for i in range(rows)])


def digest_change(rows: int) -> None:
    cfg = Config()
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "bench.db")
        try:
            seed_rows(store, rows)
            choices = iter(["daily 08:00", "weekly fri 18:00", "instant"] * 10)
            ms = timed(lambda: change_settings(store, cfg, "telegram", "42", NOW,
                                               digest=next(choices)))
        finally:
            store.close()
    print(f"(b) /digest with {rows:,} waiting rows: {ms:.2f} ms")


def zones() -> None:
    first = timed(lambda: cadence.resolve_zone("Europe/Berlin"), repeat=1)
    exact = timed(lambda: cadence.resolve_zone("Europe/Berlin"))
    city = timed(lambda: cadence.resolve_zone("kolkata"))

    def unknown() -> None:
        with contextlib.suppress(cadence.SettingError):
            cadence.resolve_zone("Europe/Berln")

    close = timed(unknown)
    print(f"(c) /timezone: first call {first:.1f} ms (reads the zone list), exact {exact:.3f} ms, "
          f"city {city:.3f} ms, unknown with suggestions {close:.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=10_000)
    args = parser.parse_args()
    due_times(args.subscribers)
    for rows in (100, 10_000):
        digest_change(rows)
    zones()


if __name__ == "__main__":
    main()
