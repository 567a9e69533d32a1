"""Requests per day to arXiv for K = 100, 1,000 and 30,000 keywords over a simulated week
(Sun 2026-03-01 .. Sat 03-07, quiet Friday and Saturday, a holiday on Tuesday), counted by
the local servers that answer them.

Run from the repository root: `python -m bench.bench_requests [--k 100,1000,30000]` (the
30,000-keyword search weeks send about 350,000 requests to the local server: half an hour).
Three ways of running, each a week on a store of K baselined keywords:

- search + interval: the daemon's loop (`schedule = "interval"`): a cycle polls every
  keyword, then waits `poll_interval` (3600 s) after it ends;
- search + announcements: the real planner (`bot.poll.rounds.plan`) names the keywords due;
  they are polled, then it is asked again, or the clock jumps to the wake time it names;
- harvest: the same planner with `source = "harvest"`; harvests go to the local OAI-PMH
  server, which shows 3,000 records a day two hours after each announcement but the holiday's.

Every request goes through the real client and its gate to the local fake arXiv (search) or
the local OAI-PMH server (harvest), and is counted there. No one waits for real days: the
injected clock moves on by the gate's spacing (3 s + 1 %) with each request, the time the
daemon's requests take on arXiv's one-request-every-3-s rule, so a cycle that cannot finish
within an hour or a day is seen as such. One page per search poll (fewer than max_papers new
papers a day per keyword).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from bot.config import ArxivConfig
from bot.fetch.arxiv import ArxivClient
from bot.fetch.gate import RequestGate
from bot.poll import rounds
from bot.poll.calendar import Announcement
from bot.poll.harvest import harvest
from bot.poll.keyword import PollSettings
from storage import keywords as kw_repo
from storage.database import to_db
from storage.records import Keyword, Paper
from storage.store import AsyncStore, Store
from tests.fakes.arxiv_server import FakeArxiv
from tests.fakes.oai_server import FakeOai

START = datetime(2026, 3, 1, 5, 0, tzinfo=UTC)  # Sunday morning in New York
DAYS = 7
END = START + timedelta(days=DAYS)
HOLIDAY = date(2026, 3, 3)  # Tuesday: expected, but nothing is announced
RECORDS = 3000
SPACING = timedelta(seconds=RequestGate(ArxivConfig().request_interval).spacing)
POLL_INTERVAL = timedelta(seconds=ArxivConfig().poll_interval)
MARK_EVERY = 500  # keywords marked polled in one transaction


class Week:
    """One simulated week: the clock, the servers' counts per UTC day, the store."""

    def __init__(self, store: AsyncStore, client: ArxivClient, arxiv: FakeArxiv,
                 oai: FakeOai) -> None:
        self.store, self.client, self.arxiv, self.oai = store, client, arxiv, oai
        self.now = START
        self.per_day: Counter[date] = Counter()
        self.published: set[date] = set()

    def count(self) -> None:
        """What the servers received since the last count, on today's (UTC) date."""
        self.per_day[self.now.date()] += len(self.arxiv.requests) + len(self.oai.requests)
        self.arxiv.requests.clear()  # 350,000 recorded requests would be a gigabyte
        self.oai.requests.clear()

    async def search(self, keywords: list[Keyword]) -> None:
        """Poll each keyword once, as a cycle does, one gate spacing apart."""
        done: list[tuple[str, int]] = []
        for kw in keywords:
            if self.now >= END:
                break
            self.publish()
            await self.client.fetch(kw.query, 0, 100)
            self.count()
            done.append((to_db(self.now), kw.id))
            self.now += SPACING
            if len(done) >= MARK_EVERY:
                await self.store.call(_polled, done)
                done = []
        await self.store.call(_polled, done)

    async def harvest(self) -> None:
        self.publish()
        keywords = await self.store.call(kw_repo.to_poll)
        before = len(self.oai.requests)
        report = await harvest(self.client, self.store, keywords, oai_url=self.oai.url,
                               sets=["cs"], settings=PollSettings(100, 14), now=lambda: self.now)
        self.now += SPACING * (len(self.oai.requests) - before)
        self.count()
        await self.store.call(rounds.record, ArxivConfig(source="harvest"), self.now,
                              reached=True, published=report.submitted)

    def publish(self) -> None:
        """An announcement's records appear in OAI-PMH two hours after it, dated the next
        UTC day; the holiday's never do."""
        current = rounds.current(self.now, ArxivConfig(source="search", announce_delay=0))
        if current.day in self.published or self.now < current.at + timedelta(hours=2):
            return
        self.published.add(current.day)
        if current.day != HOLIDAY:
            _publish(self.oai, current)


def _publish(oai: FakeOai, a: Announcement) -> None:
    for n in range(RECORDS):
        when = a.opens + timedelta(seconds=n)
        oai.add(Paper(arxiv_id=f"{a.day:%y%m}.{a.day.weekday()}{n:04d}", version=1,
                      title=f"paper {n}", abstract="x", authors=("A",), published=when,
                      updated=when, categories=("cs.LG",)), (a.at + timedelta(hours=4)).date())


def _polled(db, done: list[tuple[str, int]]) -> None:  # type: ignore[no-untyped-def]
    db.conn.executemany("UPDATE keywords SET last_poll = ?1, last_success = ?1 WHERE id = ?2",
                        done)
    db.conn.commit()


async def interval(week: Week) -> None:
    """`schedule = "interval"`: a cycle of every keyword, then poll_interval after its end."""
    while week.now < END:
        await week.search(await week.store.call(kw_repo.to_poll))
        week.now += POLL_INTERVAL


def announcements(source: str) -> Callable[[Week], Awaitable[None]]:
    """`schedule = "announcements"`: what the planner names now, or sleep until its wake."""
    arxiv = ArxivConfig(source=source, max_papers=100)

    async def run(week: Week) -> None:
        while week.now < END:
            week.publish()
            plan = await week.store.call(rounds.plan, arxiv, week.now)
            if plan.keywords:
                await week.search(plan.keywords)
            if plan.harvest:
                await week.harvest()
            if not plan.keywords and not plan.harvest:
                week.now = max(plan.wake, week.now + timedelta(minutes=1))
    return run


def prepare(path: Path, k: int) -> None:
    store = Store(path)
    with store.db.atomic():
        for n in range(k):
            kw_repo.ensure(store.db, f"w{n}", f"w{n}", f"ti:w{n}", START, max_keywords=10**6)
        store.db.execute("UPDATE keywords SET in_config = 1, baseline_query = query, "
                         "baseline_max_papers = 100, last_success = ?, last_poll = ?",
                         [to_db(START), to_db(START)])
    store.close()


async def simulate(k: int, schedule: Callable[[Week], Awaitable[None]]) -> Counter[date]:
    """Requests per UTC day that the local servers received in the simulated week."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "week.db"
        prepare(path, k)
        store = await AsyncStore(path).open()
        try:
            async with FakeArxiv() as arxiv, FakeOai(page_size=1000) as oai, ArxivClient(
                    arxiv.url, request_interval=0) as client:
                week = Week(store, client, arxiv, oai)
                await schedule(week)
        finally:
            await store.close()
    return week.per_day


def row(label: str, per_day: Counter[date]) -> str:
    days = [START.date() + timedelta(days=n) for n in range(DAYS)]
    total = sum(per_day[d] for d in days)
    shown = " ".join(f"{d:%a} {per_day[d]:,}" for d in days)
    return f"    {label:<22} {total / DAYS:>9,.0f}/day  ({total:,} a week: {shown})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--k", default="100,1000,30000", help="keyword counts")
    args = parser.parse_args()
    print(f"arXiv requests counted by the local servers over a simulated week from "
          f"{START:%a %Y-%m-%d} (quiet Fri/Sat, holiday {HOLIDAY:%a %Y-%m-%d}), UTC days; "
          f"requests start {SPACING.total_seconds():.2f} s apart:")
    for k in (int(x) for x in args.k.split(",")):
        print(f"  K = {k:,}")
        for label, schedule in (("search + interval", interval),
                                ("search + announcements", announcements("search")),
                                ("harvest", announcements("harvest"))):
            print(row(label, asyncio.run(simulate(k, schedule))), flush=True)
    print(f"  load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
