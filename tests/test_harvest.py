"""Harvest mode against the local OAI-PMH server: paging, errors by name, resuming, and what
it writes (seen set, window, outbox) exactly as a search poll would."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import date, timedelta

import pytest

from bot.fetch.arxiv import ArxivClient
from bot.fetch.errors import ArxivUnavailable
from bot.fetch.oai import parse_oai
from bot.poll.harvest import HarvestError, harvest
from bot.poll.keyword import PollSettings, poll_keyword
from storage import harvests, outbox
from storage import keywords as kw_repo
from storage.store import AsyncStore
from tests.conftest import Clock, KeywordFactory, PaperFactory, SubscriberFactory
from tests.fakes.arxiv_server import FakeArxiv
from tests.fakes.oai_server import FakeOai, Fault, in_set

SETTINGS = PollSettings(max_papers=100, notify_max_age_days=14)


@pytest.fixture
async def oai() -> AsyncIterator[FakeOai]:
    async with FakeOai(page_size=3) as server:
        yield server


@pytest.fixture
async def client(fake_arxiv: FakeArxiv) -> AsyncIterator[ArxivClient]:
    async with ArxivClient(fake_arxiv.url, request_interval=0.01, timeout=5,
                           backoff_base=0.001) as c:
        yield c


def today(clock: Clock) -> date:
    return clock.now().date()


async def baselined(store: AsyncStore, client: ArxivClient, clock: Clock, kw) -> object:
    """A keyword's baseline comes from one search request, as in production."""
    await poll_keyword(client, store, kw, SETTINGS, clock.now)
    return await store.call(kw_repo.get, kw.id)


# -- the fake itself -------------------------------------------------------------------------
async def test_fake_pages_with_tokens_and_answers_errors_by_name(oai: FakeOai, paper: PaperFactory,
                                                                   clock: Clock):
    for n in range(7):
        oai.add(paper(days=1, about=f"topic {n}"), today(clock))
    import httpx
    async with httpx.AsyncClient() as http:
        first = parse_oai((await http.get(oai.url, params={
            "verb": "ListRecords", "metadataPrefix": "arXivRaw",
            "from": today(clock).isoformat(), "set": "cs"})).content)
        assert len(first.records) == 3 and first.complete_list_size == 7 and first.token
        second = parse_oai((await http.get(oai.url, params={
            "verb": "ListRecords", "resumptionToken": first.token})).content)
        third = parse_oai((await http.get(oai.url, params={
            "verb": "ListRecords", "resumptionToken": second.token})).content)
        assert (len(second.records), len(third.records), third.token) == (3, 1, None)
        ids = [r.paper.arxiv_id for page in (first, second, third) for r in page.records]
        assert len(set(ids)) == 7
        later = (today(clock) + timedelta(days=1)).isoformat()
        empty = parse_oai((await http.get(oai.url, params={
            "verb": "ListRecords", "metadataPrefix": "arXivRaw", "from": later})).content)
        assert empty.error == "noRecordsMatch"
        oai.expire_tokens()
        expired = parse_oai((await http.get(oai.url, params={
            "verb": "ListRecords", "resumptionToken": first.token})).content)
        assert expired.error == "badResumptionToken"
        bad = parse_oai((await http.get(oai.url, params={
            "verb": "ListRecords", "metadataPrefix": "arXivRaw", "set": "nope"})).content)
        assert bad.error == "badArgument"


def test_sets_group_archive_and_category_count_cross_lists():
    assert in_set("cs", ("stat.ML", "cs.LG"))
    assert in_set("physics:hep-th", ("hep-th",)) and in_set("physics", ("quant-ph",))
    assert in_set("cs:cs:AI", ("cs.AI",)) and not in_set("cs:cs:AI", ("cs.LG",))
    assert not in_set("math", ("cs.LG", "stat.ML"))


# -- harvesting ------------------------------------------------------------------------------
async def test_harvest_writes_seen_set_window_and_outbox_once_per_subscriber(
        store: AsyncStore, client: ArxivClient, fake_arxiv: FakeArxiv, oai: FakeOai,
        paper: PaperFactory, add_keyword: KeywordFactory, add_subscriber: SubscriberFactory,
        clock: Clock):
    old = paper(days=20, about="graph neural networks")
    fake_arxiv.add(old)
    gnn = await add_keyword("graph neural networks", in_config=True)
    nets = await add_keyword("ti:networks")
    sub = await add_subscriber("telegram", "42", gnn, nets)
    gnn = await baselined(store, client, clock, gnn)
    nets = await baselined(store, client, clock, nets)
    searches = len(fake_arxiv.requests)
    clock.advance(timedelta(days=1))
    both = paper(days=0.5, about="graph neural networks")  # matches both keywords
    other = paper(days=0.5, about="protein folding", title="On protein folding")
    for p in (both, other, old):
        oai.add(p, today(clock))
    report = await harvest(client, store, [gnn, nets], oai_url=oai.url, sets=["cs"],
                           settings=SETTINGS, now=clock.now)
    assert len(fake_arxiv.requests) == searches  # after the baselines: OAI only
    assert report.records == 3 and report.pages == 1
    assert {kid: [p.arxiv_id for p in ps] for kid, ps in report.new_papers.items()} == {
        gnn.id: [both.arxiv_id], nets.id: [both.arxiv_id]}
    await store.call(outbox.release, clock.now(), lambda _sub: clock.now())  # cycle's end
    rows = await store.call(lambda db: list(db.query(
        "SELECT arxiv_id, keyword_ids FROM outbox WHERE subscriber_id = ?", [sub.id])))
    assert [r["arxiv_id"] for r in rows] == [both.arxiv_id]  # once, with both keywords
    assert sorted(__import__("json").loads(rows[0]["keyword_ids"])) == sorted([gnn.id, nets.id])
    # a second harvest of the same day (overlap) changes nothing and sends nothing new
    again = await harvest(client, store, [gnn, nets], oai_url=oai.url, sets=["cs"],
                          settings=SETTINGS, now=clock.now)
    assert again.new_papers == {}
    assert await store.call(lambda db: outbox.counts(db))
    assert await store.call(harvests.datestamp, "cs") == today(clock)


async def test_harvest_pages_resume_from_the_datestamp_and_restart_on_a_bad_token(
        store: AsyncStore, client: ArxivClient, fake_arxiv: FakeArxiv, oai: FakeOai,
        paper: PaperFactory, add_keyword: KeywordFactory, clock: Clock):
    fake_arxiv.add(paper(days=30, title="topic before"))  # so the baseline is not empty
    kw = await baselined(store, client, clock, await add_keyword("ti:topic", in_config=True))
    day = today(clock)
    for n in range(5):
        oai.add(paper(days=0.2, about=f"topic {n}", title=f"topic {n}"), day)
    oai.faults = [Fault(503, retry_after="0")]  # the old server's flow control
    report = await harvest(client, store, [kw], oai_url=oai.url, sets=["cs"],
                           settings=SETTINGS, now=clock.now)
    assert report.pages == 2 and len(report.new_papers[kw.id]) == 5
    assert oai.requests[0][1]["from"] == (day - timedelta(days=2)).isoformat()
    assert oai.requests[2][1] == {"verb": "ListRecords",
                                  "resumptionToken": oai.requests[2][1]["resumptionToken"]}
    # next time: from the stored datestamp minus one day
    clock.advance(timedelta(days=1))
    oai.add(paper(days=0.1, about="topic 9", title="topic 9"), today(clock))
    oai.faults = []
    start = len(oai.requests)
    report = await harvest(client, store, [kw], oai_url=oai.url, sets=["cs"],
                           settings=SETTINGS, now=clock.now)
    assert oai.requests[start][1]["from"] == (day - timedelta(days=1)).isoformat()
    assert [p.title for p in report.new_papers[kw.id]] == ["topic 9"]


async def test_a_failed_harvest_keeps_what_it_committed_and_resumes(
        store: AsyncStore, client: ArxivClient, fake_arxiv: FakeArxiv, oai: FakeOai,
        paper: PaperFactory, add_keyword: KeywordFactory, clock: Clock):
    fake_arxiv.add(paper(days=30, title="topic before"))  # so the baseline is not empty
    kw = await baselined(store, client, clock, await add_keyword("ti:topic", in_config=True))
    for n in range(5):
        oai.add(paper(days=0.2, about=f"topic {n}", title=f"topic {n}"), today(clock))
    oai.faults = [None, "broken", "broken", "broken", "broken"]  # page 2 never comes whole
    with pytest.raises((HarvestError, ArxivUnavailable)):
        await harvest(client, store, [kw], oai_url=oai.url, sets=["cs"], settings=SETTINGS,
                      now=clock.now)
    seen = await store.call(lambda db: db.execute(
        "SELECT count(*) FROM keyword_seen WHERE keyword_id = ?", [kw.id]).fetchone()[0])
    assert seen == 1 + 3  # the baseline's paper, then the first page was committed
    report = await harvest(client, store, [kw], oai_url=oai.url, sets=["cs"],
                           settings=SETTINGS, now=clock.now)
    assert len(report.new_papers[kw.id]) == 2  # the rest: nothing lost, nothing twice
    rows = await store.call(lambda db: db.execute("SELECT count(*) FROM outbox").fetchone()[0])
    assert rows == 0  # nobody subscribed: config keywords only feed the digest


async def test_no_records_is_a_quiet_day_not_a_failure(
        store: AsyncStore, client: ArxivClient, oai: FakeOai, add_keyword: KeywordFactory,
        fake_arxiv: FakeArxiv, paper: PaperFactory, clock: Clock):
    fake_arxiv.add(paper(days=30, title="topic before"))  # so the baseline is not empty
    kw = await baselined(store, client, clock, await add_keyword("ti:topic", in_config=True))
    report = await harvest(client, store, [kw], oai_url=oai.url, sets=["cs", "math"],
                           settings=SETTINGS, now=clock.now)
    assert report.quiet_sets == ["cs", "math"] and report.new_papers == {}


def test_a_harvest_page_writes_what_search_polls_of_its_keywords_would_write(
        tmp_path, paper: PaperFactory, clock: Clock):
    """The page is written set by set; the result must be row for row what one search poll
    per matched keyword writes: seen set, windows trimmed to max_papers, keyword state and
    what is owed, with a paper seen before, a paper for two keywords and one too old."""
    from storage.polls import commit_harvest_page, commit_poll
    from storage.store import Store

    now, floor, keep = clock.now(), clock.now() - timedelta(days=14), 3
    old = {t: [paper(days=30 + i, about=t) for i in range(keep)] for t in ("alpha", "beta")}
    seen_again = old["alpha"][0]
    both = paper(days=0.5, about="alpha beta")
    page = {"alpha": [both, paper(days=0.4, about="alpha"), seen_again],
            "beta": [both, *(paper(days=0.1 * i, about="beta") for i in range(1, 5))],
            "gamma": [paper(days=40, about="gamma")]}  # older than the floor: never new
    written = []
    for name in ("harvest", "search"):
        store = Store(tmp_path / f"{name}.db")
        db = store.db
        keywords = {}
        for text in page:
            kw, _ = kw_repo.ensure(db, text, text, f"ti:{text}", now, max_keywords=10)
            commit_poll(db, kw, old.get(text, []), baseline=True, now=now, max_papers=keep,
                        notify_floor=floor, total_results=7)
            keywords[text] = kw_repo.get(db, kw.id)
        matches = {keywords[t]: ps for t, ps in page.items()}
        if name == "harvest":
            new = commit_harvest_page(db, matches, now=now, max_papers=keep, notify_floor=floor,
                                      set_spec="cs", datestamp=None)
        else:
            new = {}
            for kw, ps in matches.items():
                found, _ = commit_poll(db, kw, ps, baseline=False, now=now, max_papers=keep,
                                       notify_floor=floor, total_results=kw.last_total or 0)
                if found:
                    new[kw.id] = found
        tables = {table: sorted(tuple(r) for r in db.conn.execute(f"SELECT * FROM {table}"))
                  for table in ("keyword_seen", "keyword_papers", "keywords", "papers")}
        tables["fanout"] = list(db.conn.execute(
            "SELECT keyword_id, arxiv_id, created_at FROM fanout ORDER BY id"))
        written.append((new, tables))
        store.close()
    (harvested, by_harvest), (searched, by_search) = written
    assert harvested == searched
    assert [p.arxiv_id for p in harvested[1]] == [both.arxiv_id, page["alpha"][1].arxiv_id]
    assert len(harvested[2]) == 5 and 3 not in harvested
    for table, rows in by_search.items():
        assert by_harvest[table] == rows, table
    window = [r for r in by_harvest["keyword_papers"] if r[0] == 2]
    assert len(window) == keep  # beta's window: its 3 newest of 3 old + 5 new
