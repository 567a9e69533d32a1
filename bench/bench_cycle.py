"""Benchmark of fetch → diff/store: one cycle over 100 keywords × 100 papers, then a second
cycle with 5 new papers per keyword, against the local arXiv server (request_interval = 0).

Run from the repository root: `python -m bench.bench_cycle`. Prints the own time per keyword page
(parse + diff + store, median and p95 ms; target ≤ 10 ms), the digest render time for
100 × 100 (target ≤ 200 ms) and the peak RSS of the process (the local server runs in a thread
of the same process, so the figure includes it).
"""

from __future__ import annotations

import asyncio
import resource
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import bot.fetch.arxiv
import storage.polls
from bot.fetch.arxiv import ArxivClient
from bot.poll.cycle import run_cycle
from bot.poll.keyword import PollSettings
from bot.render.digest import DigestSection, render_digest
from storage import keywords as kw_repo
from storage import papers as paper_repo
from storage.records import Paper
from storage.store import AsyncStore
from tests.fakes.arxiv_server import FakeArxiv

KEYWORDS = 100
PAPERS = 100
NEW = 5
ABSTRACT = ("We propose a method for video understanding with large models; results on "
            "several benchmarks show consistent gains over strong baselines. ") * 6


def corpus(now: datetime, extra: int = 0) -> list[Paper]:
    """Each keyword topicN matches PAPERS (+extra newer) papers with realistic lengths."""
    papers = []
    for k in range(KEYWORDS):
        for i in range(PAPERS + extra):
            published = now - timedelta(hours=2 * (PAPERS - i) + 1)
            papers.append(Paper(
                arxiv_id=f"2511.{k:02d}{i:03d}", version=1,
                title=f"Topic{k} study {i}: a benchmark for long-horizon video reasoning",
                abstract=ABSTRACT, authors=tuple(f"Author {j}" for j in range(6)),
                published=published, updated=published, primary_category="cs.CV",
                categories=("cs.CV", "cs.LG"), comment="12 pages, 5 figures",
            ))
    return papers


class Timer:
    """Wraps a function and records how long each call took."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        self.samples: list[float] = []

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return self.fn(*args, **kwargs)
        finally:
            self.samples.append(time.perf_counter() - t0)


S = TypeVar("S", bound=AbstractAsyncContextManager)


def serve_in_thread(fake: S) -> tuple[S, threading.Event]:
    """A local server in a thread with its own loop, until the event is set."""
    ready, done = threading.Event(), threading.Event()

    def main() -> None:
        async def serve() -> None:
            async with fake:
                ready.set()
                while not done.is_set():
                    await asyncio.sleep(0.05)

        asyncio.run(serve())

    threading.Thread(target=main, daemon=True).start()
    ready.wait()
    return fake, done


async def one_cycle(store: AsyncStore, url: str, now: datetime) -> tuple[float, int]:
    async with ArxivClient(url, request_interval=0, timeout=30) as client:
        t0 = time.perf_counter()
        report = await run_cycle(client, store, PollSettings(PAPERS, 14), lambda: now,
                                 lambda sub: now)
        assert not report.failed, report.summary()
        return time.perf_counter() - t0, report.new_papers


async def main() -> None:
    import logging
    logging.basicConfig(level=logging.WARNING)
    parse = Timer(bot.fetch.arxiv.parse_feed)
    commit = Timer(storage.polls.commit_poll)
    bot.fetch.arxiv.parse_feed = parse  # type: ignore[assignment]
    storage.polls.commit_poll = commit  # type: ignore[assignment]  # bot.poll.keyword calls polls.X
    now = datetime.now(UTC)
    with tempfile.TemporaryDirectory() as tmp:
        store = await AsyncStore(Path(tmp) / "bench.db").open()
        for k in range(KEYWORDS):
            await store.call(kw_repo.ensure, f"Topic{k}", f"topic{k}", f"ti:topic{k}", now,
                             max_keywords=1000)
        await store.call(lambda db: kw_repo.set_config_keywords(
            db, {k.id for k in kw_repo.all_keywords(db)}))
        fake, done = serve_in_thread(FakeArxiv(papers=corpus(now)))
        baseline_wall, _ = await one_cycle(store, fake.url, now)
        fake.papers = corpus(now + timedelta(hours=2 * NEW), extra=NEW)
        later = now + timedelta(hours=1)
        incremental_wall, new = await one_cycle(store, fake.url, later)
        done.set()
        sections = await store.call(lambda db: [
            DigestSection(k.display, paper_repo.window(db, k.id, PAPERS))
            for k in kw_repo.all_keywords(db)])
        size_mb = (Path(tmp) / "bench.db").stat().st_size / 1e6
        await store.close()
    own = [p + c for p, c in zip(parse.samples, commit.samples, strict=False)]
    renders = []
    for _ in range(5):
        t0 = time.perf_counter()
        render_digest(sections, updated=now.date())
        renders.append(time.perf_counter() - t0)
    ms = lambda xs: statistics.median(xs) * 1000  # noqa: E731
    p95 = lambda xs: sorted(xs)[int(len(xs) * 0.95) - 1] * 1000  # noqa: E731
    print(f"keyword pages: {len(own)} (parse {ms(parse.samples):.2f} ms + diff/store "
          f"{ms(commit.samples):.2f} ms median)")
    print(f"own time per keyword page: median {ms(own):.2f} ms, p95 {p95(own):.2f} ms "
          "(target <= 10 ms)")
    print(f"baseline cycle wall time: {baseline_wall:.2f} s; incremental cycle "
          f"({new} new papers): {incremental_wall:.2f} s")
    print(f"digest render 100 x 100: median {ms(renders):.0f} ms (target <= 200 ms)")
    print(f"database after two cycles: {size_mb:.1f} MB")
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    asyncio.run(main())
