"""The fake arXiv itself: other tests only mean something if it answers like arXiv."""

from __future__ import annotations

import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.fetch.atom import parse_feed
from bot.fetch.errors import ArxivBadAnswer, ArxivRejected
from storage.records import Paper
from tests.fakes.arxiv_server import FakeArxiv, Fault, matches_query, render_feed

ROOT = Path(__file__).resolve().parent.parent
VAD = 'ti:"video anomaly detection" OR abs:"video anomaly detection"'


def test_seed_corpus() -> None:
    papers = FakeArxiv.seed_corpus()
    assert len(papers) == 79
    assert len({p.arxiv_id for p in papers}) == 79
    assert all(p.authors and p.primary_category in p.categories for p in papers)
    first = papers[0]
    assert (first.arxiv_id, first.version) == ("2004.00222", 3)
    assert first.title == "Video Anomaly Detection for Smart Surveillance"
    assert first.published.date() == datetime(2020, 4, 14, tzinfo=UTC).date()
    assert first.published.tzinfo is not None
    assert FakeArxiv.seed_corpus() == papers  # deterministic


@pytest.mark.parametrize("fmt", ["new", "old"])
def test_rendered_feeds_parse_back_to_the_same_papers(fmt: str) -> None:
    papers = FakeArxiv.seed_corpus()
    feed = parse_feed(render_feed(papers, total=500, start=20, items_per_page=79, fmt=fmt))
    assert feed.entries == tuple(papers)
    assert (feed.total_results, feed.start_index, feed.items_per_page) == (500, 20, 79)


_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=80)
_clean = _text.map(lambda s: " ".join(s.split()))


@given(title=_clean, abstract=_clean, comment=_clean, journal_ref=_clean,
       authors=st.lists(_clean.filter(bool), max_size=4))
def test_any_text_survives_both_formats(title: str, abstract: str, comment: str,
                                        journal_ref: str, authors: list[str]) -> None:
    """LaTeX, <, >, & and any Unicode in arXiv text reach the store unchanged."""
    when = datetime(2025, 11, 20, 8, 30, tzinfo=UTC)
    paper = Paper("2511.00524", 2, title, abstract, tuple(authors), when, when, "cs.CV",
                  ("cs.CV",), comment, journal_ref, "10.1/x")
    for fmt in ("new", "old"):
        parsed = parse_feed(render_feed([paper], total=1, start=0, items_per_page=1, fmt=fmt))
        assert parsed.entries == (paper,)


def test_query_language() -> None:
    papers = FakeArxiv.seed_corpus()

    def count(query: str) -> int:
        return sum(matches_query(query, p) for p in papers)

    vad = count(VAD)
    assert vad == count('ti:"Video  Anomaly detection" OR abs:"video anomaly detection"')
    assert 0 < count('ti:"video anomaly detection"') <= vad
    # Seed categories by digest section: 20 + 20 + 20 + 19 papers; every one is cs.CV.
    assert count("cat:cs.CL") == 39  # "Vision Language Model", "Multimodal Large Language Model"
    assert count("cat:cs.cv") == count("cat:cs.*") == 79
    assert count("cat:cs.CV ANDNOT cat:cs.CL") == 40
    assert count("cat:cs.LG OR cat:cs.AI") == 59
    assert count("cat:cs.LG OR cat:cs.AI ANDNOT cat:cs.CL") == 40  # ANDNOT binds tighter
    assert count("cat:cs.CL AND ti:video") == count("cat:cs.CL ti:video")
    assert count("(ti:video OR ti:multimodal) AND cat:cs.CV") == (
        sum(bool({"video", "multimodal"} & set(re.findall(r"\w+", p.title.lower())))
            for p in papers)
    )
    author = papers[0].authors[0]
    assert count(f'au:"{author}"') >= 1
    assert count("ti:zzzunheardof") == 0
    assert count("") == 0


async def test_paging_sorting_and_totals() -> None:
    async with FakeArxiv() as fake, httpx.AsyncClient() as http:
        fake.add(*FakeArxiv.seed_corpus())
        pages = []
        for start in (0, 5, 10):
            answer = await http.get(fake.url, params={
                "search_query": VAD, "start": start, "max_results": 5,
                "sortBy": "submittedDate", "sortOrder": "descending"})
            assert answer.headers["content-type"].startswith("application/atom+xml")
            pages.append(parse_feed(answer.content))
        everything = parse_feed((await http.get(fake.url, params={
            "search_query": VAD, "max_results": 100, "sortBy": "submittedDate",
            "sortOrder": "ascending"})).content)
    total = pages[0].total_results
    assert total == len(everything.entries) > 10
    assert [p.start_index for p in pages] == [0, 5, 10]
    newest_first = [e for page in pages for e in page.entries]
    assert newest_first == list(reversed(everything.entries))[:15]


async def test_faults_are_used_once_each_in_order() -> None:
    async with FakeArxiv() as fake, httpx.AsyncClient() as http:
        fake.add(*FakeArxiv.seed_corpus())
        fake.push(503, Fault(429, retry_after="7"), "html", "empty", "short", "unsorted",
                  "truncated", "bomb", Fault("error_feed", message="bad query"))

        async def get() -> httpx.Response:
            return await http.get(fake.url, params={
                "search_query": "cat:cs.CV", "max_results": 10, "sortBy": "submittedDate"})

        assert (await get()).status_code == 503
        limited = await get()
        assert (limited.status_code, limited.headers["Retry-After"]) == (429, "7")
        html = await get()
        assert html.status_code == 200 and b"Access Denied" in html.content
        empty = parse_feed((await get()).content)
        assert empty.entries == () and empty.total_results == 79
        assert len(parse_feed((await get()).content).entries) == 5
        unsorted = [e.published for e in parse_feed((await get()).content).entries]
        assert unsorted != sorted(unsorted, reverse=True)
        for _ in range(2):
            with pytest.raises(ArxivBadAnswer):
                parse_feed((await get()).content)
        rejected = await get()
        assert rejected.status_code == 400
        with pytest.raises(ArxivRejected, match="bad query"):
            parse_feed(rejected.content)
        normal = parse_feed((await get()).content)
        assert len(normal.entries) == 10
    assert len(fake.requests) == 10


async def test_reset_and_timeout_faults() -> None:
    async with FakeArxiv() as fake, httpx.AsyncClient(timeout=0.3) as http:
        fake.push("reset", "timeout")
        with pytest.raises(httpx.TransportError):
            await http.get(fake.url, params={"search_query": "all:x"})
        with pytest.raises(httpx.ReadTimeout):
            await http.get(fake.url, params={"search_query": "all:x"})
        assert (await http.get(fake.url, params={"search_query": "all:x"})).status_code == 200


async def test_min_interval_violations_are_recorded() -> None:
    async with FakeArxiv(min_interval=60) as fake, httpx.AsyncClient() as http:
        first = await http.get(fake.url, params={"search_query": "all:x"})
        second = await http.get(fake.url, params={"search_query": "all:x"})
    assert first.status_code == 200
    assert (second.status_code, second.text) == (429, "too fast")
    assert fake.violations == [fake.requests[1]]


async def test_requests_are_logged_with_headers() -> None:
    async with FakeArxiv() as fake, httpx.AsyncClient() as http:
        await http.get(fake.url, params={"search_query": "all:x", "start": "3"},
                       headers={"User-Agent": "probe/1"})
    (seen,) = fake.requests
    assert seen.path == "/api/query"
    assert seen.params == {"search_query": "all:x", "start": "3"}
    assert seen.headers["user-agent"] == "probe/1"


def test_standalone_process() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.arxiv_server", "--port", "0"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and url.endswith("/api/query")
        control = url.replace("/api/query", "/_fake/faults")
        assert httpx.post(control, json=[503, {"kind": 429, "retry_after": "2"}]).is_success
        assert httpx.get(url, params={"search_query": VAD}).status_code == 503
        assert httpx.get(url, params={"search_query": VAD}).status_code == 429
        feed = parse_feed(httpx.get(url, params={"search_query": VAD}).content)
        assert feed.total_results > 0
    finally:
        process.terminate()
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()
