"""Benchmark of the render stage for 100 keywords × 100 papers: the README digest, the HTML
page, the public Atom feeds, all three together from one pass, and the digest fitted to 500 kB.

Run from the repository root: `python -m bench.bench_digest`. Targets: the three together
≤ 300 ms, the fitted digest ≤ 300 ms. Wall and CPU time are printed with the load average: on
a busy machine the CPU time is the steadier figure.
"""

from __future__ import annotations

import logging
import os
import random
import statistics
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from functools import partial
from typing import Any

from bot.render.digest import DigestSection, render_digest, render_views, section_views
from bot.render.feeds import public_feeds
from bot.render.job import gc_paused
from bot.render.page import render_page
from storage.records import Paper

KEYWORDS = 100
PAPERS = 100
RUNS = 7
TARGET_MS = 300
MAX_BYTES = 500_000
PUBLIC_URL = "https://papers.example.org"

_WORDS = (
    "video", "anomaly", "detection", "model", "language", "vision", "large", "multimodal",
    "benchmark", "transformer", "we", "propose", "novel", "method", "results", "learning",
    "state-of-the-art", "dataset", "temporal", "spatial", "$x_i$", "attention", "<Subject,",
    "Predicate>", "3D", "self-supervised", "fine-grained", "reasoning", "a", "the", "of", "and",
)


def _text(rng: random.Random, chars: int) -> str:
    words: list[str] = []
    while sum(len(w) + 1 for w in words) < chars:
        words.append(rng.choice(_WORDS))
    return " ".join(words).capitalize() + "."


def _paper(rng: random.Random, k: int, i: int) -> Paper:
    """Lengths as on arXiv: ~90-character titles, ~1,200-character abstracts, 1-12 authors."""
    published = datetime(2025, 11, 1, tzinfo=UTC) - timedelta(hours=rng.randrange(24 * 900))
    comment = rng.choice(["", "", "12 pages", _text(rng, rng.randrange(20, 120))])
    return Paper(
        arxiv_id=f"25{k:02d}.{i:05d}",
        version=rng.randrange(1, 4),
        title=_text(rng, rng.randrange(40, 140)),
        abstract=_text(rng, rng.randrange(600, 1900)),
        authors=tuple(f"Author{j} Surname{j}" for j in range(rng.randrange(1, 13))),
        published=published,
        updated=published + timedelta(days=rng.randrange(30)),
        comment=comment,
    )


def _sections() -> list[DigestSection]:
    rng = random.Random(42)
    return [
        DigestSection(f"Keyword {k}", [_paper(rng, k, i) for i in range(PAPERS)])
        for k in range(KEYWORDS)
    ]


def _median_ms(render: Callable[[], object]) -> tuple[float, float, float, object]:
    """Median wall, median CPU and least CPU milliseconds over RUNS, and the last result."""
    walls, cpus, result = [], [], None
    for _ in range(RUNS):
        wall, cpu = time.perf_counter(), time.process_time()
        result = render()
        cpus.append((time.process_time() - cpu) * 1000)
        walls.append((time.perf_counter() - wall) * 1000)
    return statistics.median(walls), statistics.median(cpus), min(cpus), result


def _size(result: object) -> int:
    if isinstance(result, str):
        return len(result.encode())
    if isinstance(result, dict):
        return sum(len(feed.body) for feed in result.values())
    return sum(_size(part) for part in result)  # type: ignore[attr-defined]


def _line(name: str, render: Callable[[], object], target: float | None = None) -> None:
    wall, cpu, least, result = _median_ms(render)
    verdict = ""
    if target is not None:
        verdict = f" (target {target:.0f} ms: {'ok' if wall <= target else 'OVER TARGET'})"
    print(f"{name}: median {wall:.0f} ms wall, {cpu:.0f} ms CPU (least {least:.0f})"
          f"{verdict}; {_size(result):,} bytes")


def main() -> None:
    logging.basicConfig(level=logging.ERROR)  # the fitted run warns on every render
    sections = _sections()
    today = date(2025, 11, 13)
    print(f"{KEYWORDS} keywords x {PAPERS} papers, median of {RUNS} runs, "
          f"load average {os.getloadavg()[0]:.1f}")

    def views() -> list:  # type: ignore[type-arg]
        return section_views(sections, PAPERS, 600)

    _line("Markdown digest, whole", lambda: render_digest(sections, updated=today))
    _line(f"Markdown digest fitted to {MAX_BYTES:,} bytes",
          lambda: render_digest(sections, updated=today, max_bytes=MAX_BYTES), TARGET_MS)
    _line("HTML page", lambda: render_page(views(), updated=today, max_papers=PAPERS,
                                           feeds="feeds/"))
    _line("public Atom feeds (100 + all.atom)", lambda: public_feeds(sections, PUBLIC_URL))

    def three() -> tuple[str, str, dict]:  # type: ignore[type-arg]
        """As the render job does it: one set of rows, the digest fitted to its file."""
        shared = views()
        return (render_views(shared, updated=today, max_papers=PAPERS, max_bytes=MAX_BYTES),
                render_page(shared, updated=today, max_papers=PAPERS, feeds="feeds/"),
                public_feeds(sections, PUBLIC_URL))

    def together() -> tuple[str, str, dict]:  # type: ignore[type-arg]
        with gc_paused():  # as the render job does it
            return three()

    _line("all three together (fitted digest, page, feeds)", together, TARGET_MS)
    _line("  the same with the garbage collector running", three)
    _parts(sections, today)


def _parts(sections: list[DigestSection], today: date) -> None:
    """Where the time of `together` goes: median CPU milliseconds of each of its steps."""
    steps: dict[str, list[float]] = {}

    def timed(name: str, step: Callable[[], Any]) -> Any:
        cpu = time.process_time()
        result = step()
        steps.setdefault(name, []).append((time.process_time() - cpu) * 1000)
        return result

    for _ in range(RUNS):
        with gc_paused():
            shared = timed("rows", partial(section_views, sections, PAPERS, 600))
            timed("fitted digest", partial(render_views, shared, updated=today,
                                           max_papers=PAPERS, max_bytes=MAX_BYTES))
            timed("page", partial(render_page, shared, updated=today, max_papers=PAPERS,
                                  feeds="feeds/"))
            timed("feeds", partial(public_feeds, sections, PUBLIC_URL))
    print("  of which (median CPU): " + ", ".join(
        f"{name} {statistics.median(ms):.0f} ms" for name, ms in steps.items()))

if __name__ == "__main__":
    main()
