"""Requests per day to arXiv for K = 100, 1,000 and 30,000 keywords over a simulated week
(Sun 2026-03-01 .. Sat 03-07) with a quiet Friday and Saturday and one holiday (Tuesday).

Run from the repository root: `python -m bench.bench_requests [--k 100,1000,30000]`. The real
scheduler (`bot.poll.rounds.plan`) decides on a store with K baselined keywords; an injected
clock jumps to each wake time it names, as the daemon sleeps. Search polls are counted, not
sent (one page each: fewer than max_papers new papers a day per keyword); harvests go to the
local OAI-PMH server, whose requests are counted, with 3,000 records on announcement days
and none on the holiday.
`interval` is today's hourly cycle: 24 × K.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from bot.config import ArxivConfig
from bot.fetch.arxiv import ArxivClient
from bot.poll import rounds
from bot.poll.calendar import Announcement
from bot.poll.harvest import harvest
from bot.poll.keyword import PollSettings
from storage import keywords as kw_repo
from storage.database import to_db
from storage.records import Paper
from storage.store import AsyncStore, Store
from tests.fakes.oai_server import FakeOai

START = datetime(2026, 3, 1, 5, 0, tzinfo=UTC)  # Sunday morning in New York
DAYS = 7
HOLIDAY = date(2026, 3, 3)  # Tuesday: expected, but nothing is announced
STEP = timedelta(minutes=5)
RECORDS = 3000


def prepare(path: Path, k: int) -> None:
    store = Store(path)
    with store.db.atomic():
        for n in range(k):
            kw_repo.ensure(store.db, f"w{n}", f"w{n}", f"ti:w{n}", START, max_keywords=10**6)
        store.db.execute("UPDATE keywords SET in_config = 1, baseline_query = query, "
                         "baseline_max_papers = 100, last_success = ?, last_poll = ?",
                         [to_db(START), to_db(START)])
    store.close()


def publish(oai: FakeOai, a: Announcement) -> None:
    """An announcement's records appear in OAI-PMH dated the next UTC day."""
    if a.day == HOLIDAY:
        return
    for n in range(RECORDS):
        when = a.opens + timedelta(seconds=n)
        oai.add(Paper(arxiv_id=f"{a.day:%y%m}.{a.day.weekday()}{n:04d}", version=1,
                      title=f"paper {n}", abstract="x", authors=("A",), published=when,
                      updated=when, categories=("cs.LG",)), (a.at + timedelta(hours=4)).date())


async def week(k: int, source: str) -> int:
    """arXiv requests the scheduler makes in the simulated week."""
    arxiv = ArxivConfig(source=source, max_papers=100)
    requests = 0
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "week.db"
        prepare(path, k)
        store = await AsyncStore(path).open()
        async with FakeOai(page_size=1000) as oai, ArxivClient(
                "http://127.0.0.1:1/api/query", request_interval=0) as client:
            now, published = START, set()
            while now < START + timedelta(days=DAYS):
                current = rounds.current(now, arxiv)
                if current.key not in published and now >= current.at + timedelta(hours=2):
                    publish(oai, current)
                    published.add(current.key)
                plan = await store.call(rounds.plan, arxiv, now)
                requests += len(plan.keywords)
                await store.call(_polled, [kw.id for kw in plan.keywords], now)
                if plan.harvest:
                    requests += await _harvest(client, store, oai, now)
                # as the daemon does: sleep until the planner's wake time
                busy = plan.keywords or plan.harvest
                now = now + STEP if busy else max(plan.wake, now + STEP)
        await store.close()
    return requests


def _polled(db, ids: list[int], now: datetime) -> None:  # type: ignore[no-untyped-def]
    db.conn.executemany("UPDATE keywords SET last_poll = ?, last_success = ? WHERE id = ?",
                        [(to_db(now), to_db(now), kid) for kid in ids])
    db.conn.commit()


async def _harvest(client: ArxivClient, store: AsyncStore, oai: FakeOai, now: datetime) -> int:
    before = len(oai.requests)
    keywords = await store.call(kw_repo.to_poll)
    report = await harvest(client, store, keywords, oai_url=oai.url, sets=["cs"],
                           settings=PollSettings(100, 14), now=lambda: now)
    await store.call(rounds.record, ArxivConfig(source="harvest"), now, reached=True,
                     published=report.submitted)
    return len(oai.requests) - before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--k", default="100,1000,30000", help="keyword counts")
    args = parser.parse_args()
    print(f"requests per day over a simulated week (quiet Fri/Sat, holiday {HOLIDAY}):")
    for k in (int(x) for x in args.k.split(",")):
        interval = 24 * k
        search = asyncio.run(week(k, "search"))
        harvested = asyncio.run(week(k, "harvest"))
        print(f"  K={k:>6,}: search + interval {interval:,}/day; search + announcements "
              f"{search / DAYS:,.0f}/day ({search:,} a week); harvest {harvested / DAYS:,.1f}"
              f"/day ({harvested:,} a week, baselines aside)")


if __name__ == "__main__":
    main()
