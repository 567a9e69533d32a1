"""Benchmark of harvest mode: a day of 3,000 harvested records matched against 1,000, 10,000
and 30,000 keywords and committed, through the real client, parser, matcher and store.

Run from the repository root: `python -m bench.bench_harvest [--keywords 1000,10000,30000]`.
Records are the 1,000 real arXivRaw records of tests/fixtures/oai three times over (new ids);
keywords are phrases and boolean queries drawn from their titles (real arXiv vocabulary), each
with a baseline, one subscriber per 10 keywords. The local OAI-PMH server runs in a thread of
this process (its serving of the pages is in the CPU figure, its memory in the RSS). Prints
the harvest's wall time and CPU time (this process's, all threads: less moved than wall time
by other processes on the machine), the matching and store time within it, the (keyword,
paper) records it owes
subscribers and peak RSS; with `--expand`, apart from the harvest, the time the fan-out then
takes to expand those records into outbox rows (the dispatcher's work, in short transactions:
slow today when one harvest owes more records than a batch holds rows).
Goal: 30,000 keywords × 3,000 records in ≤ 30 s, RSS ≤ 300 MB.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import random
import re
import resource
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import bot.poll.harvest as harvest_module
import storage.polls
from bench.bench_cycle import Timer, serve_in_thread
from bot.fetch.arxiv import ArxivClient
from bot.fetch.keywords import KeywordError, parse_keyword
from bot.fetch.matcher import Matcher
from bot.fetch.oai import parse_oai
from bot.poll.harvest import harvest
from bot.poll.keyword import PollSettings
from storage import fanout
from storage import keywords as kw_repo
from storage.database import to_db
from storage.store import AsyncStore, Store
from tests.fakes.oai_server import FakeOai

RAW = (Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "oai"
       / "old-export-2014-listrecords-arXivRaw-1000rec-versions-resumptiontoken.xml")
NOW = datetime(2026, 3, 10, 4, 0, tzinfo=UTC)
DAY = date(2026, 3, 10)
STOP = {"a", "an", "the", "of", "on", "in", "for", "and", "to", "with", "by", "from", "at"}


def records() -> list:
    """3,000 records: the real page three times, new ids, first announced yesterday."""
    papers = [r.paper for r in parse_oai(RAW.read_bytes()).records]
    out = []
    for copy in range(3):
        for i, p in enumerate(papers):
            when = NOW - timedelta(hours=30) + timedelta(seconds=i)
            out.append(dataclasses.replace(p, arxiv_id=f"2603.{copy}{i:04d}", version=1,
                                           published=when, updated=when))
    return out


def keyword_texts(papers: list, n: int, seed: int = 7) -> list[str]:
    """Phrases of 2–3 title words, and boolean queries over title words and categories."""
    rng = random.Random(seed)
    titles = [[w for w in re.findall(r"[a-z]{3,}", p.title.lower()) if w not in STOP]
              for p in papers]
    titles = [t for t in titles if len(t) >= 3]
    cats = sorted({c for p in papers for c in p.categories if "." in c})
    found: dict[str, None] = {}
    while len(found) < n:
        words = rng.choice(titles)
        i = rng.randrange(len(words) - 1)
        kind = rng.random()
        if kind < 0.6:
            text = " ".join(words[i:i + rng.choice((2, 3))])
        elif kind < 0.8:
            text = f"ti:{words[i]} AND abs:{rng.choice(words)}"
        elif kind < 0.9:
            text = f"cat:{rng.choice(cats)} AND ti:{words[i]}"
        else:
            text = f"(ti:{words[i]} OR ti:{words[i + 1]}) ANDNOT abs:{rng.choice(words)}"
        try:
            parse_keyword(text)
        except KeywordError:
            continue
        found[text] = None
    return list(found)


def prepare(path: Path, texts: list[str]) -> None:
    """Keywords with valid baselines, and one subscriber per 10 keywords."""
    store = Store(path)
    db = store.db
    with db.atomic():
        for text in texts:
            parsed = parse_keyword(text)
            kw_repo.ensure(db, parsed.display, parsed.canonical, parsed.query, NOW,
                           max_keywords=10**6)
        db.execute("UPDATE keywords SET in_config = 1, baseline_query = query, "
                   "baseline_max_papers = 100, last_success = ?", [to_db(NOW)])
        ids = [r["id"] for r in db.query("SELECT id FROM keywords")]
        for s in range(0, len(ids), 10):
            cur = db.execute("INSERT INTO subscribers (channel, address, created_at) "
                             "VALUES ('telegram', ?, ?)", [str(s), to_db(NOW)])
            db.conn.executemany(
                "INSERT INTO subscriptions (subscriber_id, keyword_id, source, created_at) "
                "VALUES (?, ?, 'user', ?)", [(cur.lastrowid, kid, to_db(NOW))
                                             for kid in ids[s:s + 10]])
    store.close()


async def run(n: int, papers: list, expand: bool) -> None:
    texts = keyword_texts(papers, n)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.db"
        prepare(path, texts)
        fake = FakeOai(page_size=1000)
        for p in papers:
            fake.add(p, DAY)
        fake, done = serve_in_thread(fake)
        match = Timer(Matcher.match)
        commit = Timer(storage.polls.commit_harvest_page)
        Matcher.match = lambda self, batch: match(self, batch)  # type: ignore[method-assign]
        harvest_module.polls.commit_harvest_page = commit  # type: ignore[attr-defined]
        store = await AsyncStore(path).open()
        keywords = await store.call(kw_repo.to_poll)
        async with ArxivClient("http://127.0.0.1:1/api/query", request_interval=0) as client:
            t0, cpu0 = time.perf_counter(), time.process_time()
            report = await harvest(client, store, keywords, oai_url=fake.url, sets=[],
                                   settings=PollSettings(100, 14), now=lambda: NOW)
            wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        owed = await store.call(fanout.owed)
        t0 = time.perf_counter()
        while expand and (await store.call(fanout.expand, lambda _subscriber: NOW)).more:
            pass
        expanded = time.perf_counter() - t0
        rows = await store.call(lambda db: db.execute("SELECT count(*) FROM outbox").fetchone()[0])
        await store.close()
        done.set()
        Matcher.match = match.fn  # type: ignore[method-assign]
        harvest_module.polls.commit_harvest_page = commit.fn  # type: ignore[attr-defined]
    matched = len(report.new_papers)
    print(f"{n:>6,} keywords x {report.records:,} records: harvest {wall:.1f} s, CPU {cpu:.1f} s "
          f"(matching {sum(match.samples):.1f} s, store {sum(commit.samples):.1f} s, "
          f"{report.pages} pages); {matched:,} keywords got new papers, {owed:,} records owed; "
          f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB; "
          + (f"then fan-out: {rows:,} outbox rows in {expanded:.1f} s; " if expand else "")
          + f"load average {os.getloadavg()[0]:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keywords", default="1000,10000,30000")
    parser.add_argument("--expand", action="store_true",
                        help="also expand the owed records into outbox rows, timed apart")
    args = parser.parse_args()
    papers = records()
    for n in (int(x) for x in args.keywords.split(",")):
        asyncio.run(run(n, papers, args.expand))


if __name__ == "__main__":
    main()
