"""arXiv's known faults, each through the real daemon against the local fake arXiv and SMTP.

Three keywords, polled in config order; alice reads the first, bob the other two. Cycle 1
(`run --once`) takes the baselines; then each keyword gets a new paper and the fault is
programmed; cycle 2 is a `run` daemon (so /healthz can be asked); cycle 3 (`run --once`) must
recover. A persistent fault hits every attempt of the first keyword: its store rows stay as they
were, alice gets nothing, the error shows in `status` and /healthz, and bob still gets the other
keywords' papers. A transient fault hits one attempt: it is retried and the cycle is normal.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.fakes.arxiv_server import FakeArxiv, Fault
from tests.fakes.daemon import DaemonProcess, run_cli, write_config
from tests.fakes.smtp_server import FakeSMTP
from tests.test_operability import LISTENING, config_text, free_port, health, paper

pytestmark = pytest.mark.slow

KEYWORDS = ("graph neural networks", "protein folding", "quantum error correction")
FIRST = KEYWORDS[0]
QUERY = f'ti:"{FIRST}" OR abs:"{FIRST}"'
ALICE, BOB = "alice@example.org", "bob@example.org"
ATTEMPTS = 4  # the client's max_attempts


@dataclass
class World:
    tmp: Path
    arxiv: FakeArxiv
    smtp: FakeSMTP
    config: Path

    @property
    def db(self) -> Path:
        return self.tmp / "papers.db"

    async def once(self) -> str:
        code, out, err = await run_cli(self.config, "run", "--once")
        assert code == 0, out + err
        return err

    async def status(self) -> str:
        code, out, err = await run_cli(self.config, "status")
        assert code == 0, err
        return out

    def add_news(self, first: int) -> list[str]:
        """One new paper per keyword, ids first, first + 1, …; returns the ids."""
        news = [paper(first + i, kw, days=0.1) for i, kw in enumerate(KEYWORDS)]
        self.arxiv.add(*news)
        return [p.arxiv_id for p in news]

    def first_keyword_rows(self) -> dict[str, list[tuple]]:
        """Everything the store holds for the first keyword, plus the outbox."""
        with sqlite3.connect(self.db) as db:
            kid = db.execute("SELECT id FROM keywords WHERE display = ?", [FIRST]).fetchone()[0]
            return {
                "seen": sorted(db.execute("SELECT arxiv_id FROM keyword_seen WHERE keyword_id = ?",
                                          [kid]).fetchall()),
                "window": sorted(db.execute(
                    "SELECT arxiv_id, published FROM keyword_papers WHERE keyword_id = ?",
                    [kid]).fetchall()),
                "baseline": db.execute(
                    "SELECT baseline_query, last_success, last_total FROM keywords WHERE id = ?",
                    [kid]).fetchall(),
                "outbox": sorted(db.execute(
                    """SELECT s.address, o.arxiv_id, o.status FROM outbox o
                       JOIN subscribers s ON s.id = o.subscriber_id""").fetchall()),
            }

    def mail(self, address: str) -> list[str]:
        """Titles mailed to `address`, in order."""
        return [line[2:] for m in self.smtp.messages_to(address)
                for line in m.message.get_body(("plain",)).get_content().splitlines()
                if line.startswith("* On ")]


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    async with FakeArxiv() as arxiv, FakeSMTP() as smtp:
        arxiv.add(*(paper(10 * k + n, kw, days=1 + n)
                    for k, kw in enumerate(KEYWORDS) for n in range(1, 4)))
        extra = f"""
{smtp.email_table()}[[email.subscribers]]
address = "{ALICE}"
keywords = ["{FIRST}"]
[[email.subscribers]]
address = "{BOB}"
keywords = ["{KEYWORDS[1]}", "{KEYWORDS[2]}"]
"""
        config = write_config(tmp_path, config_text(arxiv, free_port(), keywords=KEYWORDS,
                                                    timeout=1, extra=extra))
        w = World(tmp_path, arxiv, smtp, config)
        await w.once()  # cycle 1: baselines, nobody told
        assert smtp.messages == []
        yield w


async def faulted_cycle(w: World, mails: int) -> tuple[str, dict]:
    """Cycle 2 in a `run` daemon: its log and what /healthz said once `mails` messages (in
    all) have arrived."""
    async with DaemonProcess(w.config, "run") as daemon:
        base = (await daemon.wait_for_log(LISTENING)).group(1)
        await daemon.wait_for_log(r"cycle: \d+ keywords polled")
        await w.smtp.wait_messages(mails)
        code, body = await health(base)
        assert code == 200, body  # a failed poll is reported, the service itself is healthy
        assert await daemon.stop() == 0
    return daemon.log, body


PERSISTENT = {
    "429 with Retry-After": Fault(429, retry_after="0"),
    "429 without Retry-After": 429,
    "503": 503,
    "406": 406,
    "500": 500,
    "timeout": "timeout",
    "connection reset": "reset",
    "empty page, totalResults > 0": "empty",
    "short page": "short",
    "unsorted answer": "unsorted",
    "truncated XML": "truncated",
    "HTML Access Denied page": "html",
    "XML entity bomb": "bomb",
    "totalResults 10^30": Fault("tamper", edits={"totalResults": "1" + "0" * 30}),
    "gzip bomb (1 MB → 1 GiB)": "gzip_bomb",
    "endless answer": "endless",
}
EXPECTED_ERROR = {
    "429 with Retry-After": "HTTP 429", "429 without Retry-After": "HTTP 429",
    "503": "HTTP 503", "406": "HTTP 406", "500": "HTTP 500", "timeout": "timeout",
    "connection reset": "connection error", "empty page, totalResults > 0": "short page",
    "short page": "short page", "unsorted answer": "not in descending submission order",
    "truncated XML": "bad answer", "HTML Access Denied page": "bad answer",
    "XML entity bomb": "bad answer", "totalResults 10^30": "bad answer",
    "gzip bomb (1 MB → 1 GiB)": "bad answer: larger than 20 MB",
    "endless answer": "bad answer: larger than 20 MB",
}


@pytest.mark.parametrize("name", list(PERSISTENT))
async def test_a_persistent_fault_changes_nothing_sends_nothing_and_the_next_cycle_recovers(
        world: World, name: str) -> None:
    w = world
    before = w.first_keyword_rows()
    news = w.add_news(100)
    w.arxiv.push(*[PERSISTENT[name]] * ATTEMPTS)

    log, body = await faulted_cycle(w, 1)
    assert f"keyword '{FIRST}': poll failed: " in log
    assert body["failing_keywords"] == [FIRST]
    after = w.first_keyword_rows()
    assert {k: v for k, v in after.items() if k != "outbox"} == \
        {k: v for k, v in before.items() if k != "outbox"}
    assert w.mail(ALICE) == []
    assert sorted(w.mail(BOB)) == sorted(f"On {kw}, part {n}"
                                         for kw, n in zip(KEYWORDS[1:], (101, 102), strict=True))
    assert news[0] not in {row[1] for row in after["outbox"]}
    status = await w.status()
    error_line = status.split(f"  {FIRST}  ", 1)[1].splitlines()[1]
    assert "last error:" in error_line and EXPECTED_ERROR[name] in error_line

    await w.once()  # cycle 3: arXiv is fine again
    assert w.mail(ALICE) == [f"On {FIRST}, part 100"]
    assert len(w.mail(BOB)) == 2
    assert "last error" not in await w.status()


# The same faults once; a honoured Retry-After of 1 s shows the wait is real.
TRANSIENT = {**PERSISTENT, "429 with Retry-After": Fault(429, retry_after="1")}


@pytest.mark.parametrize("name", list(TRANSIENT))
async def test_a_transient_fault_is_retried_and_the_cycle_is_normal(world: World,
                                                                    name: str) -> None:
    w = world
    w.add_news(200)
    w.arxiv.push(TRANSIENT[name])
    sent = len(w.arxiv.requests)
    log = await w.once()
    assert "arXiv request failed" in log and "retry 1 of 3" in log
    assert "failed: none" in log
    first = [r for r in w.arxiv.requests[sent:] if r.params["search_query"] == QUERY]
    assert len(first) == 2  # the fault, then the retry that worked
    assert w.mail(ALICE) == [f"On {FIRST}, part 200"]
    assert len(w.mail(BOB)) == 2
    assert "last error" not in await w.status()


# Values no record can hold: each once crashed `run` with an OverflowError, at every restart.
BAD_ENTRY = {
    "published in year 9999 west of UTC": ("published", "9999-12-31T23:59:59-01:00"),
    "published in year 1 east of UTC": ("published", "0001-01-01T00:00:00+01:00"),
    "version 10^20": ("id", "http://arxiv.org/abs/2601.00999v100000000000000000000"),
}


@pytest.mark.parametrize("name", list(BAD_ENTRY))
async def test_an_entry_out_of_range_is_dropped_and_the_daemon_goes_on(world: World,
                                                                       name: str) -> None:
    w = world
    w.add_news(500)
    w.arxiv.add(paper(999, FIRST, days=0.05))
    element, text = BAD_ENTRY[name]
    w.arxiv.push(Fault("tamper", edits={f"2601.00999 {element}": text}))

    log, body = await faulted_cycle(w, 2)
    assert "arXiv entry dropped: 2601.00999" in log
    assert body["failing_keywords"] == []
    assert w.mail(ALICE) == [f"On {FIRST}, part 500"]
    assert len(w.mail(BOB)) == 2
    assert "last error" not in await w.status()


async def test_an_error_feed_rejects_the_keyword_and_the_others_go_on(world: World) -> None:
    w = world
    before = w.first_keyword_rows()
    w.add_news(300)
    w.arxiv.rejected_queries[QUERY] = "unknown field prefix"
    sent = len(w.arxiv.requests)

    log, body = await faulted_cycle(w, 2)
    first = [r for r in w.arxiv.requests[sent:] if r.params["search_query"] == QUERY]
    assert len(first) == 1  # HTTP 400 with an error feed is final: no retry
    assert "arXiv rejected the query: unknown field prefix" in log
    assert body["failing_keywords"] == [FIRST]
    assert {k: v for k, v in w.first_keyword_rows().items() if k != "outbox"} == \
        {k: v for k, v in before.items() if k != "outbox"}
    assert len(w.mail(BOB)) == 2
    notes = w.smtp.messages_to(ALICE)  # told once, in a note, no papers
    assert len(notes) == 1 and w.mail(ALICE) == []
    assert "unknown field prefix" in notes[0].message.get_body(("plain",)).get_content()
    assert "arXiv rejected the query: unknown field prefix" in await w.status()

    sent = len(w.arxiv.requests)
    await w.once()  # not polled again until the keyword changes; no second note
    assert all(r.params["search_query"] != QUERY for r in w.arxiv.requests[sent:])
    assert len(w.smtp.messages_to(ALICE)) == 1
    readme = (w.tmp / "README.md").read_text(encoding="utf-8")
    assert "unknown field prefix" in readme and f"On {FIRST}, part 1" in readme


async def test_a_total_outage_trips_the_breaker_and_the_next_cycle_starts_over(
        world: World) -> None:
    w = world
    w.add_news(400)
    w.arxiv.push(*[503] * 50)
    sent = len(w.arxiv.requests)

    log, body = await faulted_cycle(w, 0)
    assert len(w.arxiv.requests) - sent == 5  # the breaker opens after 5 failed requests
    assert "stopped early: arXiv unavailable" in log
    assert "1 keywords left for next cycle" in log
    assert body["failing_keywords"] == list(KEYWORDS[:2])
    assert w.smtp.messages == []
    status = await w.status()
    assert status.count("last error: arXiv unavailable") == 1  # the keyword that tripped it
    assert status.count("last error: HTTP 503") == 1

    w.arxiv.faults.clear()
    await w.once()
    assert w.mail(ALICE) == [f"On {FIRST}, part 400"]
    assert len(w.mail(BOB)) == 2
    assert "last error" not in await w.status()
