"""Benchmark of the arXiv answer cap: what a gzip bomb (1 MB inflating to 1 GiB) and an endless
answer cost the client, against the local fake arXiv run as a separate process.

Run from the repository root: `python -m bench.bench_answer_cap`. Prints, per answer, the time
until the request failed as a bad answer, the peak of Python allocations during it and the
process's peak RSS after it (goal: the cap, 20 MB, plus little; before the cap a 1 GiB bomb
took the process to 5.3 GB).
"""

from __future__ import annotations

import asyncio
import resource
import subprocess
import sys
import time
import tracemalloc

import httpx

from bot.fetch.arxiv import ArxivClient
from bot.fetch.errors import ArxivUnavailable

QUERY = 'ti:"video anomaly detection" OR abs:"video anomaly detection"'


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def one(url: str, kind: str) -> None:
    base = url.rsplit("/api/query", 1)[0]
    async with httpx.AsyncClient() as http:
        (await http.post(f"{base}/_fake/faults", json=[kind])).raise_for_status()
    async with ArxivClient(url, request_interval=0, timeout=30, max_attempts=1) as client:
        tracemalloc.start()
        started = time.perf_counter()
        try:
            await client.fetch(QUERY, 0, 10)
            outcome = "answered (the cap did not hold!)"
        except ArxivUnavailable as exc:
            outcome = exc.reason
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    print(f"{kind:>10}: {elapsed * 1000:7.0f} ms, allocations peak {peak / 2**20:6.1f} MB, "
          f"process peak RSS {peak_rss_mb():6.1f} MB — {outcome}")


async def main() -> None:
    server = subprocess.Popen([sys.executable, "-m", "tests.fakes.arxiv_server", "--port", "0"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        url = server.stdout.readline().strip()
        print(f"baseline: process peak RSS {peak_rss_mb():.1f} MB")
        for kind in ("gzip_bomb", "endless"):
            await one(url, kind)
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    asyncio.run(main())
