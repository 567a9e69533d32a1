"""The diff stage against the local fake arXiv: baselines, what counts as new, paging,
suspicious answers, versions and the display window (DESIGN "Newness")."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any

import pytest

from bot.fetch.arxiv import ArxivClient
from bot.fetch.errors import ArxivUnavailable, SuspiciousAnswer
from bot.poll.keyword import KeywordState, PollSettings, needs_baseline, poll_keyword, suspicion
from storage import keywords as kw_repo
from storage import outbox
from storage import papers as paper_repo
from storage import subscribers as sub_repo
from storage.records import Feed, Keyword, OutboxRow, Paper, PollOutcome, Subscriber
from storage.store import AsyncStore
from tests.conftest import Clock, KeywordFactory, PaperFactory, SubscriberFactory
from tests.fakes.arxiv_server import FakeArxiv, Fault

KEYWORD = "graph neural networks"
ATTEMPTS = 4  # the client's default max_attempts: a suspicious answer is asked this often


@pytest.fixture
async def kw(add_keyword: KeywordFactory) -> Keyword:
    return await add_keyword(KEYWORD, in_config=True)


async def poll(store: AsyncStore, client: ArxivClient, clock: Clock, kw: Keyword, *,
               max_papers: int = 10, age_days: int = 14) -> PollOutcome:
    """Poll with the keyword as the store knows it now (as the cycle does)."""
    current = await store.call(kw_repo.get, kw.id)
    assert current is not None
    return await poll_keyword(client, store, current, PollSettings(max_papers, age_days),
                              clock.now)


async def window_ids(store: AsyncStore, kw: Keyword) -> list[str]:
    return [p.arxiv_id for p in await store.call(paper_repo.window, kw.id)]


async def pending_rows(store: AsyncStore, clock: Clock, sub: Subscriber) -> list[OutboxRow]:
    """What the dispatcher would send this subscriber once the cycle has ended."""
    await store.call(outbox.release, clock.now(), lambda _sub: clock.now())
    return await store.call(outbox.due_rows, sub.id, clock.now())


def ids(papers: list[Paper] | list[OutboxRow]) -> set[str]:
    return {p.arxiv_id if isinstance(p, Paper) else p.paper.arxiv_id for p in papers}


async def snapshot(store: AsyncStore, kw: Keyword) -> tuple[Any, ...]:
    """Everything a failed poll must leave as it was."""
    return (
        await store.call(kw_repo.get, kw.id),
        await store.call(paper_repo.window, kw.id),
        await store.call(paper_repo.count),
        await store.call(outbox.counts),
    )


# -- baseline and newness ---------------------------------------------------------------------
async def test_first_poll_is_a_baseline_then_only_the_newcomer_is_new(
        store: AsyncStore, arxiv_client: ArxivClient, fake_arxiv: FakeArxiv, clock: Clock,
        kw: Keyword, paper: PaperFactory, add_keyword: KeywordFactory,
        add_subscriber: SubscriberFactory):
    old = [paper(days=d) for d in (1, 2, 3)]
    fake_arxiv.add(*old)
    alice = await add_subscriber("telegram", "1", kw)
    bob = await add_subscriber("email", "bob@example.org", kw)
    gone = await add_subscriber("slack", "C1", kw)
    await store.call(sub_repo.deactivate, gone.id, "blocked the bot")
    carol = await add_subscriber("telegram", "3", await add_keyword("message passing"))

    first = await poll(store, arxiv_client, clock, kw)
    assert first.baseline and first.new_papers == [] and first.stored == 3
    assert await window_ids(store, kw) == [p.arxiv_id for p in old]
    assert await pending_rows(store, clock, alice) == []

    fresh = paper(days=0.1)
    fake_arxiv.add(fresh)
    second = await poll(store, arxiv_client, clock, kw)
    assert not second.baseline
    assert second.new_papers == [fresh]
    for sub in (alice, bob):
        rows = await pending_rows(store, clock, sub)
        assert [(r.paper.arxiv_id, r.keywords) for r in rows] == [(fresh.arxiv_id, (KEYWORD,))]
    assert await pending_rows(store, clock, gone) == []
    assert await pending_rows(store, clock, carol) == []
    assert await window_ids(store, kw) == [fresh.arxiv_id, *(p.arxiv_id for p in old)]

    third = await poll(store, arxiv_client, clock, kw)
    assert third.new_papers == [] and not third.changed


@pytest.mark.parametrize("change", ["query", "max_papers", "week_without_success"])
async def test_rebaseline_notifies_no_one(
        change: str, store: AsyncStore, arxiv_client: ArxivClient, fake_arxiv: FakeArxiv,
        clock: Clock, kw: Keyword, paper: PaperFactory, add_subscriber: SubscriberFactory):
    fake_arxiv.add(*(paper(days=d) for d in (1, 2, 3)))
    sub = await add_subscriber("telegram", "1", kw)
    await poll(store, arxiv_client, clock, kw, max_papers=10)
    max_papers = 10
    if change == "query":  # the compiler changed: same identity, a different query
        await store.call(kw_repo.ensure, kw.display, kw.canonical, f'ti:"{KEYWORD}"',
                         clock.now(), max_keywords=500)
    elif change == "max_papers":
        max_papers = 8
    else:
        clock.advance(timedelta(days=7, minutes=1))
    current = await store.call(kw_repo.get, kw.id)
    assert current is not None and needs_baseline(current, max_papers, clock.now())

    fresh = paper(days=0.1)
    fake_arxiv.add(fresh)
    again = await poll(store, arxiv_client, clock, kw, max_papers=max_papers)
    assert again.baseline and again.new_papers == []
    assert fresh.arxiv_id in await window_ids(store, kw)
    assert await pending_rows(store, clock, sub) == []
    after = await store.call(kw_repo.get, kw.id)
    assert after is not None
    assert (after.baseline_query, after.baseline_max_papers) == (after.query, max_papers)

    # The new baseline holds: the next newcomer is new again.
    newer = paper(days=0.05)
    fake_arxiv.add(newer)
    last = await poll(store, arxiv_client, clock, kw, max_papers=max_papers)
    assert not last.baseline and last.new_papers == [newer]


async def test_unseen_paper_older_than_the_age_floor_is_stored_but_not_new(
        store: AsyncStore, arxiv_client: ArxivClient, fake_arxiv: FakeArxiv, clock: Clock,
        kw: Keyword, paper: PaperFactory, add_subscriber: SubscriberFactory):
    fake_arxiv.add(paper(days=1))
    sub = await add_subscriber("telegram", "1", kw)
    await poll(store, arxiv_client, clock, kw)
    late = paper(days=20)  # indexed late: arXiv lists it only now
    fresh = paper(days=0.5)
    fake_arxiv.add(late, fresh)

    out = await poll(store, arxiv_client, clock, kw, age_days=14)
    assert out.new_papers == [fresh]
    assert late.arxiv_id in await window_ids(store, kw)
    assert ids(await pending_rows(store, clock, sub)) == {fresh.arxiv_id}
    # and it stays not-new: it is in the keyword's seen set now
    assert (await poll(store, arxiv_client, clock, kw)).new_papers == []


async def test_150_new_papers_between_two_polls_are_all_new(
        store: AsyncStore, arxiv_client: ArxivClient, fake_arxiv: FakeArxiv, clock: Clock,
        kw: Keyword, paper: PaperFactory, add_subscriber: SubscriberFactory):
    fake_arxiv.add(*(paper(days=5 + i / 100) for i in range(100)))
    sub = await add_subscriber("telegram", "1", kw)
    assert (await poll(store, arxiv_client, clock, kw, max_papers=100)).stored == 100
    burst = [paper(days=i / 100) for i in range(150)]  # newest first
    fake_arxiv.add(*burst)

    before = len(fake_arxiv.requests)
    out = await poll(store, arxiv_client, clock, kw, max_papers=100)
    assert [r.params["start"] for r in fake_arxiv.requests[before:]] == ["0", "100"]
    assert ids(out.new_papers) == ids(burst) and len(out.new_papers) == 150
    assert ids(await pending_rows(store, clock, sub)) == ids(burst)
    assert await window_ids(store, kw) == [p.arxiv_id for p in burst[:100]]


async def test_max_papers_raised_fills_the_bigger_window_and_notifies_no_one(
        store: AsyncStore, arxiv_client: ArxivClient, fake_arxiv: FakeArxiv, clock: Clock,
        kw: Keyword, paper: PaperFactory, add_subscriber: SubscriberFactory):
    corpus = [paper(days=i / 20) for i in range(200)]
    fake_arxiv.add(*corpus)
    sub = await add_subscriber("telegram", "1", kw)
    await poll(store, arxiv_client, clock, kw, max_papers=100)
    assert len(await window_ids(store, kw)) == 100

    before = len(fake_arxiv.requests)
    out = await poll(store, arxiv_client, clock, kw, max_papers=150)
    assert out.baseline and out.new_papers == []
    assert [r.params["max_results"] for r in fake_arxiv.requests[before:]] == ["150"]
    assert await window_ids(store, kw) == [p.arxiv_id for p in corpus[:150]]
    assert await pending_rows(store, clock, sub) == []


# -- an empty answer is not a baseline until confirmed ----------------------------------------
async def test_empty_first_answer_waits_and_a_full_answer_takes_the_baseline(
        store: AsyncStore, arxiv_client: ArxivClient, fake_arxiv: FakeArxiv, clock: Clock,
        kw: Keyword, paper: PaperFactory, add_subscriber: SubscriberFactory):
    sub = await add_subscriber("telegram", "1", kw)
    out = await poll(store, arxiv_client, clock, kw)
    assert out.waiting_confirmation and out.error is None
    waiting = await store.call(kw_repo.get, kw.id)
    assert waiting is not None
    assert waiting.baseline_query is None and waiting.last_success is None
    assert waiting.last_error is None and waiting.consecutive_failures == 0
    assert waiting.empty_since == clock.now()

    clock.advance(timedelta(minutes=1))
    full = [paper(days=d) for d in (1, 2)]
    fake_arxiv.add(*full)
    out = await poll(store, arxiv_client, clock, kw)
    assert out.baseline and not out.waiting_confirmation and out.new_papers == []
    assert await window_ids(store, kw) == [p.arxiv_id for p in full]
    assert await pending_rows(store, clock, sub) == []
    based = await store.call(kw_repo.get, kw.id)
    assert based is not None and based.empty_since is None and based.baseline_query == kw.query

    fresh = paper(days=0.1)
    fake_arxiv.add(fresh)
    assert (await poll(store, arxiv_client, clock, kw)).new_papers == [fresh]


async def test_two_empty_answers_ten_minutes_apart_take_an_empty_baseline(
        store: AsyncStore, arxiv_client: ArxivClient, fake_arxiv: FakeArxiv, clock: Clock,
        kw: Keyword, paper: PaperFactory, add_subscriber: SubscriberFactory):
    sub = await add_subscriber("telegram", "1", kw)
    first_seen_empty = clock.now()
    assert (await poll(store, arxiv_client, clock, kw)).waiting_confirmation
    clock.advance(timedelta(minutes=5))
    assert (await poll(store, arxiv_client, clock, kw)).waiting_confirmation
    waiting = await store.call(kw_repo.get, kw.id)
    assert waiting is not None and waiting.empty_since == first_seen_empty

    clock.advance(timedelta(minutes=5))
    out = await poll(store, arxiv_client, clock, kw)
    assert out.baseline and not out.waiting_confirmation
    based = await store.call(kw_repo.get, kw.id)
    assert based is not None and based.baseline_query == kw.query
    assert based.last_success == clock.now()

    # With the (empty) baseline in place, the keyword's first paper is news.
    first = paper(days=0.1)
    fake_arxiv.add(first)
    assert (await poll(store, arxiv_client, clock, kw)).new_papers == [first]
    assert ids(await pending_rows(store, clock, sub)) == {first.arxiv_id}


# -- suspicious answers: retried, then the poll fails and nothing is written ----------------
async def _expect_suspicious_and_unchanged(
        store: AsyncStore, client: ArxivClient, fake: FakeArxiv, clock: Clock, kw: Keyword,
        reason: str) -> None:
    before = await snapshot(store, kw)
    sent = len(fake.requests)
    with pytest.raises(SuspiciousAnswer, match=reason):
        await poll(store, client, clock, kw)
    assert len(fake.requests) - sent == ATTEMPTS
    assert await snapshot(store, kw) == before


async def test_short_page_is_retried_then_fails_and_the_next_poll_recovers(
        store: AsyncStore, arxiv_client: ArxivClient, fake_arxiv: FakeArxiv, clock: Clock,
        kw: Keyword, paper: PaperFactory, add_subscriber: SubscriberFactory):
    fake_arxiv.add(*(paper(days=d) for d in (1, 2, 3, 4)))
    sub = await add_subscriber("telegram", "1", kw)
    await poll(store, arxiv_client, clock, kw)
    fresh = paper(days=0.1)
    fake_arxiv.add(fresh)
    fake_arxiv.push(*["short"] * ATTEMPTS)
    await _expect_suspicious_and_unchanged(store, arxiv_client, fake_arxiv, clock, kw,
                                           "short page")
    assert await pending_rows(store, clock, sub) == []

    out = await poll(store, arxiv_client, clock, kw)
    assert out.new_papers == [fresh]


async def test_one_short_page_then_a_good_one_is_a_normal_poll(
        store: AsyncStore, arxiv_client: ArxivClient, fake_arxiv: FakeArxiv, clock: Clock,
        kw: Keyword, paper: PaperFactory):
    fake_arxiv.add(*(paper(days=d) for d in (1, 2, 3, 4)))
    await poll(store, arxiv_client, clock, kw)
    fresh = paper(days=0.1)
    fake_arxiv.add(fresh)
    fake_arxiv.push("short")
    sent = len(fake_arxiv.requests)
    assert (await poll(store, arxiv_client, clock, kw)).new_papers == [fresh]
    assert len(fake_arxiv.requests) - sent == 2


async def test_total_results_falling_by_more_than_half_is_suspicious(
        store: AsyncStore, arxiv_client: ArxivClient, fake_arxiv: FakeArxiv, clock: Clock,
        kw: Keyword, paper: PaperFactory):
    corpus = [paper(days=d) for d in range(1, 11)]
    fake_arxiv.add(*corpus)
    await poll(store, arxiv_client, clock, kw)
    del fake_arxiv.papers[3:]
    fake_arxiv.add(paper(days=0.1))  # 4 of 10 left
    await _expect_suspicious_and_unchanged(store, arxiv_client, fake_arxiv, clock, kw,
                                           "totalResults fell from 10 to 4")


async def test_newest_entry_a_week_older_than_the_newest_stored_is_suspicious(
        store: AsyncStore, arxiv_client: ArxivClient, fake_arxiv: FakeArxiv, clock: Clock,
        kw: Keyword, paper: PaperFactory):
    fake_arxiv.add(*(paper(days=d) for d in (1, 2, 12, 13, 14, 15, 16, 17)))
    await poll(store, arxiv_client, clock, kw)
    del fake_arxiv.papers[:2]  # an answer from a stale mirror: the recent week is missing
    await _expect_suspicious_and_unchanged(store, arxiv_client, fake_arxiv, clock, kw,
                                           "more than 7 days older")


@pytest.mark.parametrize("ahead", [timedelta(days=60), "2099"])
async def test_a_future_dated_entry_is_not_the_newest_and_arxivs_correction_is_taken(
        ahead: timedelta | str, store: AsyncStore, arxiv_client: ArxivClient,
        fake_arxiv: FakeArxiv, clock: Clock, kw: Keyword, paper: PaperFactory,
        add_subscriber: SubscriberFactory):
    fake_arxiv.add(*(paper(days=d) for d in (1, 2, 3)))
    sub = await add_subscriber("telegram", "1", kw)
    await poll(store, arxiv_client, clock, kw)
    dated = paper(days=0.5)
    wrong = (clock.now() + ahead if isinstance(ahead, timedelta)
             else dated.published.replace(year=2099))
    fake_arxiv.add(dataclasses.replace(dated, published=wrong, updated=wrong))
    out = await poll(store, arxiv_client, clock, kw)
    assert ids(out.new_papers) == {dated.arxiv_id}  # a real paper: told once, as any other

    clock.advance(timedelta(days=1))
    fake_arxiv.papers[-1] = dated  # arXiv corrects the date
    fresh = paper(days=0.1)
    fake_arxiv.add(fresh)
    out = await poll(store, arxiv_client, clock, kw)  # once: "7 days older than the newest"
    assert out.new_papers == [fresh]
    assert ids(await pending_rows(store, clock, sub)) == {dated.arxiv_id, fresh.arxiv_id}
    shown = {p.arxiv_id: p.published for p in await store.call(paper_repo.window, kw.id)}
    assert shown[dated.arxiv_id] == dated.published
    assert await window_ids(store, kw) == [fresh.arxiv_id, dated.arxiv_id,
                                           *(p.arxiv_id for p in fake_arxiv.papers[:3])]


@pytest.mark.parametrize(("how", "reason"), [("empty_page", "short page: 0 entries"),
                                            ("no_results", "fell from 3 to 0")])
async def test_empty_answer_for_a_keyword_that_had_papers_is_suspicious(
        how: str, reason: str, store: AsyncStore, arxiv_client: ArxivClient, fake_arxiv: FakeArxiv,
        clock: Clock, kw: Keyword, paper: PaperFactory):
    fake_arxiv.add(*(paper(days=d) for d in (1, 2, 3)))
    await poll(store, arxiv_client, clock, kw)
    if how == "empty_page":  # entries missing, totalResults kept
        fake_arxiv.push(*["empty"] * ATTEMPTS)
    else:
        fake_arxiv.papers.clear()
    await _expect_suspicious_and_unchanged(store, arxiv_client, fake_arxiv, clock, kw, reason)
    # not "waiting for confirmation": the keyword had papers
    after = await store.call(kw_repo.get, kw.id)
    assert after is not None and after.empty_since is None


# -- values no record can hold: the entry is dropped, a count makes the answer bad -------------
@pytest.mark.parametrize(("element", "text"), [
    ("published", "9999-12-31T23:59:59-01:00"), ("published", "0001-01-01T00:00:00+01:00"),
    ("id", "http://arxiv.org/abs/2601.09999v100000000000000000000")])
async def test_an_entry_out_of_range_is_dropped_and_the_rest_of_its_page_is_delivered(
        element: str, text: str, store: AsyncStore, arxiv_client: ArxivClient,
        fake_arxiv: FakeArxiv, clock: Clock, kw: Keyword, paper: PaperFactory,
        add_subscriber: SubscriberFactory):
    fake_arxiv.add(*(paper(days=d) for d in (1, 2, 3)))
    sub = await add_subscriber("telegram", "1", kw)
    await poll(store, arxiv_client, clock, kw)
    bogus, fresh = paper(days=0.05, arxiv_id="2601.09999"), paper(days=0.1)
    fake_arxiv.add(bogus, fresh)
    fake_arxiv.push(Fault("tamper", edits={f"2601.09999 {element}": text}))
    sent = len(fake_arxiv.requests)

    out = await poll(store, arxiv_client, clock, kw)
    assert len(fake_arxiv.requests) - sent == 1  # not a short page: the entry was there
    assert out.new_papers == [fresh]
    assert ids(await pending_rows(store, clock, sub)) == {fresh.arxiv_id}
    assert bogus.arxiv_id not in await window_ids(store, kw)


async def test_a_count_out_of_range_fails_the_poll_and_changes_nothing(
        store: AsyncStore, arxiv_client: ArxivClient, fake_arxiv: FakeArxiv, clock: Clock,
        kw: Keyword, paper: PaperFactory):
    fake_arxiv.add(*(paper(days=d) for d in (1, 2, 3)))
    await poll(store, arxiv_client, clock, kw, max_papers=3)
    fake_arxiv.add(paper(days=0.1))  # a full page: nothing else looks wrong
    fake_arxiv.push(*[Fault("tamper", edits={"totalResults": "1" + "0" * 30})] * ATTEMPTS)
    before = await snapshot(store, kw)
    with pytest.raises(ArxivUnavailable, match="bad answer: <os:totalResults> is missing or not a count"):
        await poll(store, arxiv_client, clock, kw, max_papers=3)
    assert await snapshot(store, kw) == before


def _feed(papers: list[Paper], total: int) -> Feed:
    return Feed(total_results=total, start_index=0, items_per_page=10, entries=tuple(papers))


def test_suspicion_names_each_reason(paper: PaperFactory):
    newest, middle, oldest = paper(days=1), paper(days=2), paper(days=3)
    fresh = KeywordState(had_papers=True,
                         newest_stored=newest.published, last_total=3)
    assert suspicion(_feed([newest, middle, oldest], 3), start=0, page_size=10,
                     state=fresh) is None
    assert "short page" in (suspicion(_feed([newest], 3), start=0, page_size=10, state=fresh)
                            or "")
    assert "descending" in (suspicion(_feed([middle, newest, oldest], 3), start=0,
                                      page_size=10, state=fresh) or "")
    assert "fell" in (suspicion(_feed([newest], 1), start=0, page_size=10, state=fresh) or "")
    no_total = dataclasses.replace(fresh, last_total=None)
    assert "empty" in (suspicion(_feed([], 0), start=0, page_size=10, state=no_total) or "")
    stale = dataclasses.replace(fresh, newest_stored=newest.published + timedelta(days=8))
    assert "7 days" in (suspicion(_feed([newest, middle, oldest], 3), start=0, page_size=10,
                                  state=stale) or "")
    # later pages are judged only on their own length and order
    assert suspicion(_feed([oldest], 3), start=2, page_size=1, state=stale) is None


# -- versions and the window ------------------------------------------------------------------
async def test_a_new_version_updates_the_paper_and_is_never_announced_again(
        store: AsyncStore, arxiv_client: ArxivClient, fake_arxiv: FakeArxiv, clock: Clock,
        kw: Keyword, paper: PaperFactory, add_subscriber: SubscriberFactory):
    v1 = paper(days=1, title=f"Draft: {KEYWORD} at scale")
    fake_arxiv.add(v1, paper(days=2))
    sub = await add_subscriber("telegram", "1", kw)
    await poll(store, arxiv_client, clock, kw)

    v2 = dataclasses.replace(v1, version=2, title=f"Final: {KEYWORD} at scale",
                             updated=clock.now())
    fake_arxiv.papers[0] = v2
    out = await poll(store, arxiv_client, clock, kw)
    assert out.new_papers == [] and out.changed
    shown = (await store.call(paper_repo.window, kw.id))[0]
    assert (shown.arxiv_id, shown.version, shown.title) == (v1.arxiv_id, 2, v2.title)
    assert await pending_rows(store, clock, sub) == []

    fake_arxiv.papers[0] = v1  # a lagging answer with the older version
    out = await poll(store, arxiv_client, clock, kw)
    assert out.new_papers == [] and not out.changed
    shown = (await store.call(paper_repo.window, kw.id))[0]
    assert (shown.version, shown.title) == (2, v2.title)


async def test_window_keeps_the_newest_and_a_trimmed_paper_that_returns_is_not_new(
        store: AsyncStore, arxiv_client: ArxivClient, fake_arxiv: FakeArxiv, clock: Clock,
        kw: Keyword, paper: PaperFactory, add_subscriber: SubscriberFactory):
    first = [paper(days=d) for d in (1, 2, 3, 4, 5)]
    fake_arxiv.add(*first)
    sub = await add_subscriber("telegram", "1", kw)
    await poll(store, arxiv_client, clock, kw, max_papers=5)
    newer = [paper(days=0.1), paper(days=0.2)]
    fake_arxiv.add(*newer)

    out = await poll(store, arxiv_client, clock, kw, max_papers=5)
    assert ids(out.new_papers) == ids(newer)
    kept = [*(p.arxiv_id for p in newer), *(p.arxiv_id for p in first[:3])]
    assert await window_ids(store, kw) == kept

    for p in newer:  # withdrawn: the trimmed papers come back into the answer
        fake_arxiv.papers.remove(p)
    out = await poll(store, arxiv_client, clock, kw, max_papers=5)
    assert out.new_papers == []
    assert ids(await pending_rows(store, clock, sub)) == ids(newer)
    assert await window_ids(store, kw) == kept


async def test_paging_stops_at_the_age_floor(
        store: AsyncStore, arxiv_client: ArxivClient, fake_arxiv: FakeArxiv, clock: Clock,
        kw: Keyword, paper: PaperFactory):
    await poll(store, arxiv_client, clock, kw)  # empty, then confirmed empty: an empty baseline
    clock.advance(timedelta(minutes=10))
    assert (await poll(store, arxiv_client, clock, kw)).baseline
    recent = [paper(days=i / 10) for i in range(1, 13)]
    old = [paper(days=20 + i) for i in range(13)]  # a back catalogue arXiv started listing
    fake_arxiv.add(*recent, *old)

    before = len(fake_arxiv.requests)
    out = await poll(store, arxiv_client, clock, kw, max_papers=10)
    assert [r.params["start"] for r in fake_arxiv.requests[before:]] == ["0", "10"]
    assert ids(out.new_papers) == ids(recent)


async def test_old_style_ids_are_diffed_like_new_ones(
        store: AsyncStore, arxiv_client: ArxivClient, fake_arxiv: FakeArxiv, clock: Clock,
        kw: Keyword, paper: PaperFactory):
    fake_arxiv.add(paper(days=2, arxiv_id="cs/0601001"))
    await poll(store, arxiv_client, clock, kw)
    fresh = paper(days=1, arxiv_id="cs/0601002")
    fake_arxiv.add(fresh)
    out = await poll(store, arxiv_client, clock, kw)
    assert out.new_papers == [fresh]
    assert await window_ids(store, kw) == ["cs/0601002", "cs/0601001"]


async def test_a_changed_query_starts_the_window_afresh(
        store: AsyncStore, arxiv_client: ArxivClient, fake_arxiv: FakeArxiv, clock: Clock,
        kw: Keyword, paper: PaperFactory):
    in_title = paper(days=1)
    in_abstract = paper(days=2, title="A title about something else",
                        abstract=f"We use {KEYWORD} here.")
    fake_arxiv.add(in_title, in_abstract)
    await poll(store, arxiv_client, clock, kw)
    assert await window_ids(store, kw) == [in_title.arxiv_id, in_abstract.arxiv_id]

    await store.call(kw_repo.ensure, kw.display, kw.canonical, f'ti:"{KEYWORD}"', clock.now(),
                     max_keywords=500)
    out = await poll(store, arxiv_client, clock, kw)
    assert out.baseline and out.new_papers == []
    assert await window_ids(store, kw) == [in_title.arxiv_id]
