"""One poll cycle against the local fake arXiv: which keywords are polled, failures recorded and
survived, the circuit breaker, and the outbox rows a cycle leaves for the dispatcher."""

from __future__ import annotations

import dataclasses
from collections import Counter
from datetime import datetime, timedelta

import pytest

from bot.config import ArxivConfig, Config
from bot.fetch.arxiv import ArxivClient
from bot.poll.cycle import UNAVAILABLE, CycleReport, run_cycle
from bot.poll.keyword import PollSettings
from bot.render.job import digest_sections
from storage import keywords as kw_repo
from storage import outbox, retention
from storage import papers as paper_repo
from storage import subscribers as sub_repo
from storage.records import Keyword, OutboxRow, Subscriber
from storage.store import AsyncStore
from tests.conftest import Clock, KeywordFactory, PaperFactory, SubscriberFactory, sent_papers
from tests.fakes.arxiv_server import FakeArxiv

SETTINGS = PollSettings(max_papers=10, notify_max_age_days=14)
ATTEMPTS = 4  # the client's default max_attempts


async def cycle(store: AsyncStore, client: ArxivClient, clock: Clock, **kwargs: object
                ) -> CycleReport:
    """A cycle with instant delivery: rows become due when it ends."""
    return await run_cycle(client, store, SETTINGS, clock.now, lambda _sub: clock.now(),
                           **kwargs)  # type: ignore[arg-type]


async def due(store: AsyncStore, clock: Clock, sub: Subscriber) -> list[OutboxRow]:
    return await store.call(outbox.due_rows, sub.id, clock.now())


async def fresh(store: AsyncStore, kw: Keyword) -> Keyword:
    current = await store.call(kw_repo.get, kw.id)
    assert current is not None
    return current


def queries(fake: FakeArxiv, since: int = 0) -> Counter[str]:
    return Counter(r.params["search_query"] for r in fake.requests[since:])


# -- which keywords are polled ----------------------------------------------------------------
async def test_each_watched_keyword_is_polled_once_however_many_subscribers(
        store: AsyncStore, arxiv_client: ArxivClient, fake_arxiv: FakeArxiv, clock: Clock,
        paper: PaperFactory, add_keyword: KeywordFactory, add_subscriber: SubscriberFactory):
    fake_arxiv.add(paper(), paper(about="message passing"), paper(about="dormant topic"))
    curated = await add_keyword("graph neural networks", in_config=True)
    same = await add_keyword("Graph  Neural Networks")  # same identity as the curated one
    assert same.id == curated.id
    passing = await add_keyword("message passing")
    for address in ("1", "2", "3"):
        await add_subscriber("telegram", address, same, passing)
    await add_subscriber("slack", "C1", passing)
    await add_subscriber("email", "a@example.org", curated)
    dormant = await add_keyword("dormant topic")  # in neither config nor a subscription
    lapsed = await add_keyword("lapsed topic")
    gone = await add_subscriber("telegram", "9", lapsed)
    await store.call(sub_repo.deactivate, gone.id, "blocked the bot")

    report = await cycle(store, arxiv_client, clock)
    assert queries(fake_arxiv) == {curated.query: 1, passing.query: 1}
    assert [o.keyword.id for o in report.outcomes] == [curated.id, passing.id]
    assert (await fresh(store, dormant)).last_poll is None
    assert (await fresh(store, lapsed)).last_poll is None

    sent = len(fake_arxiv.requests)
    await cycle(store, arxiv_client, clock)
    assert queries(fake_arxiv, sent) == {curated.query: 1, passing.query: 1}


# -- failures are recorded, nothing is sent, the next cycle recovers --------------------------
async def test_answers_ignoring_the_sort_order_send_nothing_until_arxiv_recovers(
        store: AsyncStore, arxiv_client: ArxivClient, fake_arxiv: FakeArxiv, clock: Clock,
        paper: PaperFactory, add_keyword: KeywordFactory, add_subscriber: SubscriberFactory):
    kw = await add_keyword("graph neural networks", in_config=True)
    sub = await add_subscriber("telegram", "1", kw)
    fake_arxiv.add(*(paper(days=d) for d in (1, 2, 3)))
    await cycle(store, arxiv_client, clock)
    news = [paper(days=0.2), paper(days=0.1)]
    fake_arxiv.add(*news)
    window = await store.call(paper_repo.window, kw.id)
    baseline_at = clock.now()
    clock.advance(timedelta(hours=1))

    fake_arxiv.push(*["unsorted"] * ATTEMPTS)  # every answer of this cycle is unsorted
    report = await cycle(store, arxiv_client, clock)
    assert [o.keyword.id for o in report.failed] == [kw.id]
    assert report.new_papers == 0 and report.released == 0 and not report.changed
    failed = await fresh(store, kw)
    assert failed.last_error is not None and "descending submission order" in failed.last_error
    assert failed.consecutive_failures == 1
    assert (failed.last_poll, failed.last_success) == (clock.now(), baseline_at)
    assert await store.call(paper_repo.window, kw.id) == window
    assert await due(store, clock, sub) == []

    report = await cycle(store, arxiv_client, clock)
    assert report.failed == [] and report.new_papers == 2 and report.released == 2
    assert {r.paper.arxiv_id for r in await due(store, clock, sub)} == {
        p.arxiv_id for p in news}
    recovered = await fresh(store, kw)
    assert recovered.last_error is None and recovered.consecutive_failures == 0


async def test_error_feed_rejects_the_keyword_once_and_keeps_its_digest_rows(
        store: AsyncStore, arxiv_client: ArxivClient, fake_arxiv: FakeArxiv, clock: Clock,
        paper: PaperFactory, add_keyword: KeywordFactory):
    bad = await add_keyword("graph neural networks", in_config=True)
    good = await add_keyword("message passing", in_config=True)
    fake_arxiv.add(paper(days=1), paper(days=2), paper(days=1, about="message passing"))
    await cycle(store, arxiv_client, clock)
    window = await store.call(paper_repo.window, bad.id)
    assert len(window) == 2

    told: list[tuple[str, str]] = []

    async def on_rejected(kw: Keyword, message: str) -> None:
        told.append((kw.display, message))

    fake_arxiv.rejected_queries[bad.query] = "unbalanced parentheses in query"
    report = await cycle(store, arxiv_client, clock, on_rejected=on_rejected)
    assert told == [(bad.display, "unbalanced parentheses in query")]
    assert report.changed  # the digest must show arXiv's note
    assert [o.keyword.id for o in report.failed] == [bad.id] and report.failed[0].rejected
    assert [o.keyword.id for o in report.completed] == [good.id]
    rejected = await fresh(store, bad)
    assert rejected.rejected == "unbalanced parentheses in query"
    assert [k.id for k in await store.call(kw_repo.to_poll)] == [good.id]

    sent = len(fake_arxiv.requests)
    report = await cycle(store, arxiv_client, clock, on_rejected=on_rejected)
    assert queries(fake_arxiv, sent) == {good.query: 1}
    assert len(told) == 1

    cfg = Config(arxiv=ArxivConfig(keywords=["graph neural networks", "message passing"]))
    sections = await store.run(lambda s: digest_sections(s, cfg))
    assert sections[0].keyword == bad.display
    assert sections[0].papers == window
    assert sections[0].note == "unbalanced parentheses in query"
    assert sections[1].note is None


async def test_an_unexpected_error_in_one_keywords_poll_is_its_failure_and_the_cycle_goes_on(
        store: AsyncStore, arxiv_client: ArxivClient, fake_arxiv: FakeArxiv, clock: Clock,
        paper: PaperFactory, add_keyword: KeywordFactory, add_subscriber: SubscriberFactory):
    broken = await add_keyword("graph neural networks", in_config=True)
    good = await add_keyword("message passing", in_config=True)
    sub = await add_subscriber("telegram", "1", broken, good)
    fake_arxiv.add(paper(days=2), paper(days=2, about=good.display))
    await cycle(store, arxiv_client, clock)
    refused = paper(days=0.1, arxiv_id="2601.09999")
    news = paper(days=0.1, about=good.display)
    fake_arxiv.add(refused, news)
    # Something no handler foresaw, raised while the first keyword commits (here SQLite's
    # IntegrityError from a trigger; in the wild an OverflowError from a value out of range).
    await store.run(lambda s: s.db.execute(
        """CREATE TRIGGER refuse BEFORE INSERT ON keyword_seen WHEN NEW.arxiv_id = '2601.09999'
           BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"""))
    clock.advance(timedelta(hours=1))

    report = await cycle(store, arxiv_client, clock)
    assert [o.keyword.id for o in report.failed] == [broken.id]
    assert [o.keyword.id for o in report.completed] == [good.id]
    assert [r.paper.arxiv_id for r in await due(store, clock, sub)] == [news.arxiv_id]
    failed = await fresh(store, broken)
    assert failed.last_error == "internal error: IntegrityError: refused by the test"
    assert failed.consecutive_failures == 1 and failed.last_poll == clock.now()
    assert refused.arxiv_id not in {p.arxiv_id for p in
                                    await store.call(paper_repo.window, broken.id)}

    await store.run(lambda s: s.db.execute("DROP TRIGGER refuse"))
    report = await cycle(store, arxiv_client, clock)
    assert report.failed == [] and report.new_papers == 1


async def test_five_failed_requests_stop_the_cycle_and_the_next_starts_over(
        store: AsyncStore, arxiv_client: ArxivClient, fake_arxiv: FakeArxiv, clock: Clock,
        paper: PaperFactory, add_keyword: KeywordFactory):
    topics = ("graph neural networks", "message passing", "attention pooling")
    kws = [await add_keyword(t, in_config=True) for t in topics]
    fake_arxiv.add(*(paper(about=t) for t in topics))

    fake_arxiv.push(*[503] * 5)
    report = await cycle(store, arxiv_client, clock)
    assert len(fake_arxiv.requests) == 5
    assert report.stopped_early is not None and UNAVAILABLE in report.stopped_early
    assert [o.keyword.id for o in report.outcomes] == [kws[0].id, kws[1].id]
    first, second, third = [await fresh(store, k) for k in kws]
    assert first.last_error is not None and "503" in first.last_error
    assert second.last_error is not None and second.last_error.startswith(UNAVAILABLE)
    assert second.last_error.count(UNAVAILABLE) == 1  # status shows it once
    assert first.consecutive_failures == second.consecutive_failures == 1
    assert third.last_poll is None and third.last_error is None
    assert UNAVAILABLE in report.summary()

    sent = len(fake_arxiv.requests)
    report = await cycle(store, arxiv_client, clock)
    assert report.stopped_early is None and report.failed == []
    assert [r.params["search_query"] for r in fake_arxiv.requests[sent:]] == [
        k.query for k in kws]
    for k in kws:
        assert (await fresh(store, k)).last_success == clock.now()


# -- the outbox rows a cycle leaves -----------------------------------------------------------
async def test_two_keywords_of_one_subscriber_give_one_row_and_a_sent_row_never_changes(
        store: AsyncStore, arxiv_client: ArxivClient, fake_arxiv: FakeArxiv, clock: Clock,
        paper: PaperFactory, add_keyword: KeywordFactory, add_subscriber: SubscriberFactory):
    gnn = await add_keyword("graph neural networks")
    mp = await add_keyword("message passing")
    pooling = await add_keyword("attention pooling")
    both = await add_subscriber("telegram", "1", gnn, mp, pooling)
    other = await add_subscriber("slack", "C1", pooling)
    fake_arxiv.add(*(paper(days=2, about=k.display) for k in (gnn, mp, pooling)))
    await cycle(store, arxiv_client, clock)  # baselines

    hit = paper(days=0.1, title="Message passing graph neural networks",
                abstract="A plain abstract.")
    fake_arxiv.add(hit)
    report = await cycle(store, arxiv_client, clock)
    assert report.released == 1
    [row] = await due(store, clock, both)
    assert row.paper.arxiv_id == hit.arxiv_id
    assert row.keywords == (gnn.display, mp.display)
    await store.call(outbox.mark_sent, [row.id], clock.now())

    # v2 adds words that make it match a third keyword of the same subscriber
    fake_arxiv.papers[-1] = dataclasses.replace(
        hit, version=2, abstract="A plain abstract with attention pooling.")
    report = await cycle(store, arxiv_client, clock)
    by_kw = {o.keyword.id: [p.arxiv_id for p in o.new_papers] for o in report.outcomes}
    assert by_kw[pooling.id] == [hit.arxiv_id]  # new for the keyword...
    assert await due(store, clock, both) == []  # ...but this subscriber was told already
    assert await store.call(sent_papers, both.id) == [hit.arxiv_id]
    assert [r.paper.arxiv_id for r in await due(store, clock, other)] == [hit.arxiv_id]
    assert report.released == 1


async def test_unsubscribe_and_deactivate_clear_pending_rows(
        store: AsyncStore, arxiv_client: ArxivClient, fake_arxiv: FakeArxiv, clock: Clock,
        paper: PaperFactory, add_keyword: KeywordFactory, add_subscriber: SubscriberFactory):
    gnn = await add_keyword("graph neural networks")
    mp = await add_keyword("message passing")
    sub = await add_subscriber("telegram", "1", gnn, mp)
    fake_arxiv.add(paper(days=2, about=gnn.display), paper(days=2, about=mp.display))
    await cycle(store, arxiv_client, clock)
    both = paper(days=0.1, title="Message passing graph neural networks")
    only_gnn = paper(days=0.2, about=gnn.display)
    only_mp = paper(days=0.3, about=mp.display)
    fake_arxiv.add(both, only_gnn, only_mp)
    await cycle(store, arxiv_client, clock)
    rows = {r.paper.arxiv_id: r.keywords for r in await due(store, clock, sub)}
    assert rows == {both.arxiv_id: (gnn.display, mp.display), only_gnn.arxiv_id: (gnn.display,),
                    only_mp.arxiv_id: (mp.display,)}

    await store.call(sub_repo.unsubscribe, sub, gnn, clock.now())
    rows = {r.paper.arxiv_id: r.keywords for r in await due(store, clock, sub)}
    assert rows == {both.arxiv_id: (mp.display,), only_mp.arxiv_id: (mp.display,)}

    await store.call(sub_repo.deactivate, sub.id, "blocked the bot")
    assert await due(store, clock, sub) == []
    assert await store.call(outbox.counts) == {}


async def test_rows_wait_for_the_digest_time_of_daily_subscribers(
        store: AsyncStore, arxiv_client: ArxivClient, fake_arxiv: FakeArxiv, clock: Clock,
        paper: PaperFactory, add_keyword: KeywordFactory, add_subscriber: SubscriberFactory):
    kw = await add_keyword("graph neural networks")
    sub = await add_subscriber("email", "a@example.org", kw)
    fake_arxiv.add(paper(days=2))
    await cycle(store, arxiv_client, clock)
    fake_arxiv.add(paper(days=0.1))
    digest_at: dict[int, datetime] = {sub.id: clock.now() + timedelta(hours=20)}
    report = await run_cycle(arxiv_client, store, SETTINGS, clock.now,
                             lambda s: digest_at[s.id])
    assert report.released == 1
    assert await due(store, clock, sub) == []
    assert len(await store.call(outbox.due_rows, sub.id, digest_at[sub.id])) == 1


async def test_a_cycle_without_news_changes_nothing(
        store: AsyncStore, arxiv_client: ArxivClient, fake_arxiv: FakeArxiv,
        clock: Clock, paper: PaperFactory, add_keyword: KeywordFactory,
        add_subscriber: SubscriberFactory):
    kw = await add_keyword("graph neural networks", in_config=True)
    await add_subscriber("telegram", "1", kw)
    fake_arxiv.add(paper(days=1))
    assert (await cycle(store, arxiv_client, clock)).changed
    report = await cycle(store, arxiv_client, clock)
    assert not report.changed and report.new_papers == 0 and report.released == 0


# -- a wrong local clock: arXiv's (HTTP Date) decides newness, retention never follows a jump ---
async def test_a_clock_far_ahead_during_a_failing_cycle_prunes_nothing_and_resends_nothing(
        store: AsyncStore, arxiv_client: ArxivClient, fake_arxiv: FakeArxiv, clock: Clock,
        paper: PaperFactory, add_keyword: KeywordFactory, add_subscriber: SubscriberFactory):
    kw = await add_keyword("graph neural networks", in_config=True)
    sub = await add_subscriber("telegram", "1", kw)
    fake_arxiv.add(*(paper(days=d) for d in (1, 2, 3)))
    await cycle(store, arxiv_client, clock)
    fake_arxiv.add(paper(days=0.1))
    await cycle(store, arxiv_client, clock)
    [row] = await due(store, clock, sub)
    await store.call(outbox.mark_sent, [row.id], clock.now())

    ahead = Clock(clock.now() + timedelta(days=100))  # ours; arXiv's stays right
    fake_arxiv.push(*[503] * ATTEMPTS)
    report = await run_cycle(arxiv_client, store, SETTINGS, ahead.now, lambda _sub: ahead.now())
    assert [o.keyword.id for o in report.failed] == [kw.id]
    pruned = await store.call(retention.prune, ahead.now())  # what the daemon does next
    assert (pruned.seen, pruned.outbox) == (0, 0)

    clock.advance(timedelta(hours=1))  # the clock is fixed
    report = await cycle(store, arxiv_client, clock)
    assert report.failed == [] and report.new_papers == 0
    assert await due(store, clock, sub) == []
    kept = await store.run(lambda s: list(s.db.query(
        "SELECT arxiv_id, status FROM outbox WHERE subscriber_id = ?", [sub.id])))
    assert kept == [{"arxiv_id": row.paper.arxiv_id, "status": "sent"}]


async def test_a_clock_far_ahead_during_a_good_cycle_judges_newness_by_arxivs_clock(
        store: AsyncStore, arxiv_client: ArxivClient, fake_arxiv: FakeArxiv, clock: Clock,
        paper: PaperFactory, add_keyword: KeywordFactory, add_subscriber: SubscriberFactory,
        caplog: pytest.LogCaptureFixture):
    kw = await add_keyword("graph neural networks", in_config=True)
    sub = await add_subscriber("telegram", "1", kw)
    fake_arxiv.add(*(paper(days=d) for d in (1, 2, 3)))
    await cycle(store, arxiv_client, clock)
    news = paper(days=0.1)
    fake_arxiv.add(news)

    ahead = Clock(clock.now() + timedelta(days=100))
    report = await run_cycle(arxiv_client, store, SETTINGS, ahead.now, lambda _sub: ahead.now())
    assert report.new_papers == 1 and not report.outcomes[0].baseline  # not "100 days stale"
    assert [r.paper.arxiv_id for r in await due(store, ahead, sub)] == [news.arxiv_id]
    polled = await fresh(store, kw)
    assert polled.last_success is not None
    assert abs(polled.last_success - clock.now()) < timedelta(minutes=5)  # arXiv's time
    assert "our clock is 100.0 days ahead of arXiv's" in caplog.text


async def test_a_stale_clock_at_boot_does_not_make_a_month_of_papers_new(
        store: AsyncStore, arxiv_client: ArxivClient, fake_arxiv: FakeArxiv, clock: Clock,
        paper: PaperFactory, add_keyword: KeywordFactory, add_subscriber: SubscriberFactory):
    kw = await add_keyword("graph neural networks", in_config=True)
    sub = await add_subscriber("telegram", "1", kw)
    fake_arxiv.add(*(paper(days=d) for d in (1, 2, 3)))
    await cycle(store, arxiv_client, clock)
    news = paper(days=0.1)
    back_catalogue = [paper(days=20 + d) for d in range(8)]  # unseen, 20-27 days old
    fake_arxiv.add(news, *back_catalogue)

    behind = Clock(clock.now() - timedelta(days=30))
    report = await run_cycle(arxiv_client, store, SETTINGS, behind.now,
                             lambda _sub: behind.now())
    assert [p.arxiv_id for o in report.outcomes for p in o.new_papers] == [news.arxiv_id]
    assert [r.paper.arxiv_id for r in await due(store, clock, sub)] == [news.arxiv_id]
