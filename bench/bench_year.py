"""Benchmark of the store after a year of use: 500 keywords, 10,000 subscribers (mixed channels,
about 3 subscriptions each) and about 5 new papers per keyword per weekday, written through
storage/ as the daemon writes it (commit_poll, release, rows marked sent, housekeeping).

Run from the repository root: `python -m bench.bench_year [--weeks 52] [--keep FILE]`. Prints the
database size, rows per table, the storage time of one full cycle (500 keyword pages committed,
the outbox release, the dispatcher's due_subscribers / due_rows / mark_sent per subscriber at
the start of the send-out, housekeeping) and the digest time (100 config keywords × 100 papers).

Scaling, to stay within about 3.5 minutes on 2 cores (writing the last 13 weeks' 9.75 million
outbox rows is most of it):
- the history is written in weekly batches: one commit per keyword per week carrying that week's
  25 papers (published over its five weekdays), then one release, every due row marked sent in
  one statement (`mark_due_sent`) and the daemon's housekeeping with the week's end as
  "now";
- the 10,000 subscribers subscribe 13 weeks before the end (`--fanout-weeks`): the notifications
  of earlier weeks (750,000 outbox rows a week) would all be deleted by the 90-day retention
  before the end anyway, so the final database is that of a whole year with them (papers, seen
  sets and windows do see all 52 weeks).
The measured cycle afterwards is a real daily cycle: each keyword's page of its newest 100
papers, 5 of them new.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

from sqlite_utils import Database

from bot.config import ArxivConfig, Config, DigestConfig
from bot.deliver.sendout import READ_AHEAD
from bot.fetch.keywords import parse_keyword
from bot.render.job import write_digest_sync
from storage import keywords as kw_repo
from storage import outbox, polls, retention
from storage import subscribers as sub_repo
from storage.database import to_db, write
from storage.records import Keyword, Paper
from storage.store import Store

KEYWORDS = 500
SUBSCRIBERS = 10_000
PER_SUBSCRIBER = 3
PER_WEEKDAY = 5
CONFIG_KEYWORDS = 100
MAX_PAPERS = 100
CHANNELS = (("telegram", 0.5), ("email", 0.4), ("slack", 0.1))
ABSTRACT = ("We propose a method for video understanding with large multimodal models and "
            "evaluate it on several public benchmarks, where it shows consistent gains over "
            "strong baselines at a fraction of their cost. ") * 5
T = TypeVar("T")


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    t0 = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - t0


class Papers:
    """Synthetic arXiv ids and papers; remembers each keyword's newest MAX_PAPERS."""

    def __init__(self) -> None:
        self.serial = 0
        self.newest: dict[int, list[Paper]] = {}

    def make(self, kw: Keyword, published: datetime) -> Paper:
        self.serial += 1
        month = published.strftime("%y%m")
        paper = Paper(
            arxiv_id=f"{month}.{self.serial % 100_000:05d}", version=1,
            title=f"{kw.display.title()}: a study of long-horizon reasoning, part {self.serial}",
            abstract=ABSTRACT, authors=tuple(f"Author {i}" for i in range(6)),
            published=published, updated=published, primary_category="cs.CV",
            categories=("cs.CV", "cs.LG"), comment="12 pages, 5 figures",
        )
        window = self.newest.setdefault(kw.id, [])
        window.insert(0, paper)
        del window[MAX_PAPERS:]
        return paper

    def week(self, kw: Keyword, monday: datetime) -> list[Paper]:
        """A week's papers of one keyword, newest first, over its five weekdays."""
        made = [self.make(kw, monday + timedelta(days=day, hours=9 + i))
                for day in range(5) for i in range(PER_WEEKDAY)]
        return made[::-1]


def add_keywords(store: Store, now: datetime) -> list[Keyword]:
    db = store.db
    with write(db):
        keywords = []
        for i in range(KEYWORDS):
            parsed = parse_keyword(f"synthetic topic {i:03d}")
            kw, _ = kw_repo.ensure(db, parsed.display, parsed.canonical, parsed.query, now,
                                   max_keywords=KEYWORDS)
            keywords.append(kw)
        kw_repo.set_config_keywords(db, {k.id for k in keywords[:CONFIG_KEYWORDS]})
    return keywords


def add_subscribers(store: Store, keywords: list[Keyword], rng: random.Random,
                    now: datetime) -> None:
    db = store.db
    with write(db):
        names = [c for c, _ in CHANNELS]
        weights = [w for _, w in CHANNELS]
        for n in range(SUBSCRIBERS):
            channel = rng.choices(names, weights)[0]
            address = {"telegram": str(100_000 + n), "slack": f"C{n:09d}",
                       "email": f"reader{n}@example.org"}[channel]
            sub = sub_repo.ensure(db, channel, address, now)
            for kw in rng.sample(keywords, PER_SUBSCRIBER):
                sub_repo.subscribe(db, sub, kw, "user", now)


def housekeeping(store: Store, now: datetime) -> None:
    """What the daemon runs after every cycle (bot/daemon.py `_housekeeping`)."""
    retention.prune(store.db, now)
    store.maintenance()


def commit(store: Store, kw: Keyword, page: list[Paper], now: datetime, baseline: bool) -> int:
    new, _ = polls.commit_poll(store.db, kw, page, baseline=baseline, now=now,
                               max_papers=MAX_PAPERS, notify_floor=now - timedelta(days=14),
                               total_results=len(page))
    return len(new)


def mark_due_sent(db: Database, now: datetime) -> int:
    """Every due pending row marked sent, as if a dispatcher had delivered all of it at `now`."""
    with write(db):
        return db.execute(
            """UPDATE outbox SET status = 'sent', sent_at = ?, attempts = attempts + 1
               WHERE status = 'pending' AND due_at IS NOT NULL AND due_at <= ?""",
            [to_db(now), to_db(now)]).rowcount


def history(store: Store, keywords: list[Keyword], papers: Papers, start: datetime,
            weeks: int, fanout_weeks: int) -> Iterator[tuple[int, float]]:
    """Week by week; yields (week, seconds)."""
    for week in range(weeks):
        t0 = time.perf_counter()
        monday = start + timedelta(weeks=week)
        if week == weeks - fanout_weeks:
            add_subscribers(store, keywords, random.Random(2025), monday)
        now = monday + timedelta(days=4, hours=23)
        for kw in keywords:
            commit(store, kw, papers.week(kw, monday), now, baseline=week == 0)
        outbox.release(store.db, now, lambda _sub, now=now: now)
        mark_due_sent(store.db, now)
        housekeeping(store, now)
        yield week, time.perf_counter() - t0


def measured_cycle(store: Store, keywords: list[Keyword], papers: Papers,
                   now: datetime, sample: int) -> dict[str, float]:
    """One real daily cycle: commits, release, and the dispatcher's storage work."""
    pages = []
    for kw in keywords:
        for i in range(PER_WEEKDAY):
            papers.make(kw, now - timedelta(hours=i + 1))
        pages.append((kw, list(papers.newest[kw.id])))
    per_page = []
    new = 0
    for kw, page in pages:
        n, seconds = timed(lambda kw=kw, page=page: commit(store, kw, page, now, False))
        per_page.append(seconds)
        new += n
    released, release_s = timed(lambda: outbox.release(store.db, now, lambda _sub: now))
    (served, rows), send_s = timed(lambda: send_out(store, now, sample))
    _, housekeeping_s = timed(lambda: housekeeping(store, now))
    return {"commit_total_s": sum(per_page), "commit_median_ms": 1000 * statistics.median(per_page),
            "commit_p95_ms": 1000 * sorted(per_page)[int(0.95 * len(per_page))],
            "new_papers": new, "rows_released": released, "release_s": release_s,
            "send_out_sample_s": send_s, "subscribers_served": served, "rows_sent": rows,
            "send_out_ms_per_subscriber": 1000 * send_s / max(served, 1),
            "housekeeping_s": housekeeping_s}


def send_out(store: Store, now: datetime, sample: int) -> tuple[int, int]:
    """The dispatcher's reads and writes at the start of a send-out, as Dispatcher._round makes
    them: due_subscribers for READ_AHEAD at a time, then per subscriber due_rows and one
    mark_sent for its message; `sample` subscribers per channel in proportion."""
    served = rows_sent = 0
    for channel, share in CHANNELS:
        left = max(1, round(sample * share))
        while left > 0:
            subs = outbox.due_subscribers(store.db, channel, now, min(READ_AHEAD, left))
            if not subs:
                break
            for sub in subs:
                rows = outbox.due_rows(store.db, sub.id, now)
                outbox.mark_sent(store.db, [r.id for r in rows], now)
                rows_sent += len(rows)
            served += len(subs)
            left -= len(subs)
    return served, rows_sent


def table_rows(store: Store) -> dict[str, int]:
    return {name: store.db.table(name).count for name in sorted(store.db.table_names())}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--weeks", type=int, default=52)
    parser.add_argument("--fanout-weeks", type=int, default=13,
                        help="weeks before the end at which the subscribers subscribe")
    parser.add_argument("--send-sample", type=int, default=200,
                        help="subscribers served in the measured send-out")
    parser.add_argument("--keep", help="write the database here instead of a temporary file")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.keep) if args.keep else Path(tmp) / "year.db"
        run(path, args.weeks, min(args.fanout_weeks, args.weeks), args.send_sample, Path(tmp))


def run(path: Path, weeks: int, fanout_weeks: int, sample: int, tmp: Path) -> None:
    t_start = time.perf_counter()
    start = datetime(2025, 1, 6, tzinfo=UTC)  # a Monday
    store = Store(path)
    keywords = add_keywords(store, start)
    papers = Papers()
    week_times = []
    for week, seconds in history(store, keywords, papers, start, weeks, fanout_weeks):
        week_times.append(seconds)
        if week % 13 == 12 or week == weeks - 1:
            print(f"  week {week + 1:2d}: {seconds:.2f} s, database "
                  f"{store.size_bytes() / 1e6:.0f} MB", flush=True)
    channels = Counter(s.channel for s in (sub_repo.get(store.db, i)
                                           for i in range(1, SUBSCRIBERS + 1)) if s)
    print(f"{KEYWORDS} keywords; {SUBSCRIBERS} subscribers {dict(channels)}, "
          f"{PER_SUBSCRIBER} subscriptions each, from week {weeks - fanout_weeks + 1}")
    now = start + timedelta(weeks=weeks, hours=20)
    cycle = measured_cycle(store, keywords, papers, now, sample)
    cfg = Config(arxiv=ArxivConfig(keywords=[k.display for k in keywords[:CONFIG_KEYWORDS]]),
                 digest=DigestConfig(path=tmp / "README.md"))
    _, digest_s = timed(lambda: write_digest_sync(store, cfg, now))
    store.maintenance()
    print(f"\nhistory: {weeks} weeks in {sum(week_times):.0f} s "
          f"(median week {statistics.median(week_times):.2f} s)")
    print(f"database size: {store.size_bytes() / 1e6:.1f} MB  ({path.stat().st_size / 1e6:.1f} MB "
          f"main file, free pages {store.db.execute('PRAGMA freelist_count').fetchone()[0]})")
    print("rows per table:")
    for name, n in table_rows(store).items():
        print(f"  {name:<18} {n:>10,}")
    print("one full daily cycle (storage work only):")
    for key, value in cycle.items():
        print(f"  {key:<20} {value:,.3f}" if isinstance(value, float) else
              f"  {key:<20} {value:,}")
    print(f"digest ({CONFIG_KEYWORDS} keywords × {MAX_PAPERS} papers): {1000 * digest_s:.0f} ms, "
          f"{(tmp / 'README.md').stat().st_size / 1e3:.0f} kB")
    print(f"total run time: {time.perf_counter() - t_start:.0f} s")
    store.close()


if __name__ == "__main__":
    main()
