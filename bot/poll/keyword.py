"""Polling one keyword: page through arXiv newest first, judge the answer, decide what is new.

This is the diff stage; the store commits the result (papers, seen set, window, outbox rows) in
one transaction, so a failed or suspicious poll changes nothing and sends nothing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import pairwise
from typing import TYPE_CHECKING

from storage import keywords as kw_repo
from storage import papers as paper_repo
from storage import polls
from storage.records import Feed, Keyword, Paper, PollOutcome
from storage.store import AsyncStore

if TYPE_CHECKING:
    from bot.fetch.arxiv import ArxivClient

MAX_PAGES = 10
BASELINE_MAX_AGE = timedelta(days=7)
EMPTY_CONFIRMATION = timedelta(minutes=10)
STALE_NEWEST = timedelta(days=7)


@dataclass(frozen=True)
class PollSettings:
    max_papers: int = 100
    notify_max_age_days: int = 14


@dataclass(frozen=True)
class KeywordState:
    """What the store knows that decides how to judge an answer."""

    had_papers: bool
    newest_stored: datetime | None
    last_total: int | None


def needs_baseline(kw: Keyword, max_papers: int, now: datetime) -> bool:
    """A baseline counts only if taken with the current query and size, and is fresh."""
    return not (
        kw.baseline_query == kw.query
        and kw.baseline_max_papers == max_papers
        and kw.last_success is not None
        and now - kw.last_success < BASELINE_MAX_AGE
    )


def suspicion(feed: Feed, *, start: int, page_size: int, state: KeywordState) -> str | None:
    """Why this page cannot be believed, or None. arXiv has sent each of these."""
    entries = feed.entries
    expected = min(page_size, max(feed.total_results - start, 0))
    if feed.size < expected:
        return (f"short page: {feed.size} entries where {expected} were expected "
                f"(totalResults {feed.total_results})")
    published = [e.published for e in entries]
    if any(a < b for a, b in pairwise(published)):
        return "entries are not in descending submission order"
    if start > 0:
        return None
    if state.last_total and feed.total_results < state.last_total / 2:
        return f"totalResults fell from {state.last_total} to {feed.total_results}"
    if not feed.size and state.had_papers:
        return "empty answer for a keyword that had papers"
    newest = state.newest_stored
    if entries and newest and entries[0].published < newest - STALE_NEWEST:
        return "the newest entry is more than 7 days older than the newest stored paper"
    return None


async def poll_keyword(client: ArxivClient, store: AsyncStore, kw: Keyword,
                       settings: PollSettings, now: Callable[[], datetime],
                       *, interactive: bool = False) -> PollOutcome:
    """Poll one keyword and commit; arXiv errors propagate with nothing written."""
    state = await _state(store, kw, now())
    fetch = _page_fetcher(client, kw, settings.max_papers, state, interactive)
    first = await fetch(0)
    # Decided once arXiv has answered: its clock wins when ours disagrees by more than a day.
    started = client.clock.now(now())
    baseline = needs_baseline(kw, settings.max_papers, started)
    floor = started - timedelta(days=settings.notify_max_age_days)
    papers = await _collect(store, kw, fetch, first, settings.max_papers, floor, baseline)
    total = first.total_results
    unconfirmed = kw.empty_since is None or started - kw.empty_since < EMPTY_CONFIRMATION
    if not papers and total == 0 and baseline and unconfirmed:
        await store.call(kw_repo.record_waiting, kw.id, started)
        return PollOutcome(kw, baseline=True, waiting_confirmation=True)
    query_changed = kw.baseline_query is not None and kw.baseline_query != kw.query
    new, changed = await store.call(
        polls.commit_poll, kw, papers, baseline=baseline, now=started,
        max_papers=settings.max_papers, notify_floor=floor, total_results=total,
        reset_window=baseline and query_changed,
    )
    return PollOutcome(kw, new_papers=new, stored=len(papers), baseline=baseline,
                       published=tuple(p.published for p in papers),
                       changed=changed)


async def _state(store: AsyncStore, kw: Keyword, now: datetime) -> KeywordState:
    query_changed = kw.baseline_query is not None and kw.baseline_query != kw.query
    size = await store.call(kw_repo.window_size, kw.id)
    newest = await store.call(paper_repo.newest_published, kw.id, now)
    return KeywordState(
        had_papers=size > 0 and not query_changed,
        newest_stored=None if query_changed else newest,
        last_total=None if query_changed else kw.last_total,
    )


FetchPage = Callable[[int], Awaitable[Feed]]


def _page_fetcher(client: ArxivClient, kw: Keyword, size: int, state: KeywordState,
                  interactive: bool) -> FetchPage:
    async def fetch(page: int) -> Feed:
        start = page * size
        return await client.fetch(
            kw.query, start, size, interactive=interactive,
            check=lambda f: suspicion(f, start=start, page_size=size, state=state),
        )

    return fetch


async def _collect(store: AsyncStore, kw: Keyword, fetch: FetchPage, feed: Feed, size: int,
                   floor: datetime, baseline: bool) -> list[Paper]:
    """Page until a page reaches a seen paper or the age floor: nothing between polls is lost."""
    collected: dict[str, Paper] = {}
    page = 0
    while True:
        for paper in feed.entries:
            collected.setdefault(paper.arxiv_id, paper)
        start = page * size
        if (baseline or page + 1 >= MAX_PAGES or feed.size < size
                or start + size >= feed.total_results
                or await _reached_known(store, kw, feed.entries, floor)):
            return list(collected.values())
        page += 1
        feed = await fetch(page)


async def _reached_known(store: AsyncStore, kw: Keyword, entries: Sequence[Paper],
                         floor: datetime) -> bool:
    if any(p.published < floor for p in entries):
        return True
    seen = await store.call(kw_repo.seen_among, kw.id, [p.arxiv_id for p in entries])
    return bool(seen)
