"""Operability of the real `daily-papers run` process: /healthz, /metrics, the per-cycle log line,
JSON logs, and a SIGTERM that arrives while an arXiv request hangs.

The small helpers at the top are shared by the other reliability suites (faults, lifecycle,
secrets): a free port, a config for the fake arXiv, and plain HTTP reads of the daemon.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from storage.records import Paper
from tests.fakes.arxiv_server import FakeArxiv, Fault
from tests.fakes.daemon import DaemonProcess, free_port, run_cli, write_config
from tests.fakes.smtp_server import FakeSMTP

pytestmark = pytest.mark.slow

KEYWORDS = ("graph neural networks", "protein folding")
LISTENING = r"web server listening on (http://[\w.:-]+)"


# -- shared helpers ---------------------------------------------------------------------------
def paper(n: int, about: str = KEYWORDS[0], *, days: float = 1.0) -> Paper:
    """A paper whose title matches the phrase `about` on the fake arXiv."""
    published = (datetime.now(UTC) - timedelta(days=days, minutes=n)).replace(microsecond=0)
    return Paper(arxiv_id=f"2601.{n:05d}", version=1, title=f"On {about}, part {n}",
                 abstract=f"We study {about} in setting {n}.", authors=("Ada Lovelace",),
                 published=published, updated=published, primary_category="cs.LG",
                 categories=("cs.LG",))


def config_text(fake: FakeArxiv, port: int, *, keywords: tuple[str, ...] = KEYWORDS,
                poll_interval: float = 3600, timeout: float = 5, extra: str = "") -> str:
    """A daemon config against the fake arXiv, fast, with the digest written next to it."""
    return f"""
[arxiv]
api_url = "{fake.url}"
keywords = {json.dumps(list(keywords))}
poll_interval = {poll_interval}
schedule = "interval"
request_interval = 0.02
timeout = {timeout}

[storage]
path = "papers.db"

[web]
host = "127.0.0.1"
port = {port}
public_url = "http://127.0.0.1:{port}"
{extra}
"""


async def get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        return resp.status, await resp.text()


async def health(base: str) -> tuple[int, dict[str, Any]]:
    status, text = await get(f"{base}/healthz")
    return status, json.loads(text)


async def metrics(base: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics as {(name, sorted labels): value}."""
    status, text = await get(f"{base}/metrics")
    assert status == 200
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def sample(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def wait_metric(base: str, name: str, value: float, timeout: float = 20,
                      **labels: str) -> dict:
    """Scrape /metrics until a sample reaches `value` (the daemon commits after the send)."""
    async with asyncio.timeout(timeout):
        while sample(samples := await metrics(base), name, **labels) != value:
            await asyncio.sleep(0.05)
    return samples


async def wait_health(base: str, status: int, timeout: float = 20) -> dict[str, Any]:
    """Ask /healthz until it answers `status` (the daemon's clock is real: time must pass)."""
    async with asyncio.timeout(timeout):
        while True:
            code, body = await health(base)
            if code == status:
                return body
            await asyncio.sleep(0.1)


# -- fixtures ---------------------------------------------------------------------------------
@pytest.fixture
async def fake() -> AsyncIterator[FakeArxiv]:
    async with FakeArxiv() as server:
        server.add(*(paper(n, KEYWORDS[n % 2], days=2 + n) for n in range(1, 7)))
        yield server


# -- /healthz and /metrics --------------------------------------------------------------------
async def test_metrics_move_after_a_cycle_that_found_papers(tmp_path: Path,
                                                            fake: FakeArxiv) -> None:
    port = free_port()
    async with FakeSMTP() as smtp:
        extra = f"""
{smtp.email_table()}[[email.subscribers]]
address = "reader@example.org"
keywords = ["{KEYWORDS[0]}"]
"""
        config = write_config(tmp_path, config_text(fake, port, poll_interval=1, extra=extra))
        async with DaemonProcess(config, "run") as daemon:
            base = (await daemon.wait_for_log(LISTENING)).group(1)
            await daemon.wait_for_log(r"cycle: 2 keywords polled, 2 ok, 0 new papers")
            before = await metrics(base)
            names = {name for name, _ in before}
            for expected in ("daily_papers_arxiv_requests_total",
                             "daily_papers_arxiv_retries_total",
                             "daily_papers_cycle_seconds_count", "daily_papers_papers_stored",
                             "daily_papers_new_papers_total", "daily_papers_outbox_rows",
                             "daily_papers_subscribers"):
                assert expected in names, f"{expected} missing from /metrics"
            for status in ("pending", "sent", "failed"):
                assert ("daily_papers_outbox_rows",
                        (("channel", "email"), ("status", status))) in before
            assert sample(before, "daily_papers_subscribers", channel="email") == 1

            fake.add(paper(50, days=0.1), paper(51, days=0.2))
            await daemon.wait_for_log(r"cycle: .* 2 new papers")
            await smtp.wait_messages(1)
            after = await wait_metric(base, "daily_papers_outbox_rows", 2, channel="email",
                                      status="sent")
    assert sample(after, "daily_papers_new_papers_total") - \
        sample(before, "daily_papers_new_papers_total") == 2
    assert sample(after, "daily_papers_papers_stored") == \
        sample(before, "daily_papers_papers_stored") + 2
    assert sample(after, "daily_papers_arxiv_requests_total", outcome="ok") > \
        sample(before, "daily_papers_arxiv_requests_total", outcome="ok")
    assert sample(after, "daily_papers_cycle_seconds_count") > \
        sample(before, "daily_papers_cycle_seconds_count")
    assert sample(after, "daily_papers_deliveries_total", channel="email", result="sent") == 1
    assert sample(after, "daily_papers_outbox_rows", channel="email", status="sent") == 2
    assert sample(after, "daily_papers_outbox_rows", channel="email", status="pending") == 0
    assert len(smtp.messages) == 1


async def test_healthz_is_200_with_the_facts_then_503_when_the_cycle_is_stale(
        tmp_path: Path, fake: FakeArxiv) -> None:
    port = free_port()
    config = write_config(tmp_path, config_text(fake, port, poll_interval=1, timeout=60))
    async with DaemonProcess(config, "run") as daemon:
        base = (await daemon.wait_for_log(LISTENING)).group(1)
        await daemon.wait_for_log(r"cycle: 2 keywords polled")
        code, body = await health(base)
        assert code == 200, body
        assert body["healthy"] is True
        assert body["version"] and body["uptime_seconds"] >= 0
        assert body["last_cycle"] and body["last_cycle_result"].startswith("cycle: 2 keywords")
        assert body["pending"] == {} and body["failing_keywords"] == []
        assert body["warnings"] == []

        release = asyncio.Event()
        fake.push(Fault("hold", release=release))  # the next cycle hangs in its first request
        body = await wait_health(base, 503)
        assert body["healthy"] is False
        stale = body["last_cycle"]
        release.set()
        body = await wait_health(base, 200)
        assert body["last_cycle"] > stale
        assert await daemon.stop() == 0


async def test_healthz_is_503_while_the_store_cannot_be_written(tmp_path: Path,
                                                                fake: FakeArxiv) -> None:
    port = free_port()
    config = write_config(tmp_path, config_text(fake, port))
    async with DaemonProcess(config, "run") as daemon:
        base = (await daemon.wait_for_log(LISTENING)).group(1)
        await daemon.wait_for_log(r"cycle: 2 keywords polled")
        assert (await health(base))[0] == 200
        other = sqlite3.connect(tmp_path / "papers.db", isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another writer holds the database
        try:
            code, body = await health(base)
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert code == 503 and body["healthy"] is False
        assert body["last_cycle_result"].startswith("cycle: 2 keywords")
        assert (await health(base))[0] == 200
        assert await daemon.stop() == 0
    assert "health check: store not writable: database is locked" in daemon.log


async def test_failing_keywords_show_in_healthz(tmp_path: Path, fake: FakeArxiv) -> None:
    port = free_port()
    fake.push(*[503] * 4)  # every attempt of the first keyword
    config = write_config(tmp_path, config_text(fake, port))
    async with DaemonProcess(config, "run") as daemon:
        base = (await daemon.wait_for_log(LISTENING)).group(1)
        await daemon.wait_for_log(r"cycle: 2 keywords polled, 1 ok")
        code, body = await health(base)
        assert code == 200
        assert body["failing_keywords"] == [KEYWORDS[0]]
        samples = await metrics(base)
        assert sample(samples, "daily_papers_arxiv_requests_total", outcome="http_5xx") == 4
        assert sample(samples, "daily_papers_arxiv_retries_total") == 3
        assert await daemon.stop() == 0


# -- logs -------------------------------------------------------------------------------------
async def test_one_summary_line_per_cycle_and_json_logs(tmp_path: Path,
                                                        fake: FakeArxiv) -> None:
    config = write_config(tmp_path, config_text(fake, free_port()))
    for _ in range(2):
        code, _, err = await run_cli(config, "--log-format", "json", "run", "--once")
        assert code == 0, err
        records = [json.loads(line) for line in err.splitlines()]  # every line is one object
        assert all({"asctime", "levelname", "name", "message"} <= r.keys() for r in records)
        summaries = [r["message"] for r in records if r["message"].startswith("cycle:")]
        assert len(summaries) == 1
        assert "2 keywords polled, 2 ok" in summaries[0] and "failed: none" in summaries[0]
    code, _, err = await run_cli(config, "run", "--once")  # text: one line too, at INFO
    assert code == 0
    summaries = [line for line in err.splitlines() if " cycle: " in line]
    assert len(summaries) == 1 and " INFO " in summaries[0]


# -- SIGTERM ----------------------------------------------------------------------------------
def keyword_state(db_path: Path) -> list[tuple]:
    with sqlite3.connect(db_path) as db:
        return db.execute("""SELECT display, last_poll, last_success, last_total,
                                    (SELECT count(*) FROM keyword_papers p WHERE p.keyword_id = k.id)
                             FROM keywords k ORDER BY id""").fetchall()


async def test_sigterm_during_a_hanging_request_exits_0_and_commits_nothing(
        tmp_path: Path, fake: FakeArxiv) -> None:
    config = write_config(tmp_path, config_text(fake, free_port(), poll_interval=1,
                                                timeout=300))
    async with DaemonProcess(config, "run") as daemon:
        await daemon.wait_for_log(r"cycle: 2 keywords polled, 2 ok")
        seen = len(fake.requests)
        fake.push(Fault("hold"))  # held until the client goes away
        await fake.wait_requests(seen + 1)
        # Read only now: with poll_interval = 1 another cycle may have run since the log line.
        before = keyword_state(tmp_path / "papers.db")
        _, status_before, _ = await run_cli(config, "status")
        fake.add(paper(60, days=0.1))
        assert await daemon.stop(timeout=10) == 0
    assert "stopping" in daemon.log and "Traceback" not in daemon.log
    assert keyword_state(tmp_path / "papers.db") == before
    code, status_after, _ = await run_cli(config, "status")
    assert code == 0 and status_after == status_before
    assert "2601.00060" not in (tmp_path / "README.md").read_text(encoding="utf-8")


async def test_a_store_locked_past_its_busy_timeout_fails_one_cycle_not_the_daemon(
        tmp_path: Path, fake: FakeArxiv) -> None:
    config = write_config(tmp_path, config_text(fake, free_port(), poll_interval=1))
    async with DaemonProcess(config, "run") as daemon:
        base = (await daemon.wait_for_log(LISTENING)).group(1)
        await daemon.wait_for_log(r"cycle: 2 keywords polled, 2 ok")
        fake.add(paper(70, days=0.1))
        other = sqlite3.connect(tmp_path / "papers.db", isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # e.g. a backup tool holding the write lock
        try:
            await daemon.wait_for_log(r"poll cycle stopped, the store refused: "
                                      r"database is locked", timeout=60)
        finally:
            other.execute("ROLLBACK")
            other.close()
        await daemon.wait_for_log(r"cycle: 2 keywords polled, 2 ok, 1 new papers")
        assert (await health(base))[0] == 200
        assert await daemon.stop() == 0
    assert "Traceback" not in daemon.log


# -- what the public server tells -------------------------------------------------------------
def phrase_query(keyword: str) -> str:
    return f'ti:"{keyword}" OR abs:"{keyword}"'


async def test_healthz_names_only_config_keywords_and_metrics_answers_the_operator_only(
        tmp_path: Path, fake: FakeArxiv) -> None:
    """A keyword that exists because someone subscribed is private: a failing one is counted
    in /healthz, never named. /metrics answers loopback clients only unless a bearer token is
    set (tests/test_secrets.py scrapes it with DAILY_PAPERS_METRICS_TOKEN)."""
    private = "codename bluebird"
    fake.rejected_queries[phrase_query(private)] = "unknown field prefix"
    fake.rejected_queries[phrase_query(KEYWORDS[0])] = "unknown field prefix"
    port = free_port()
    config = write_config(tmp_path, config_text(fake, port))
    code, _, err = await run_cli(config, "subscribe", "--telegram", "4242", private)
    assert code == 0, err
    async with DaemonProcess(config, "run") as daemon:
        base = (await daemon.wait_for_log(LISTENING)).group(1)
        await daemon.wait_for_log(r"cycle: 3 keywords polled, 1 ok")
        status, text = await get(f"{base}/healthz")
        body = json.loads(text)
        assert status == 200 and private not in text
        assert body["failing_keywords"] == [KEYWORDS[0]]
        assert body["failing_private_keywords"] == 1
        proxied = {"X-Forwarded-For": "203.0.113.7"}  # through a proxy on this host
        async with (aiohttp.ClientSession() as http,
                    http.get(f"{base}/metrics", headers=proxied) as resp):
            assert resp.status == 403
            assert "DAILY_PAPERS_METRICS_TOKEN" in await resp.text()
        assert (await get(f"{base}/metrics"))[0] == 200
        assert await daemon.stop() == 0


async def test_a_database_file_replaced_or_deleted_under_the_daemon_shows_in_healthz(
        tmp_path: Path, fake: FakeArxiv) -> None:
    """Writes would go on into a file nobody reads again: /healthz says so (503) at once, the
    log says so once (the heartbeat looks every 10 s), and both say when it is over."""
    port = free_port()
    config = write_config(tmp_path, config_text(fake, port))
    db = tmp_path / "papers.db"
    async with DaemonProcess(config, "run") as daemon:
        base = (await daemon.wait_for_log(LISTENING)).group(1)
        await daemon.wait_for_log(r"cycle: 2 keywords polled, 2 ok")
        assert (await health(base))[0] == 200
        aside = tmp_path / "aside.db"
        db.rename(aside)  # deleted or moved away
        code, body = await health(base)
        assert code == 503 and body["healthy"] is False
        assert body["problems"] == [f"the database file {db} was deleted or moved while the "
                                    "daemon runs; what it writes now is lost at the next start: "
                                    "restart it"]
        with sqlite3.connect(db) as restored:  # a restore from a backup over the path
            restored.execute("CREATE TABLE t (x)")
        code, body = await health(base)
        assert code == 503 and "was replaced while the daemon runs" in body["problems"][0]
        await daemon.wait_for_log(r"ERROR .*the database file .* was (deleted|replaced)")
        db.unlink()
        aside.rename(db)  # put back: the open file is the path's again
        assert (await health(base))[0] == 200
        await daemon.wait_for_log(r"the database file is the open one again after \d+ s",
                                  timeout=25)
        assert await daemon.stop() == 0
    assert len([line for line in daemon.lines if "ERROR" in line]) <= 2


# -- slowloris --------------------------------------------------------------------------------
HALF_OPEN = b"GET /healthz HTTP/1.1\r\nHost: daily-papers\r\n"  # the blank line never comes


async def test_half_open_connections_do_not_make_healthz_unreachable(
        tmp_path: Path, fake: FakeArxiv) -> None:
    """Slowloris against the real daemon under a 256-file limit: 300 connections that never
    finish their request head (more than the process could hold). The server keeps at most a
    quarter of its file limit open, closing the oldest idle connection for each new one, and
    closes a head not finished within 10 s, however slowly it trickles in (a body too): /healthz
    answers at once, arXiv polls go on, and the log says so in one line, not one per
    connection."""
    port = free_port()
    config = write_config(tmp_path, config_text(fake, port, poll_interval=1))
    async with DaemonProcess(config, "run", open_files=256) as daemon:
        base = (await daemon.wait_for_log(LISTENING)).group(1)
        await daemon.wait_for_log(r"cycle: 2 keywords polled, 2 ok")
        streams = []
        for _ in range(300):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(HALF_OPEN)
            streams.append((reader, writer))
        trickle = await asyncio.open_connection("127.0.0.1", port)  # the newest stays open
        trickle[1].write(HALF_OPEN)
        slow_post = await asyncio.open_connection("127.0.0.1", port)
        slow_post[1].write(b"POST /healthz HTTP/1.1\r\nHost: daily-papers\r\n"
                           b"Content-Length: 100\r\n\r\n")
        asked = time.monotonic()
        async with asyncio.timeout(60):  # without the cap: never (the process has no fd left)
            code, _ = await health(base)
        answered = time.monotonic() - asked
        assert code == 200
        fds = daemon.open_fds()
        assert fds <= 256 // 4 + 20, fds  # the cap and the daemon's own files
        print(f"\nslowloris: 300 half-open connections, file limit 256: /healthz answered in "
              f"{answered * 1000:.0f} ms; the daemon holds {fds} descriptors (cap 64)")
        await daemon.wait_for_log(r"cycle: 2 keywords polled, 2 ok", after=len(daemon.lines))

        async def closed_by_server(reader: asyncio.StreamReader) -> bool:
            try:
                return await reader.read() == b""
            except ConnectionResetError:  # closed with our unread bytes in its buffer
                return True

        async with asyncio.timeout(60):  # head and body deadlines: 10 s (the machine may be busy)
            for _ in range(10):
                for _, writer in (trickle, slow_post):
                    writer.write(b"X")  # activity does not extend the head or body deadline
                await asyncio.sleep(0.5)
            assert await closed_by_server(trickle[0])
            assert (await slow_post[0].read()).startswith(b"HTTP/1.1 408 Request Timeout")
            assert all(await asyncio.gather(*(closed_by_server(r) for r, _ in streams)))
        for _, writer in [*streams, trickle, slow_post]:
            writer.close()
        assert (await health(base))[0] == 200
        assert await daemon.stop() == 0
    warnings = [line for line in daemon.lines if "connections open, the most allowed" in line]
    assert len(warnings) == 1, warnings
    assert "Traceback" not in daemon.log and "Too many open files" not in daemon.log


def test_the_shipped_unit_starts_after_time_sync() -> None:
    """Newness and retention read the clock: the daemon starts once the clock is synchronised."""
    unit = (Path(__file__).parent.parent / "deploy" / "daily-papers.service").read_text()
    after = [line.split("=", 1)[1].split() for line in unit.splitlines()
             if line.startswith("After=")]
    assert any("time-sync.target" in targets for targets in after)
