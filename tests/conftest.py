"""Shared fixtures: a store on a temporary file, the local fake arXiv and a client for it,
a settable clock, and factories for papers, keywords and subscribers."""

from __future__ import annotations

import itertools
import os
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlite_utils import Database

from bot.fetch.arxiv import ArxivClient
from bot.fetch.keywords import parse_keyword
from storage import keywords as kw_repo
from storage import polls
from storage import subscribers as sub_repo
from storage.records import Keyword, Paper, Subscriber
from storage.store import AsyncStore
from tests.fakes.arxiv_server import FakeArxiv

# Compiled modules are kept even where the environment says not to (PYTHONDONTWRITEBYTECODE):
# without them every xdist worker compiles and assertion-rewrites the test modules again (4 s of
# CPU each) and every `daily-papers` process the tests start compiles the project's modules.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
sys.dont_write_bytecode = False

REQUEST_INTERVAL = 0.02
BACKOFF_BASE = 0.005


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto`: three workers per core. Most end-to-end tests wait (for a daemon's cycle, a
    fake server, a lock's timeout) far more than they compute (the suite's 1,150 s of test time
    hold 200 s of CPU), so the waits overlap and the cores stay busy: on 2 cores with two
    CPU-busy processes beside it, 5 min 25 s with 4 workers, 4 min 27 s with 6."""
    return 3 * len(os.sched_getaffinity(0))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Long scenarios first, so that with xdist they start at once and the short tests fill the
    workers' ends. The longest (a `timeout` mark above the default) go to even places: xdist
    hands out tests two at a time, so each of them starts on a worker of its own."""
    default = float(config.getini("timeout") or 0)

    def longest(item: pytest.Item) -> bool:
        mark = item.get_closest_marker("timeout")
        seconds = (mark.args[0] if mark.args else mark.kwargs.get("timeout")) if mark else None
        return seconds is not None and float(seconds) > default

    first = [item for item in items if longest(item)]
    slow = [item for item in items if not longest(item) and item.get_closest_marker("slow")]
    rest = [item for item in items if not longest(item) and not item.get_closest_marker("slow")]
    ordered: list[pytest.Item] = []
    for item in first:
        ordered.append(item)
        if slow:
            ordered.append(slow.pop(0))
    items[:] = ordered + slow + rest


def sent_papers(db: Database, subscriber_id: int) -> list[str]:
    """The arXiv ids a subscriber has been sent (tests read the outbox directly)."""
    return [r["arxiv_id"] for r in db.query(
        "SELECT arxiv_id FROM outbox WHERE subscriber_id = ? AND status = 'sent'",
        [subscriber_id])]


@dataclass
class Clock:
    """The time the code under test sees; tests move it instead of sleeping."""

    current: datetime = field(default_factory=lambda: datetime.now(UTC).replace(microsecond=0))

    def now(self) -> datetime:
        return self.current

    def advance(self, delta: timedelta) -> datetime:
        self.current += delta
        return self.current


@pytest.fixture
def refused_port() -> Iterator[int]:
    """A port on 127.0.0.1 that refuses connections: bound, so no server of a test running
    beside this one can take it, but not listening."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "daily-papers.db"


@pytest.fixture
async def store(db_path: Path) -> AsyncIterator[AsyncStore]:
    astore = await AsyncStore(db_path).open()
    try:
        yield astore
    finally:
        await astore.close()


@pytest.fixture
async def fake_arxiv(clock: Clock) -> AsyncIterator[FakeArxiv]:
    """An empty fake arXiv on the test's clock: tests add the papers they need."""
    async with FakeArxiv(clock=clock.now) as server:
        yield server


@pytest.fixture
async def arxiv_client(fake_arxiv: FakeArxiv) -> AsyncIterator[ArxivClient]:
    """The real client, pointed at the fake, fast: short interval, tiny backoff."""
    async with ArxivClient(fake_arxiv.url, request_interval=REQUEST_INTERVAL, timeout=5,
                           backoff_base=BACKOFF_BASE) as client:
        yield client


PaperFactory = Callable[..., Paper]


@pytest.fixture
def paper(clock: Clock) -> PaperFactory:
    """`paper(days=2, about="graph neural networks")`: published `days` before the clock's now.

    Ids count up from 2601.00001 unless given; the title carries `about`, so a phrase keyword
    with those words matches it on the fake.
    """
    numbers = itertools.count(1)

    def make(*, days: float = 1.0, about: str = "graph neural networks", arxiv_id: str = "",
             version: int = 1, title: str = "", abstract: str = "",
             updated_days: float | None = None) -> Paper:
        n = next(numbers)
        # whole seconds, as Atom carries them: a paper read back from the fake equals this one
        published = (clock.now() - timedelta(days=days)).replace(microsecond=0)
        back = updated_days if updated_days is not None else days
        updated = (clock.now() - timedelta(days=back)).replace(microsecond=0)
        return Paper(
            arxiv_id=arxiv_id or f"2601.{n:05d}", version=version,
            title=title or f"On {about}, part {n}",
            abstract=abstract or f"We study {about} in setting number {n}.",
            authors=("Ada Lovelace", "Alan Turing"), published=published, updated=updated,
            primary_category="cs.LG", categories=("cs.LG",),
        )

    return make


KeywordFactory = Callable[..., Awaitable[Keyword]]


@pytest.fixture
def add_keyword(store: AsyncStore, clock: Clock) -> KeywordFactory:
    """`await add_keyword("graph neural networks", in_config=True)`: the stored Keyword."""

    async def make(text: str, *, in_config: bool = False, max_keywords: int = 500) -> Keyword:
        parsed = parse_keyword(text)
        kw, _ = await store.call(kw_repo.ensure, parsed.display, parsed.canonical, parsed.query,
                                 clock.now(), max_keywords=max_keywords)
        if in_config:
            current = {k.id for k in await store.call(kw_repo.in_config)}
            await store.call(kw_repo.set_config_keywords, current | {kw.id})
        return await store.call(kw_repo.get, kw.id)  # type: ignore[return-value]

    return make


@pytest.fixture
async def public_and_private_papers(store: AsyncStore, add_keyword: KeywordFactory,
                                    paper: PaperFactory, clock: Clock) -> None:
    """One paper under the public keyword "graph neural networks" (in config.toml) and one
    under "secret project words", a keyword that exists only because someone subscribed."""
    for text, public in (("graph neural networks", True), ("secret project words", False)):
        kw = await add_keyword(text, in_config=public)
        await store.call(polls.commit_poll, kw, [paper(about=text)], baseline=True,
                         now=clock.now(), max_papers=100,
                         notify_floor=clock.now() - timedelta(days=14), total_results=1)


SubscriberFactory = Callable[..., Awaitable[Subscriber]]


@pytest.fixture
def add_subscriber(store: AsyncStore, clock: Clock) -> SubscriberFactory:
    """`await add_subscriber("telegram", "42", kw1, kw2)`: a user subscribed to keywords."""

    async def make(channel: str, address: str, *keywords: Keyword) -> Subscriber:
        sub = await store.call(sub_repo.ensure, channel, address, clock.now())
        for kw in keywords:
            await store.call(sub_repo.subscribe, sub, kw, "user", clock.now())
        return sub

    return make
