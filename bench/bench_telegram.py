"""Benchmark of the deliver stage on Telegram: outbox → dispatcher → notifier → local Bot API.

Run from the repository root: `python -m bench.bench_telegram [--chats-a N] [--chats-b N]`.
(a) 10,000 chats × 5 new papers, rate limits off: messages/s at max_in_flight 1 and 16, peak
    RSS (each run in its own process, the Bot API server in another). Target ≥ 1,000 msg/s at
    16, RSS ≤ 120 MB.
(b) 2,000 chats with the real limits: completion time against the floor of 2,000 / 30 s.
    Target within 5 %.
(c) p99 reply time of commands typed during (b). Target ≤ 1 s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from bot.app import App
from bot.config import Config, Secrets, TelegramConfig
from bot.deliver.dispatcher import Dispatcher
from bot.faces.telegram import TelegramFace
from bot.fetch.arxiv import ArxivClient
from notifiers.telegram import TELEGRAM_LIMITS, UNLIMITED, TelegramNotifier, sendout_bot
from storage import keywords as kw_repo
from storage import outbox, polls
from storage import subscribers as sub_repo
from storage.database import write
from storage.records import Paper
from storage.store import AsyncStore, Store
from tests.fakes.telegram_server import FakeTelegram

TOKEN = "123456:BENCH"
KEYWORD = "video anomaly detection"
NEW_PAPERS = 5
COMMAND_EVERY = 0.25  # seconds between two commands typed during (b)


def _paper(n: int, published: datetime) -> Paper:
    """Lengths as on arXiv: ~90-character titles, ~1,200-character abstracts."""
    title = f"Video anomaly detection with foundation models, part {n}: a benchmark <&> study"
    abstract = ("We study video anomaly detection & propose a <novel> method. " * 20).strip()
    return Paper(arxiv_id=f"2511.{n:05d}", version=1, title=title, abstract=abstract,
                 authors=tuple(f"Author{i} Surname{i}" for i in range(1, 7)),
                 published=published, updated=published, primary_category="cs.CV",
                 categories=("cs.CV",))


def seed(path: Path, chats: range, new_papers: int = NEW_PAPERS) -> None:
    """Chats subscribed to one keyword, a baseline, then a poll with new papers, released."""
    now = datetime.now(UTC)
    store = Store(path)
    db = store.db
    kw, _ = kw_repo.ensure(db, KEYWORD, KEYWORD, f'ti:"{KEYWORD}"', now, max_keywords=10)
    with write(db):
        for chat in chats:
            sub = sub_repo.ensure(db, "telegram", str(chat), now)
            sub_repo.subscribe(db, sub, kw, "user", now)
    old = [_paper(i, now - timedelta(days=2, hours=i)) for i in range(1, 11)]
    floor = now - timedelta(days=14)
    polls.commit_poll(db, kw, old, baseline=True, now=now, max_papers=100, notify_floor=floor,
                      total_results=len(old))
    kw = kw_repo.get(db, kw.id)
    assert kw is not None
    new = [_paper(100 + i, now - timedelta(hours=i)) for i in range(new_papers)]
    polls.commit_poll(db, kw, new + old, baseline=False, now=now, max_papers=100,
                      notify_floor=floor, total_results=len(old) + new_papers)
    outbox.release(db, now, lambda sub: now)
    store.close()



# -- (a): throughput, rate limits off -------------------------------------------------------


def _serve_fake(conn: Connection) -> None:
    """The Bot API server in its own process, so it takes neither our CPU nor our RSS."""

    async def main() -> None:
        async with FakeTelegram(token=TOKEN) as fake:
            conn.send(fake.base_url)
            await asyncio.get_running_loop().run_in_executor(None, conn.recv)
            conn.send(len(fake.sent))

    asyncio.run(main())


async def _sendout(db: Path, url: str, in_flight: int) -> dict[str, Any]:
    limits = replace(UNLIMITED, max_in_flight=in_flight)
    notifier = TelegramNotifier(sendout_bot(TOKEN, url, in_flight), limits)
    store = await AsyncStore(db).open()
    await notifier.start()
    t0 = time.perf_counter()
    sent = await Dispatcher(store, {"telegram": notifier}, lambda: datetime.now(UTC)).drain()
    elapsed = time.perf_counter() - t0
    await notifier.close()
    await store.close()
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"messages": sent, "seconds": elapsed, "per_second": sent / elapsed, "rss_mb": rss_mb}


def bench_a(workdir: Path, chats: int) -> list[dict[str, Any]]:
    template = workdir / "a-template.db"
    seed(template, range(1_000_000, 1_000_000 + chats))
    ctx = multiprocessing.get_context("spawn")
    results = []
    for in_flight in (1, 16):
        db = workdir / f"a-{in_flight}.db"
        shutil.copy(template, db)
        parent, child = ctx.Pipe()
        server = ctx.Process(target=_serve_fake, args=(child,), daemon=True)
        server.start()
        url = parent.recv()
        command = [sys.executable, "-m", "bench.bench_telegram", "--sendout", str(db), url,
                   str(in_flight)]
        out = subprocess.run(command, capture_output=True, text=True, check=True)
        result = json.loads(out.stdout.strip().splitlines()[-1])
        parent.send("stop")
        result.update(in_flight=in_flight, received=parent.recv())
        server.join()
        results.append(result)
    return results


# -- (b) and (c): the real limits, with people typing ----------------------------------------


async def bench_bc(workdir: Path, chats: int, in_flight: int = 1,
                   typing: bool = True, new_papers: int = NEW_PAPERS) -> dict[str, Any]:
    db = workdir / "b.db"
    db.unlink(missing_ok=True)
    seed(db, range(2_000_000, 2_000_000 + chats), new_papers)
    async with FakeTelegram(token=TOKEN) as fake:
        cfg = Config()
        cfg.storage.path = db
        store = await AsyncStore(db).open()
        client = ArxivClient("http://127.0.0.1:9/api/query")  # commands here never poll
        app = App(cfg, Secrets(), store, client)
        face = TelegramFace(TelegramConfig(api_url=fake.base_url), TOKEN,
                            limits=replace(TELEGRAM_LIMITS, max_in_flight=in_flight))
        await face.start(app)
        await face.notifier.start()
        dispatcher = Dispatcher(store, {"telegram": face.notifier}, lambda: datetime.now(UTC))
        sendouts = set(range(2_000_000, 2_000_000 + chats))
        first = await store.call(sub_repo.find, "telegram", str(2_000_000))
        rows = await store.call(outbox.due_rows, first.id, datetime.now(UTC))
        expected = chats * len(face.notifier.pack(first, rows))  # messages of the send-out
        typed: list[tuple[int, float]] = []
        t0 = time.monotonic()
        task = asyncio.create_task(dispatcher.run())
        typist = asyncio.create_task(_type_commands(fake, typed) if typing else asyncio.sleep(0))
        await fake.wait_for(lambda: sum(m.chat_id in sendouts for m in fake.sent) >= expected,
                            timeout=expected / 30 * 3 + 60)
        done = max(m.at for m in fake.sent if m.chat_id in sendouts)
        replies_before = sum(m.chat_id not in sendouts and m.at <= done for m in fake.sent)
        typist.cancel()
        task.cancel()
        for t in (task, typist):
            with contextlib.suppress(asyncio.CancelledError):
                await t
        replies = _reply_times(fake, typed)
        await face.stop()
        await face.notifier.close()
        await client.aclose()
        await store.close()
    floor = expected / 30
    shared_floor = (expected + replies_before) / 30  # replies take their slots of the same 30/s
    return {"chats": chats, "messages": expected, "seconds": done - t0, "floor": floor,
            "over_floor_pct": (done - t0 - floor) / floor * 100,
            "replies_before": replies_before, "shared_floor": shared_floor,
            "over_shared_floor_pct": (done - t0 - shared_floor) / shared_floor * 100,
            "commands": len(replies),
            "reply_p50": statistics.median(replies or [0]), "reply_p99": _p99(replies or [0]),
            "reply_max": max(replies or [0])}


async def _type_commands(fake: FakeTelegram, typed: list[tuple[int, float]]) -> None:
    """One command every COMMAND_EVERY s from 100 chats in turn (each under 10 a minute)."""
    words = ["/list", f"/latest {KEYWORD}", f"/subscribe {KEYWORD}", "/help"]
    n = 0
    while True:
        chat = 10 + n % 100
        typed.append((chat, time.monotonic()))
        fake.push_command(chat, words[n % len(words)])
        n += 1
        await asyncio.sleep(COMMAND_EVERY)


def _reply_times(fake: FakeTelegram, typed: list[tuple[int, float]]) -> list[float]:
    """Time from typing to its reply: each command gets one, and a chat's come in order."""
    pending: dict[int, list[float]] = {}
    for chat, typed_at in typed:
        pending.setdefault(chat, []).append(typed_at)
    times = []
    for chat, starts in pending.items():
        answers = [m.at for m in fake.messages_to(chat)]
        times += [answer - start for start, answer in zip(starts, answers, strict=False)]
    return times


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


# -- entry -----------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chats-a", type=int, default=10_000)
    parser.add_argument("--chats-b", type=int, default=2_000)
    parser.add_argument("--in-flight-b", type=int, default=1,
                        help="max_in_flight for (b); the daemon's default is 1")
    parser.add_argument("--sendout", nargs=3, metavar=("DB", "URL", "IN_FLIGHT"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sendout:
        db, url, in_flight = args.sendout
        print(json.dumps(asyncio.run(_sendout(Path(db), url, int(in_flight)))))
        return
    with tempfile.TemporaryDirectory() as tmp:
        results = bench_a(Path(tmp), args.chats_a) \
            if args.chats_a else []
        for r in results:
            verdict = "ok" if r["in_flight"] == 1 or r["per_second"] >= 1000 else "MISSED"
            print(f"(a) {r['messages']} messages at max_in_flight {r['in_flight']}: "
                  f"{r['seconds']:.1f} s, {r['per_second']:.0f} msg/s, peak RSS "
                  f"{r['rss_mb']:.0f} MB (server got {r['received']}) "
                  f"[target ≥ 1000 msg/s at 16, RSS ≤ 120 MB: {verdict}]")
        if args.chats_b:
            quiet = asyncio.run(bench_bc(Path(tmp), args.chats_b, args.in_flight_b, False))
            print(f"(b) {quiet['chats']} chats with real limits, nobody typing: "
                  f"{quiet['seconds']:.1f} s, floor {quiet['floor']:.1f} s, "
                  f"{quiet['over_floor_pct']:+.1f} % [target within 5 %]")
            long = asyncio.run(bench_bc(Path(tmp), args.chats_b // 4, args.in_flight_b, False,
                                        new_papers=12))
            print(f"(b) {long['chats']} chats with 12 papers each ({long['messages']} messages: "
                  f"every batch in {long['messages'] // long['chats']} parts, 1 s apart per chat), "
                  f"nobody typing: "
                  f"{long['seconds']:.1f} s, floor {long['floor']:.1f} s, "
                  f"{long['over_floor_pct']:+.1f} % [target within 5 %]")
            b = asyncio.run(bench_bc(Path(tmp), args.chats_b, args.in_flight_b))
            print(f"(b) the same with a command every {COMMAND_EVERY} s: {b['seconds']:.1f} s, "
                  f"{b['over_floor_pct']:+.1f} % over the send-out's floor; its "
                  f"{b['replies_before']} replies share the 30/s, so the floor for all "
                  f"{b['messages'] + b['replies_before']} messages is {b['shared_floor']:.1f} s: "
                  f"{b['over_shared_floor_pct']:+.1f} % [target within 5 %]")
            print(f"(c) {b['commands']} commands during (b): reply p50 "
                  f"{b['reply_p50'] * 1000:.0f} ms, p99 {b['reply_p99'] * 1000:.0f} ms, max "
                  f"{b['reply_max'] * 1000:.0f} ms [target p99 ≤ 1 s]")


if __name__ == "__main__":
    main()
