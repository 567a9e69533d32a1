"""Benchmark of the fan-out: one keyword with 10,000 subscribers gets 100 new papers (1,000,000
outbox rows), which once took one ~20 s transaction that held the writer.

Run from the repository root: `python -m bench.bench_fanout [--subscribers N] [--rss N ...]`.
(a) In-process: the poll's transaction and every expansion batch (count, median, max, total).
(b) The real `daily-papers run` process during the fan-out: p99 of a Slack command's ack and of
    /healthz, asked every 0.2 s each (goal ≤ 1 s), then a SIGTERM in the middle of a second
    fan-out: the time to exit (goal ≤ 10 s). Before: 10 of 11 commands got bolt's 404,
    /healthz took 10 s, SIGTERM 23.6 s.
(c) The daemon's peak RSS (VmHWM) with N Telegram subscribers through the fan-out and the first
    60 s of the send-out, Telegram's real limits (goal ≤ 120 MB at 10,000; 155 MB before).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp

from bot.fetch.keywords import parse_keyword
from storage import fanout, polls
from storage import keywords as kw_repo
from storage import subscribers as sub_repo
from storage.database import write
from storage.records import Keyword, Paper
from storage.store import Store
from tests.fakes.arxiv_server import FakeArxiv
from tests.fakes.daemon import DaemonProcess, write_config
from tests.fakes.slack_server import FakeSlack
from tests.fakes.telegram_server import FakeTelegram

KEYWORD = "video anomaly detection"
SECRET = "bench-signing-secret-0123456789abcdef"
TOKEN = "123456:BENCH"
CHANNEL = "C0BENCH01"
ASK_EVERY = 0.2  # seconds between two Slack commands, and between two /healthz


def _paper(n: int, published: datetime) -> Paper:
    """Lengths as on arXiv: ~90-character titles, ~1,200-character abstracts."""
    title = f"Video anomaly detection with foundation models, part {n}: a benchmark study"
    return Paper(arxiv_id=f"2511.{n:05d}", version=1, title=title,
                 abstract=("We study video anomaly detection and propose a method. " * 22),
                 authors=tuple(f"Author{i} Surname{i}" for i in range(1, 7)),
                 published=published, updated=published, primary_category="cs.CV",
                 categories=("cs.CV",))


def corpus(now: datetime, papers: int) -> tuple[list[Paper], list[Paper]]:
    old = [_paper(i, now - timedelta(days=2, minutes=i)) for i in range(1, 101)]
    new = [_paper(1000 + i, now - timedelta(hours=1, minutes=i)) for i in range(papers)]
    return old, new


def seed(path: Path, subscribers: int, old: list[Paper], now: datetime) -> Keyword:
    """The keyword with its baseline taken, followed by `subscribers` Telegram chats."""
    store = Store(path)
    db = store.db
    parsed = parse_keyword(KEYWORD)
    kw, _ = kw_repo.ensure(db, parsed.display, parsed.canonical, parsed.query, now,
                           max_keywords=10)
    kw_repo.set_config_keywords(db, {kw.id})
    with write(db):
        for n in range(subscribers):
            sub = sub_repo.ensure(db, "telegram", str(10_000_000 + n), now)
            sub_repo.subscribe(db, sub, kw, "user", now)
    polls.commit_poll(db, kw, old, baseline=True, now=now, max_papers=100,
                      notify_floor=now - timedelta(days=14), total_results=len(old))
    kw = kw_repo.get(db, kw.id)
    store.close()
    assert kw is not None
    return kw


# -- (a) the transactions --------------------------------------------------------------------


def bench_transactions(workdir: Path, subscribers: int, papers: int) -> dict[str, float]:
    now = datetime.now(UTC)
    old, new = corpus(now, papers)
    path = workdir / "a.db"
    kw = seed(path, subscribers, old, now)
    store = Store(path)
    t0 = time.perf_counter()
    polls.commit_poll(store.db, kw, new + old, baseline=False, now=now, max_papers=100,
                      notify_floor=now - timedelta(days=14), total_results=len(old) + papers)
    poll_ms = (time.perf_counter() - t0) * 1000
    batches: list[float] = []
    written = 0
    cpu = time.process_time()
    while True:
        t0 = time.perf_counter()
        batch = fanout.expand(store.db, lambda _sub: now)
        batches.append((time.perf_counter() - t0) * 1000)
        written += batch.written
        if not batch.more:
            break
    cpu = time.process_time() - cpu
    store.close()
    return {"poll_ms": poll_ms, "batches": len(batches), "rows": written,
            "median_ms": statistics.median(batches), "max_ms": max(batches),
            "total_s": sum(batches) / 1000, "cpu_us_per_row": cpu / max(written, 1) * 1e6}


# -- (b) the daemon during the fan-out -------------------------------------------------------


def daemon_config(workdir: Path, arxiv: FakeArxiv, port: int, *, slack: FakeSlack | None = None,
                  telegram: FakeTelegram | None = None) -> Path:
    sections = [f"""
[arxiv]
api_url = "{arxiv.url}"
keywords = ["{KEYWORD}"]
poll_interval = 3600
schedule = "interval"
request_interval = 0
timeout = 30

[storage]
path = "papers.db"

[digest]
path = ""

[web]
host = "127.0.0.1"
port = {port}
public_url = "http://127.0.0.1:{port}"
"""]
    if slack is not None:
        sections.append(f'[slack]\napi_url = "{slack.api_url}"\n')
    if telegram is not None:
        sections.append(f'[telegram]\napi_url = "{telegram.base_url}"\n')
    return write_config(workdir, "\n".join(sections))


async def _timed(ask: Callable[[], Awaitable[int]], times: list[float], codes: list[int],
                 stop: asyncio.Event) -> None:
    """Ask every ASK_EVERY s (each in its own task, as separate clients would) until `stop`."""
    pending: set[asyncio.Task[None]] = set()

    async def one() -> None:
        t0 = time.perf_counter()
        codes.append(await ask())
        times.append(time.perf_counter() - t0)

    while not stop.is_set():
        task = asyncio.create_task(one())
        pending.add(task)
        task.add_done_callback(pending.discard)
        await asyncio.sleep(ASK_EVERY)
    await asyncio.gather(*pending)


async def bench_daemon(workdir: Path, subscribers: int, papers: int) -> dict[str, object]:
    now = datetime.now(UTC)
    old, new = corpus(now, papers)
    seed(workdir / "papers.db", subscribers, old, now)
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    async with FakeArxiv(papers=old + new) as arxiv, FakeSlack() as slack, \
            aiohttp.ClientSession() as http:
        config = daemon_config(workdir, arxiv, port, slack=slack)
        env = {"SLACK_BOT_TOKEN": slack.bot_token, "SLACK_SIGNING_SECRET": SECRET}
        async with DaemonProcess(config, "run", env=env) as daemon:
            await daemon.wait_for_log("web server listening", timeout=60)
            users = iter(range(1, 1_000_000))

            async def command() -> int:
                verb = "list" if next(users) % 2 else f"subscribe {KEYWORD}"
                body, headers = slack.signed_command_request(
                    SECRET, "/papers", verb, channel_id=CHANNEL, team_id=slack.team_id,
                    user_id=f"U{next(users)}")  # a body of its own: not a replay
                async with http.post(f"{base}/slack/events", data=body,
                                     headers=headers) as resp:
                    await resp.read()
                    return resp.status

            async def healthz() -> int:
                async with http.get(f"{base}/healthz") as resp:
                    await resp.read()
                    return resp.status

            stop = asyncio.Event()
            acks: list[float] = []
            health: list[float] = []
            codes: list[int] = []
            await daemon.wait_for_log(rf"'{KEYWORD}': \d+ papers, {papers} new", timeout=300)
            fanout_started = time.perf_counter()
            askers = [asyncio.create_task(_timed(command, acks, codes, stop)),
                      asyncio.create_task(_timed(healthz, health, [], stop))]
            line = await daemon.wait_for_log(r"cycle: .* (\d+) notifications queued",
                                             timeout=3600)
            fanout_s = time.perf_counter() - fanout_started
            stop.set()
            await asyncio.gather(*askers)
            assert line.group(1) == str(subscribers * papers), line.group(0)
            stopped = await _sigterm_mid_fanout(daemon, arxiv, now, papers)
    return {"acks": acks, "health": health, "codes": codes, "fanout_s": fanout_s,
            "sigterm_s": stopped}


async def _sigterm_mid_fanout(daemon: DaemonProcess, arxiv: FakeArxiv, now: datetime,
                              papers: int) -> float:
    """A second batch of news, then SIGTERM while it is being fanned out (a restart)."""
    assert daemon.proc is not None
    await daemon.stop()
    arxiv.add(*(_paper(5000 + i, now - timedelta(seconds=i)) for i in range(papers)))
    await daemon.start()
    await daemon.wait_for_log(rf"'{KEYWORD}': \d+ papers, {papers} new", timeout=300,
                              after=len(daemon.lines) - 1)
    await asyncio.sleep(2)  # well inside the fan-out (tens of seconds)
    t0 = time.perf_counter()
    code = await daemon.stop(timeout=60)
    assert code == 0, daemon.log[-2000:]
    return time.perf_counter() - t0


# -- (c) peak RSS through a send-out ----------------------------------------------------------


async def bench_rss(workdir: Path, subscribers: int, papers: int,
                    sendout_s: float = 60) -> dict[str, float]:
    now = datetime.now(UTC)
    old, new = corpus(now, papers)
    seed(workdir / "papers.db", subscribers, old, now)
    async with FakeArxiv(papers=old + new) as arxiv, FakeTelegram(token=TOKEN) as telegram:
        config = daemon_config(workdir, arxiv, _free_port(), telegram=telegram)
        async with DaemonProcess(config, "run", env={"TELEGRAM_BOT_TOKEN": TOKEN}) as daemon:
            assert daemon.proc is not None
            await daemon.wait_for_log("web server listening", timeout=60)
            t0 = time.perf_counter()
            await daemon.wait_for_log(r"cycle: .* notifications queued", timeout=7200)
            cycle_s = time.perf_counter() - t0
            sent_before = len(telegram.sent)
            await asyncio.sleep(sendout_s)  # the send-out runs at Telegram's 30 messages/s
            hwm = _vm_hwm_mb(daemon.proc.pid)
            sent = len(telegram.sent) - sent_before
            assert await daemon.stop(timeout=60) == 0
    return {"subscribers": subscribers, "cycle_s": cycle_s, "peak_mb": hwm, "sent": sent}


def _vm_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subscribers", type=int, default=10_000)
    parser.add_argument("--papers", type=int, default=100)
    parser.add_argument("--rss", type=int, nargs="*", default=[10_000, 100_000],
                        help="subscriber counts for (c)")
    parser.add_argument("--skip", nargs="*", default=[], choices=["a", "b", "c"])
    args = parser.parse_args()
    n, p = args.subscribers, args.papers
    with tempfile.TemporaryDirectory() as tmp:
        if "a" not in args.skip:
            a = bench_transactions(Path(tmp), n, p)
            print(f"(a) {n:,} subscribers × {p} papers: the poll's transaction "
                  f"{a['poll_ms']:.0f} ms; expansion {a['rows']:,} rows in {a['batches']} "
                  f"transactions, median {a['median_ms']:.0f} ms, max {a['max_ms']:.0f} ms, "
                  f"{a['total_s']:.1f} s in all, CPU {a['cpu_us_per_row']:.1f} µs per row "
                  "[before: one transaction of ~20 s]")
        if "b" not in args.skip:
            work = Path(tmp) / "b"
            work.mkdir()
            b = asyncio.run(bench_daemon(work, n, p))
            acks, health = b["acks"], b["health"]
            assert isinstance(acks, list) and isinstance(health, list)
            codes = b["codes"]
            assert isinstance(codes, list)
            print(f"(b) during the {b['fanout_s']:.1f} s fan-out: {len(acks)} Slack commands "
                  f"(answers {sorted(set(codes))}), ack p50 {statistics.median(acks) * 1000:.0f}"
                  f" ms, p99 {_p99(acks) * 1000:.0f} ms, max {max(acks) * 1000:.0f} ms; "
                  f"{len(health)} /healthz, p50 {statistics.median(health) * 1000:.0f} ms, "
                  f"p99 {_p99(health) * 1000:.0f} ms [goal p99 ≤ 1 s each]")
            print(f"(b) SIGTERM in the middle of a fan-out: stopped in {b['sigterm_s']:.1f} s "
                  "[goal ≤ 10 s]")
        for count in args.rss if "c" not in args.skip else []:
            work = Path(tmp) / f"c{count}"
            work.mkdir()
            c = asyncio.run(bench_rss(work, count, p))
            print(f"(c) {count:,} Telegram subscribers × {p} papers: cycle with fan-out "
                  f"{c['cycle_s']:.1f} s, {c['sent']:.0f} messages in the next 60 s, daemon "
                  f"peak RSS {c['peak_mb']:.0f} MB [goal ≤ 120 MB]")


if __name__ == "__main__":
    main()
