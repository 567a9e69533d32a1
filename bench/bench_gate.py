"""Benchmark of the request gate: K searches through one client against a local arXiv that
takes 0.5 s and then 2 s to answer, with arXiv's request_interval of 3 s.

Run from the repository root: `python -m bench.bench_gate [--k 21]`. Prints, per latency, the
span from the first to the last request's arrival at the server against the floor of
3 s × (K−1) (target ≤ 1.02 × the floor), the smallest gap between two arrivals, the whole
cycle's wall time, and what the gate that waited after each answer cost (K × (3 s + latency)).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import time

from bot.fetch.arxiv import ArxivClient
from tests.fakes.arxiv_server import FakeArxiv

INTERVAL = 3.0


async def run(k: int, latency: float) -> None:
    async with FakeArxiv(papers=FakeArxiv.seed_corpus()[:10], latency=latency) as fake:
        async with ArxivClient(fake.url, request_interval=INTERVAL, timeout=30) as client:
            t0 = time.monotonic()
            for i in range(k):
                await client.fetch(f'ti:"video" AND all:n{i}', 0, 10)
            wall = time.monotonic() - t0
        arrivals = [r.time for r in fake.requests]
    span = arrivals[-1] - arrivals[0]
    floor = INTERVAL * (k - 1)
    gap = min(b - a for a, b in itertools.pairwise(arrivals))
    print(f"latency {latency:.1f} s, K={k}: first→last arrival {span:.2f} s = "
          f"{span / floor:.4f} × floor {floor:.0f} s (target <= 1.02); smallest gap "
          f"{gap:.3f} s; cycle wall {wall:.2f} s; waiting after each answer: "
          f"{k * (INTERVAL + latency):.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--k", type=int, default=21, help="requests per run (default 21)")
    args = parser.parse_args()
    for latency in (0.5, 2.0):
        asyncio.run(run(args.k, latency))


if __name__ == "__main__":
    main()
