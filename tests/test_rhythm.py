"""arXiv's rhythm: the announcement schedule (injected clock, no sleeps), quiet days explained
in status, /healthz and `run --once`, and harvest mode end to end with the real process."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import httpx

from bot.config import ArxivConfig
from bot.faces.web import arxiv_health
from bot.poll import rounds
from bot.poll.calendar import Announcement
from storage import announcements
from storage import keywords as kw_repo
from storage.polls import commit_poll
from storage.records import Paper
from storage.store import Store
from tests.fakes.arxiv_server import FakeArxiv
from tests.fakes.daemon import DaemonProcess, free_port, run_cli, write_config
from tests.fakes.oai_server import FakeOai
from tests.fakes.telegram_server import FakeTelegram

SATURDAY = datetime(2026, 3, 7, 15, 0, tzinfo=UTC)  # 10:00 in New York
THURSDAY = Announcement(date(2026, 3, 5))  # 20:00 EST = 01:00 UTC Friday
SUNDAY = Announcement(date(2026, 3, 8))  # 20:00 EDT (DST began that morning) = 00:00 UTC
TELEGRAM_TOKEN = "123456:RHYTHM-e2e-token"
QUERY = 'ti:"graph neural networks" OR abs:"graph neural networks"'


def store_at(tmp_path: Path) -> Store:
    return Store(tmp_path / "rhythm.db")


def keyword(store: Store, now: datetime, text: str = "graph neural networks"):
    kw, _ = kw_repo.ensure(store.db, text, text, QUERY, now, max_keywords=500)
    kw_repo.set_config_keywords(store.db, {kw.id})
    return kw


def polled(store: Store, kw, when: datetime) -> None:
    paper = Paper(arxiv_id="2603.00001", version=1, title="t", abstract="a", authors=("A",),
                  published=when - timedelta(days=1), updated=when - timedelta(days=1))
    commit_poll(store.db, kw, [paper], baseline=True, now=when, max_papers=100,
                notify_floor=when - timedelta(days=14), total_results=1)


# -- the schedule, decided with an injected clock --------------------------------------------
def test_each_keyword_once_per_announcement_after_the_delay(tmp_path: Path):
    store = store_at(tmp_path)
    arxiv = ArxivConfig(announce_delay=30)
    kw = keyword(store, SATURDAY)
    first = rounds.plan(store.db, arxiv, SATURDAY)
    assert [k.id for k in first.keywords] == [kw.id]  # no baseline yet: at once, any day
    polled(store, kw, SATURDAY)
    quiet = rounds.plan(store.db, arxiv, SATURDAY + timedelta(minutes=1))
    assert quiet.keywords == [] and not quiet.harvest
    assert quiet.wake == SUNDAY.at + timedelta(minutes=30)  # 20:30 New York, after DST
    assert rounds.plan(store.db, arxiv, SUNDAY.at + timedelta(minutes=29)).keywords == []
    due = rounds.plan(store.db, arxiv, SUNDAY.at + timedelta(minutes=30))
    assert [k.id for k in due.keywords] == [kw.id]
    polled(store, kw, SUNDAY.at + timedelta(minutes=31))
    after = rounds.plan(store.db, arxiv, SUNDAY.at + timedelta(hours=5))
    assert after.keywords == [] and after.wake == SUNDAY.following().at + timedelta(minutes=30)
    store.close()


def test_a_failed_poll_is_retried_at_backoff_until_the_next_announcement(tmp_path: Path):
    store = store_at(tmp_path)
    arxiv = ArxivConfig()
    kw = keyword(store, SATURDAY)
    polled(store, kw, SATURDAY)
    start = SUNDAY.at + timedelta(minutes=30)
    kw_repo.record_failure(store.db, kw.id, "HTTP 503", start)
    waiting = rounds.plan(store.db, arxiv, start + timedelta(minutes=1))
    assert waiting.keywords == [] and waiting.wake == start + timedelta(minutes=5)
    assert rounds.plan(store.db, arxiv, start + timedelta(minutes=5)).keywords
    kw_repo.record_failure(store.db, kw.id, "HTTP 503", start + timedelta(minutes=5))
    again = rounds.plan(store.db, arxiv, start + timedelta(minutes=6))
    assert again.wake == start + timedelta(minutes=15)  # 5, then 10 minutes
    store.close()


def test_harvest_waits_for_oai_and_retries_until_the_days_records_appear(tmp_path: Path):
    store = store_at(tmp_path)
    arxiv = ArxivConfig(source="harvest", announce_delay=30)
    kw = keyword(store, SATURDAY)
    polled(store, kw, SATURDAY)  # its baseline came from search; papers now come by harvest
    announcements.record_round(store.db, THURSDAY.key, THURSDAY.at,
                               THURSDAY.at + timedelta(hours=3), reached=True, evidence=900)
    ready = SUNDAY.at + timedelta(minutes=150)  # 22:30 New York
    plan = rounds.plan(store.db, arxiv, SUNDAY.at + timedelta(minutes=31))
    assert not plan.harvest and plan.keywords == [] and plan.wake == ready
    assert rounds.plan(store.db, arxiv, ready).harvest
    announcements.record_round(store.db, SUNDAY.key, SUNDAY.at, ready, reached=True, evidence=0)
    later = rounds.plan(store.db, arxiv, ready + timedelta(minutes=1))
    assert not later.harvest and later.wake == ready + timedelta(minutes=30)
    # no records by 04:30 New York (6 hours on): a day without announcement, no more retries
    announcements.record_round(store.db, SUNDAY.key, SUNDAY.at, ready + timedelta(hours=6),
                               reached=True, evidence=0)
    assert not rounds.plan(store.db, arxiv, ready + timedelta(hours=7)).harvest
    announcements.record_round(store.db, SUNDAY.key, SUNDAY.at, ready + timedelta(minutes=30),
                               reached=True, evidence=800)
    assert not rounds.plan(store.db, arxiv, ready + timedelta(hours=2)).harvest
    store.close()


def test_healthz_arxiv_state_quiet_ok_and_unreachable(tmp_path: Path):
    store = store_at(tmp_path)
    arxiv = ArxivConfig()
    started = THURSDAY.at - timedelta(days=1)
    assert arxiv_health(store, arxiv, SATURDAY, started)["arxiv"] == "quiet"
    announcements.record_round(store.db, THURSDAY.key, THURSDAY.at,
                               THURSDAY.at + timedelta(minutes=30), reached=True, evidence=5)
    friday_night = THURSDAY.at + timedelta(hours=2)
    assert arxiv_health(store, arxiv, friday_night, started)["arxiv"] == "ok"
    # Sunday's and Monday's rounds cannot reach arXiv: two failed scheduled attempts, and
    # more than 6 hours since it last answered
    for a in (SUNDAY, SUNDAY.following()):
        announcements.record_round(store.db, a.key, a.at, a.at + timedelta(minutes=30),
                                   reached=False, evidence=0)
    health = arxiv_health(store, arxiv, SUNDAY.following().at + timedelta(hours=1), started)
    assert health["arxiv"] == "unreachable"
    assert health["arxiv_last_answered"] == (THURSDAY.at + timedelta(minutes=30)).isoformat()
    store.close()


# -- the real process --------------------------------------------------------------------------
def config(fake: FakeArxiv, port: int = 0, keywords: list[str] | None = None,
           extra: str = "") -> str:
    words = json.dumps(keywords or ["graph neural networks"])
    return (f'[arxiv]\napi_url = "{fake.url}"\nrequest_interval = 0\nkeywords = {words}\n'
            f"{extra}\n[web]\nport = {port}\n")


def gnn_paper(n: int, published: datetime) -> Paper:
    return Paper(arxiv_id=f"2603.{n:05d}", version=1, title=f"Graph neural networks {n}",
                 abstract="We study graph neural networks.", authors=("Ada Lovelace",),
                 published=published, updated=published, primary_category="cs.LG",
                 categories=("cs.LG",))


async def test_a_quiet_saturday_sends_nothing_and_says_why(tmp_path: Path):
    env = {"DAILY_PAPERS_NOW": SATURDAY.isoformat(), "TELEGRAM_BOT_TOKEN": TELEGRAM_TOKEN}
    async with FakeArxiv(papers=[gnn_paper(1, THURSDAY.closes - timedelta(hours=3))]) as fake, \
            FakeTelegram(token=TELEGRAM_TOKEN) as telegram:
        cfg = write_config(tmp_path, config(
            fake, extra=f'[telegram]\napi_url = "{telegram.base_url}"'))
        for digest in ("instant", "daily 09:00"):  # a reader of each kind, the digest due
            code, _, err = await run_cli(cfg, "subscribe", "--telegram", f"4{len(digest)}",
                                         "--digest", digest, "--timezone", "America/New_York",
                                         "graph neural networks", env=env)
            assert code == 0, err
        code, out, err = await run_cli(cfg, "run", "--once", env=env)
        assert code == 0, err
        assert "no announcement since Thursday 2026-03-05 20:00 New York time" in out
        assert "the next is Sunday 2026-03-08 20:00 New York time" in out
        code, out, err = await run_cli(cfg, "run", "--once", env=env)  # nothing new: quiet
        assert code == 0 and "0 new papers" in out and "no announcement since" in out
        code, status, _ = await run_cli(cfg, "status", env=env)
    assert telegram.sent == []  # no empty digest, no "nothing today" message
    assert "arXiv announces Sunday to Thursday at 20:00 New York time" in status
    assert "today (Saturday in New York) has no announcement" in status
    assert "next Sunday 20:00 New York time (2026-03-08)" in status


async def test_healthz_on_a_quiet_day_is_200_quiet(tmp_path: Path):
    port = free_port()
    env = {"DAILY_PAPERS_NOW": SATURDAY.isoformat()}
    async with FakeArxiv(papers=[gnn_paper(1, THURSDAY.closes - timedelta(hours=3))]) as fake:
        cfg = write_config(tmp_path, config(fake, port))
        async with DaemonProcess(cfg, env=env) as daemon:
            await daemon.wait_for_log(r"nothing to poll until 2026-03-09 00:30 UTC")
            async with httpx.AsyncClient() as http:
                answer = await http.get(f"http://127.0.0.1:{port}/healthz")
            await daemon.stop()
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["arxiv"] == "quiet" and body["healthy"] is True
    assert body["next_announcement"] == SUNDAY.at.isoformat()
    assert len(fake.requests) == 1  # the new keyword's baseline, nothing else on a Saturday


async def test_harvest_mode_200_keywords_search_once_each_then_only_oai(tmp_path: Path):
    words = [f"topic{n} graph" for n in range(200)]
    monday = Announcement(date(2026, 3, 9))
    before = monday.opens - timedelta(days=3)
    papers = [Paper(arxiv_id=f"2602.{n:05d}", version=1, title=f"Topic{n} graph study",
                    abstract="old", authors=("A B",), published=before, updated=before,
                    primary_category="cs.LG", categories=("cs.LG",)) for n in range(200)]
    extra = ('source = "harvest"\nharvest_sets = ["cs"]\n'
             'oai_url = "{oai}"')
    async with FakeArxiv(papers=papers) as fake, FakeOai(page_size=50) as oai:
        cfg = write_config(tmp_path, config(fake, keywords=words,
                                            extra=extra.format(oai=oai.url)))
        sunday_night = {"DAILY_PAPERS_NOW": (SUNDAY.at + timedelta(hours=3)).isoformat()}
        code, out, err = await run_cli(cfg, "run", "--once", env=sunday_night, timeout=180)
        assert code == 0, err + out
        assert len(fake.requests) == 200  # one baseline request per new keyword
        first_oai = len(oai.requests)
        assert first_oai >= 1
        # Monday's and Tuesday's announcements, while the process was not running
        new = Paper(arxiv_id="2603.10001", version=1, title="Topic7 graph study, new",
                    abstract="new", authors=("C D",), published=monday.opens + timedelta(hours=1),
                    updated=monday.opens + timedelta(hours=1), primary_category="cs.LG",
                    categories=("cs.LG", "cs.AI"))
        later = Paper(arxiv_id="2603.10002", version=1, title="Topic9 graph study, later",
                      abstract="new", authors=("E F",), published=monday.closes + timedelta(hours=2),
                      updated=monday.closes + timedelta(hours=2), primary_category="cs.AI",
                      categories=("cs.AI",))
        replaced = Paper(arxiv_id="2602.00011", version=2, title="Topic11 graph study",
                         abstract="old, replaced", authors=("A B",), published=before,
                         updated=monday.opens + timedelta(hours=2), primary_category="cs.LG",
                         categories=("cs.LG",))
        oai.add(new, (monday.at + timedelta(hours=4)).date())
        oai.add(replaced, (monday.at + timedelta(hours=4)).date())
        oai.add(later, (monday.following().at + timedelta(hours=4)).date())
        wednesday = {"DAILY_PAPERS_NOW": (monday.following().at
                                          + timedelta(hours=6)).isoformat()}
        code, out, err = await run_cli(cfg, "run", "--once", env=wednesday, timeout=180)
        assert code == 0, err + out
        assert len(fake.requests) == 200  # no search request at all: harvest only
        assert oai.requests[first_oai][1]["from"] == (SUNDAY.at + timedelta(hours=3)).date(
        ).isoformat() or oai.requests[first_oai][1]["from"] < (monday.at.date().isoformat())
        assert "harvest: 3 records, 2 new for keywords" in out
        code, status, _ = await run_cli(cfg, "status", env=wednesday)
    assert "source: harvest" in status
    db = Store(tmp_path / "daily-papers.db")
    try:
        windows = {r["display"]: r["n"] for r in db.db.query(
            """SELECT k.display, count(kp.arxiv_id) AS n FROM keywords k
               LEFT JOIN keyword_papers kp ON kp.keyword_id = k.id GROUP BY k.id""")}
    finally:
        db.close()
    assert windows["topic7 graph"] == 2 and windows["topic9 graph"] == 2
    assert windows["topic11 graph"] == 1  # a replacement is not a new paper
