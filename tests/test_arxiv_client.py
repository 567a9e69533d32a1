"""The arXiv client and its gate against a real local fake arXiv: spacing, retries, breaker."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest

import bot
from bot.fetch.arxiv import MAX_WAIT, ArxivClient, backoff_delay
from bot.fetch.errors import (
    ArxivRejected,
    ArxivUnavailable,
    CircuitOpen,
    RetryBudgetExhausted,
    SuspiciousAnswer,
)
from bot.fetch.gate import RequestGate
from bot.metrics import REGISTRY
from notifiers.retry_after import parse_retry_after
from storage.records import Feed
from tests.fakes.arxiv_server import FakeArxiv, Fault

QUERY = 'ti:"video anomaly detection" OR abs:"video anomaly detection"'
INTERVAL = 0.05


@pytest.fixture
async def fake() -> AsyncIterator[FakeArxiv]:
    async with FakeArxiv() as server:
        server.add(*FakeArxiv.seed_corpus())
        yield server


@pytest.fixture
def make_client(fake: FakeArxiv) -> Callable[..., ArxivClient]:
    def make(**options: Any) -> ArxivClient:
        settings: dict[str, Any] = {
            "request_interval": INTERVAL, "timeout": 5, "backoff_base": 0.01, **options,
        }
        return ArxivClient(fake.url, **settings)

    return make


def requests_counted(outcome: str) -> float:
    return REGISTRY.get_sample_value("daily_papers_arxiv_requests_total", {"outcome": outcome}) or 0


def retries_counted() -> float:
    return REGISTRY.get_sample_value("daily_papers_arxiv_retries_total") or 0


# -- what arXiv sees ------------------------------------------------------------------------
async def test_headers_and_parameters(fake: FakeArxiv, make_client: Callable[..., ArxivClient]):
    async with make_client(contact="ops@example.org") as client:
        feed = await client.fetch(QUERY, 0, 5)
    assert len(feed.entries) == 5 and feed.total_results >= 5
    seen = fake.requests[0]
    assert seen.headers["User-Agent"] == (
        f"daily-papers/{bot.__version__} (+https://github.com/daily-papers; mailto:ops@example.org)"
    )
    assert seen.headers["Accept"] == "application/atom+xml"
    assert seen.params == {
        "search_query": QUERY, "start": "0", "max_results": "5",
        "sortBy": "submittedDate", "sortOrder": "descending",
    }
    dates = [p.published for p in feed.entries]
    assert dates == sorted(dates, reverse=True)


async def test_no_contact_no_mailto(fake: FakeArxiv, make_client: Callable[..., ArxivClient]):
    async with make_client() as client:
        await client.fetch(QUERY, 0, 1)
    agent = fake.requests[0].headers["User-Agent"]
    assert agent == f"daily-papers/{bot.__version__} (+https://github.com/daily-papers)"


async def test_redirects_are_followed(fake: FakeArxiv):
    moved = fake.url.replace("/api/query", "/moved/api/query")
    async with ArxivClient(moved, request_interval=INTERVAL) as client:
        feed = await client.fetch(QUERY, 0, 2)
    assert len(feed.entries) == 2
    assert fake.requests[0].params["search_query"] == QUERY


async def test_old_format_answers_read_the_same(fake: FakeArxiv,
                                                make_client: Callable[..., ArxivClient]):
    async with make_client() as client:
        new = await client.fetch(QUERY, 0, 10)
        fake.format = "old"
        old = await client.fetch(QUERY, 0, 10)
    assert old == new


async def test_interval_and_one_at_a_time_measured_at_the_server(
    fake: FakeArxiv, make_client: Callable[..., ArxivClient]
):
    interval = 0.2
    fake.min_interval = interval
    fake.push(503, "reset", 500)
    # The gate spaces request starts (sends), so what the server sees also carries the delay
    # between a send and the server's clock reading it: on a loaded 2-core machine a process
    # can be descheduled for 100 ms. The client keeps that much on top of the server's rule.
    async with make_client(request_interval=interval + 0.1) as client:
        feeds = await asyncio.gather(
            *(client.fetch(QUERY, start, 2) for start in (0, 2, 4, 6)),
            client.fetch("cat:cs.CL", 0, 3, interactive=True),
        )
    assert [len(f.entries) for f in feeds] == [2, 2, 2, 2, 3]
    assert len(fake.requests) == 8
    assert fake.violations == []
    assert fake.max_concurrent == 1
    arrivals = [r.time for r in fake.requests]
    assert min(b - a for a, b in itertools.pairwise(arrivals)) >= interval


# -- retries --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("fault", "outcome"),
    [
        (503, "http_5xx"),
        (500, "http_5xx"),
        (406, "http_406"),
        (Fault(429), "http_429"),
        ("reset", "connection"),
        ("html", "bad_answer"),
        ("truncated", "bad_answer"),
        ("bomb", "bad_answer"),
    ],
)
async def test_each_transient_fault_is_retried(
    fake: FakeArxiv, make_client: Callable[..., ArxivClient], fault: Any, outcome: str
):
    fake.push(fault)
    before, retries = requests_counted(outcome), retries_counted()
    async with make_client() as client:
        feed = await client.fetch(QUERY, 0, 3)
    assert len(feed.entries) == 3
    assert len(fake.requests) == 2
    assert requests_counted(outcome) == before + 1
    assert retries_counted() == retries + 1


async def test_timeout_is_retried(fake: FakeArxiv, make_client: Callable[..., ArxivClient]):
    fake.push("timeout")
    before = requests_counted("timeout")
    # the retry's normal answer must arrive within the same deadline on a busy machine
    async with make_client(timeout=2) as client:
        feed = await client.fetch(QUERY, 0, 3)
    assert len(feed.entries) == 3 and len(fake.requests) == 2
    assert requests_counted("timeout") == before + 1


async def test_an_answer_that_crawls_in_is_a_timeout_though_every_read_gets_data(
        fake: FakeArxiv, make_client: Callable[..., ArxivClient]):
    fake.push("drip")  # 16 bytes every 0.1 s: each read well within 2 s, the whole (≈ 20 s) never
    before = requests_counted("timeout")
    async with make_client(timeout=2) as client:  # the retry's normal answer: well within
        feed = await client.fetch(QUERY, 0, 3)
    assert len(feed.entries) == 3 and len(fake.requests) == 2
    assert requests_counted("timeout") == before + 1


@pytest.mark.parametrize("kind", ["gzip_bomb", "endless"])
async def test_an_answer_past_the_decoded_size_cap_is_a_bad_answer(
        kind: str, fake: FakeArxiv, make_client: Callable[..., ArxivClient]):
    # A 1 MB gzip answer inflating to 1 GiB, and one that never ends: each is cut off at
    # 20 MB decoded (not by the deadline: that would read "timeout"); then arXiv is fine.
    fake.push(*[kind] * 3)
    before = requests_counted("bad_answer")
    async with make_client(timeout=30, max_attempts=3) as client:
        with pytest.raises(ArxivUnavailable, match="bad answer: larger than 20 MB decoded"):
            await client.fetch(QUERY, 0, 3)
        assert requests_counted("bad_answer") == before + 3
        assert len((await client.fetch(QUERY, 0, 3)).entries) == 3


async def test_a_gzip_answer_is_asked_for_and_read(
        fake: FakeArxiv, make_client: Callable[..., ArxivClient]):
    fake.compress = True
    async with make_client() as client:
        feed = await client.fetch(QUERY, 0, 5)
    assert len(feed.entries) == 5
    assert fake.requests[0].headers["Accept-Encoding"] == "gzip"


async def test_retry_after_is_honoured(fake: FakeArxiv, make_client: Callable[..., ArxivClient],
                                       caplog: pytest.LogCaptureFixture):
    fake.push(Fault(429, retry_after="1"))
    caplog.set_level(logging.INFO, logger="bot.fetch.arxiv")
    async with make_client() as client:
        await client.fetch(QUERY, 0, 1)
    first, second = fake.requests
    assert second.time - first.time >= 1.0 - 0.02
    assert "HTTP 429" in caplog.text and "in 1.0 s" in caplog.text


async def test_gives_up_after_max_attempts(fake: FakeArxiv,
                                           make_client: Callable[..., ArxivClient]):
    fake.push(503, 503, 503)
    async with make_client(max_attempts=3) as client:
        with pytest.raises(ArxivUnavailable, match="HTTP 503") as caught:
            await client.fetch(QUERY, 0, 1)
    assert type(caught.value) is ArxivUnavailable
    assert len(fake.requests) == 3


def test_wait_computation() -> None:
    assert backoff_delay(1, 3.0, retry_after=1.0) == 1.0
    assert backoff_delay(1, 3.0, retry_after=86400.0) == MAX_WAIT
    assert backoff_delay(1, 3.0, rand=lambda: 1.0) == 3.0
    assert backoff_delay(3, 3.0, rand=lambda: 1.0) == 12.0
    assert backoff_delay(3, 3.0, rand=lambda: 0.5) == 6.0
    assert backoff_delay(30, 3.0, rand=lambda: 1.0) == MAX_WAIT
    assert backoff_delay(4, 3.0, rand=lambda: 0.0) == 0.0


def test_retry_after_header_forms() -> None:
    now = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after(format_datetime(now + timedelta(seconds=90), usegmt=True),
                             now=now) == 90.0
    assert parse_retry_after(format_datetime(now - timedelta(seconds=90), usegmt=True),
                             now=now) == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after("") is None
    assert parse_retry_after(None) is None


# -- answers that are not retried -----------------------------------------------------------
async def test_error_feed_is_not_retried(fake: FakeArxiv,
                                         make_client: Callable[..., ArxivClient]):
    fake.push(Fault("error_feed", message="unbalanced quotes in query"))
    async with make_client() as client:
        with pytest.raises(ArxivRejected) as caught:
            await client.fetch('ti:"oops', 0, 1)
    assert caught.value.message == "unbalanced quotes in query"
    assert len(fake.requests) == 1


async def test_rejected_query_stays_rejected(fake: FakeArxiv,
                                             make_client: Callable[..., ArxivClient]):
    fake.rejected_queries["ti:(a b)"] = "ti:(a b) is not supported"
    async with make_client() as client:
        for _ in range(2):
            with pytest.raises(ArxivRejected, match="not supported"):
                await client.fetch("ti:(a b)", 0, 1)
        assert len((await client.fetch(QUERY, 0, 1)).entries) == 1


async def test_other_client_errors_are_not_retried(fake: FakeArxiv,
                                                   make_client: Callable[..., ArxivClient]):
    fake.push(404)
    async with make_client() as client:
        with pytest.raises(ArxivUnavailable, match="HTTP 404"):
            await client.fetch(QUERY, 0, 1)
    assert len(fake.requests) == 1


# -- suspicious answers ---------------------------------------------------------------------
def empty_is_suspicious(feed: Feed) -> str | None:
    return None if feed.entries else "empty page"


async def test_suspicious_answer_is_retried(fake: FakeArxiv,
                                            make_client: Callable[..., ArxivClient]):
    fake.push("empty")
    async with make_client() as client:
        feed = await client.fetch(QUERY, 0, 2, check=empty_is_suspicious)
    assert len(feed.entries) == 2 and len(fake.requests) == 2


async def test_stays_suspicious_then_raises(fake: FakeArxiv,
                                            make_client: Callable[..., ArxivClient]):
    fake.push(*["empty"] * 4)
    before = requests_counted("suspicious")
    async with make_client(max_attempts=4) as client:
        with pytest.raises(SuspiciousAnswer, match="empty page"):
            await client.fetch(QUERY, 0, 2, check=empty_is_suspicious)
    assert len(fake.requests) == 4
    assert requests_counted("suspicious") == before + 4


# -- per-cycle limits -----------------------------------------------------------------------
async def test_retry_budget(fake: FakeArxiv, make_client: Callable[..., ArxivClient]):
    fake.push(503, 503, 503)
    async with make_client(retry_budget=2, max_attempts=4) as client:
        with pytest.raises(RetryBudgetExhausted):
            await client.fetch(QUERY, 0, 1)
        assert len(fake.requests) == 3  # the first try and two retries
        fake.push(503)
        with pytest.raises(RetryBudgetExhausted):
            await client.fetch(QUERY, 0, 1)  # no retry left: gives up at the first failure
        assert len(fake.requests) == 4
        client.start_cycle()
        fake.push(503)
        assert len((await client.fetch(QUERY, 0, 1)).entries) == 1


async def test_circuit_breaker(fake: FakeArxiv, make_client: Callable[..., ArxivClient]):
    fake.push(*[503] * 5)
    async with make_client(max_attempts=3, breaker_threshold=5) as client:
        with pytest.raises(ArxivUnavailable) as first:
            await client.fetch(QUERY, 0, 1)
        assert not isinstance(first.value, CircuitOpen)
        with pytest.raises(CircuitOpen):
            await client.fetch("cat:cs.CV", 0, 1)
        assert len(fake.requests) == 5
        with pytest.raises(CircuitOpen):
            await client.fetch("cat:cs.CL", 0, 1)
        assert len(fake.requests) == 5  # nothing sent while open
        # A user who is waiting still gets through.
        assert len((await client.fetch(QUERY, 0, 1, interactive=True)).entries) == 1
        client.start_cycle()
        assert len((await client.fetch(QUERY, 0, 1)).entries) == 1


async def test_a_good_answer_resets_the_breaker_count(
    fake: FakeArxiv, make_client: Callable[..., ArxivClient]
):
    async with make_client(max_attempts=5, breaker_threshold=5) as client:
        for _ in range(2):
            fake.push(503, 503, 503, 503)
            assert len((await client.fetch(QUERY, 0, 1)).entries) == 1
        fake.push(503, 503, Fault("error_feed"), 503, 503)
        with pytest.raises(ArxivRejected):
            await client.fetch(QUERY, 0, 1)
        assert len((await client.fetch(QUERY, 0, 1)).entries) == 1
    assert not client.circuit_open


# -- priority -------------------------------------------------------------------------------
async def test_interactive_fetch_goes_ahead_of_the_queue(
    fake: FakeArxiv, make_client: Callable[..., ArxivClient]
):
    release = asyncio.Event()
    fake.push(Fault("hold", release=release))
    async with make_client() as client:
        normal = [asyncio.create_task(client.fetch(f"cat:cs.CV n{i}", 0, 1)) for i in range(4)]
        await fake.wait_requests(1)  # the first normal fetch is in flight, three queue
        user = asyncio.create_task(client.fetch("cat:cs.CV user", 0, 1, interactive=True))
        await asyncio.sleep(0)  # let it reach the gate
        assert client.gate.waiting == (1, 3)
        release.set()
        await asyncio.gather(*normal, user)
    order = [r.params["search_query"] for r in fake.requests]
    assert order == ["cat:cs.CV n0", "cat:cs.CV user", "cat:cs.CV n1", "cat:cs.CV n2",
                     "cat:cs.CV n3"]


# -- the gate alone -------------------------------------------------------------------------
async def test_gate_fifo_within_a_lane_and_priority_across() -> None:
    gate = RequestGate(0)
    order: list[str] = []
    holding = asyncio.Event()
    release = asyncio.Event()

    async def holder() -> None:
        async with gate.turn():
            holding.set()
            await release.wait()

    async def take(name: str, interactive: bool) -> None:
        async with gate.turn(interactive=interactive):
            order.append(name)

    first = asyncio.create_task(holder())
    await holding.wait()
    names = [("a", False), ("b", False), ("X", True), ("c", False), ("Y", True)]
    tasks = [asyncio.create_task(take(n, i)) for n, i in names]
    await asyncio.sleep(0)
    assert gate.waiting == (2, 3)
    release.set()
    await asyncio.gather(first, *tasks)
    assert order == ["X", "Y", "a", "b", "c"]


async def test_cancelled_waiters_do_not_wedge_the_gate() -> None:
    gate = RequestGate(0)
    entered: list[str] = []

    async def take(name: str) -> None:
        async with gate.turn():
            entered.append(name)

    async with gate.turn():
        a, b, c = (asyncio.create_task(take(n)) for n in "abc")
        await asyncio.sleep(0)
        assert gate.waiting == (0, 3)
        b.cancel()  # cancelled while queued
        await asyncio.sleep(0)
        assert gate.waiting == (0, 2)
    # The turn was just granted to "a"; cancel it before it runs: it must pass the turn on.
    a.cancel()
    await asyncio.gather(a, b, c, return_exceptions=True)
    assert entered == ["c"]
    async with gate.turn():
        entered.append("later")
    assert entered == ["c", "later"]


async def test_gate_spaces_starts_and_never_overlaps() -> None:
    gate = RequestGate(0.1)
    loop = asyncio.get_running_loop()
    turns: list[tuple[float, float]] = []

    async def take(hold: asyncio.Event | None) -> None:
        async with gate.turn():
            start = loop.time()
            if hold is not None:  # a request whose answer takes longer than the interval
                await hold.wait()
            turns.append((start, loop.time()))

    slow = asyncio.Event()
    loop.call_later(0.25, slow.set)
    await asyncio.gather(take(None), take(slow), take(None), take(None))
    assert all(b[0] - a[0] >= 0.1 for a, b in itertools.pairwise(turns))
    assert all(nxt[0] >= prev[1] for prev, nxt in itertools.pairwise(turns))  # one at a time


async def test_gate_counts_the_interval_from_the_start_not_from_the_end() -> None:
    """arXiv's rule is one request every interval, not a pause after each answer: a turn
    shorter than the interval leaves only the rest of it to wait, a longer one none."""
    interval = 0.1
    gate = RequestGate(interval)
    loop = asyncio.get_running_loop()
    answered = asyncio.Event()
    async with gate.turn() as turn:
        turn.sent()
        # an answer that takes 0.03 s or more, counted from the send: on a busy machine time
        # may pass between asking for the turn and sending
        loop.call_later(0.03, answered.set)
        await answered.wait()
    second = asyncio.create_task(_hold_turn(gate, asyncio.Event()))
    await asyncio.sleep(0)
    assert gate._timer is not None
    assert gate._timer.when() - loop.time() <= gate.spacing - 0.03
    second.cancel()
    await asyncio.gather(second, return_exceptions=True)

    slow = asyncio.Event()
    async with gate.turn():
        loop.call_later(2 * interval, slow.set)
        await slow.wait()  # longer than the interval
        third = asyncio.create_task(_hold_turn(gate, asyncio.Event()))
        await asyncio.sleep(0)
        assert not gate._busy or gate.waiting == (0, 1)
    assert gate._busy and gate.waiting == (0, 0)  # granted at once when the slow one ended
    third.cancel()
    await asyncio.gather(third, return_exceptions=True)


async def _hold_turn(gate: RequestGate, release: asyncio.Event) -> None:
    async with gate.turn():
        await release.wait()
