"""Benchmark of the apprise channel (deliver stage): packing and sending through the library.

Run from the repository root: `python -m bench.bench_apprise [--targets N]`.
(a) pack: 100 papers of arXiv's lengths for a Discord target (2,000 characters, Markdown) and a
    JSON one (32,768): median ms per batch, messages per batch.
(b) send: N json:// targets on a local receiver, one message each, through the real notifier
    (apprise runs each request in its worker threads): messages/s with 1 and 8 in flight.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from datetime import UTC, datetime, timedelta

from notifiers.apprise import AppriseNotifier
from notifiers.base import Message
from storage.records import OutboxRow, Paper, Subscriber
from tests.fakes.apprise_receiver import AppriseReceiver


def _rows(count: int) -> list[OutboxRow]:
    """Lengths as on arXiv: ~90-character titles, ~1,200-character abstracts, six authors."""
    now = datetime.now(UTC)
    return [OutboxRow(n, 1, Paper(
        arxiv_id=f"2511.{n:05d}", version=1,
        title=f"Video anomaly detection with foundation models, part {n}: a *benchmark* study",
        abstract=("We study video anomaly detection & propose a <novel> method. " * 20).strip(),
        authors=tuple(f"Author{i} Surname{i}" for i in range(1, 7)),
        published=now - timedelta(hours=n), updated=now - timedelta(hours=n),
        primary_category="cs.CV", categories=("cs.CV",)), ("video anomaly detection",))
        for n in range(1, count + 1)]


def bench_pack() -> None:
    notifier = AppriseNotifier({"discord": "discord://123456789012/T0KEN-bench-abc",
                                "json": "json://127.0.0.1:9/hook"})
    rows = _rows(100)
    for name in ("discord", "json"):
        sub = Subscriber(1, "apprise", name)
        times, messages = [], 0
        for _ in range(20):
            started = time.perf_counter()
            messages = len(notifier.pack(sub, rows))
            times.append(time.perf_counter() - started)
        print(f"(a) pack 100 papers for {name}: median {statistics.median(times) * 1e3:.1f} ms, "
              f"{messages} messages")


async def bench_send(targets: int) -> None:
    async with AppriseReceiver() as rx:
        urls = {f"t{n}": rx.target(f"hook/{n}") for n in range(targets)}
        for width in (1, 8):
            notifier = AppriseNotifier(urls, max_in_flight=width)
            subs = [Subscriber(n, "apprise", name) for n, name in enumerate(urls)]
            messages = [notifier.pack(sub, _rows(3))[0] for sub in subs]
            gate = asyncio.Semaphore(width)
            before = len(rx.posts)
            started = time.perf_counter()
            await asyncio.gather(*(_send(notifier, gate, s, m)
                                   for s, m in zip(subs, messages, strict=True)))
            elapsed = time.perf_counter() - started
            assert len(rx.posts) - before == targets
            print(f"(b) send to {targets} json:// targets, {width} in flight: "
                  f"{targets / elapsed:.0f} msg/s ({elapsed:.2f} s)")


async def _send(notifier: AppriseNotifier, gate: asyncio.Semaphore, sub: Subscriber,
                message: Message) -> None:
    async with gate:
        await notifier.send(sub, message)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=int, default=300)
    args = parser.parse_args()
    bench_pack()
    asyncio.run(bench_send(args.targets))


if __name__ == "__main__":
    main()
