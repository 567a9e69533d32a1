"""Benchmark of the render stage: the README digest of 100 keywords × 100 papers, and the
Atom feeds of the same keywords (one per keyword and all.atom).

Run from the repository root: `python -m bench.bench_digest`. Target: median render ≤ 200 ms.
"""

from __future__ import annotations

import logging
import random
import statistics
import time
from datetime import UTC, date, datetime, timedelta

from bot.render.digest import DigestSection, render_digest
from bot.render.feeds import public_feeds
from storage.records import Paper

KEYWORDS = 100
PAPERS = 100
RUNS = 7
TARGET_MS = 200
MAX_BYTES = 500_000

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


def _median_ms(render: object) -> tuple[float, str]:
    times, text = [], ""
    for _ in range(RUNS):
        start = time.perf_counter()
        text = render()  # type: ignore[operator]
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), text


def _cpu_ms(render: object) -> str:
    """Median process CPU time: on a loaded machine it moves less than wall time."""
    times = []
    for _ in range(RUNS):
        start = time.process_time()
        render()  # type: ignore[operator]
        times.append((time.process_time() - start) * 1000)
    return f"{statistics.median(times):.1f} ms"


def main() -> None:
    logging.basicConfig(level=logging.ERROR)  # the fitted run warns on every render
    sections = _sections()
    today = date(2025, 11, 13)
    ms, text = _median_ms(lambda: render_digest(sections, updated=today))
    verdict = "ok" if ms <= TARGET_MS else "OVER TARGET"
    print(f"render {KEYWORDS}x{PAPERS}: median {ms:.1f} ms over {RUNS} runs "
          f"(target {TARGET_MS} ms: {verdict}); {len(text.encode()):,} bytes")
    ms, text = _median_ms(lambda: render_digest(sections, updated=today, max_bytes=MAX_BYTES))
    print(f"render fitted to {MAX_BYTES:,} bytes: median {ms:.1f} ms; {len(text.encode()):,} bytes")
    feeds_ms, feeds = _median_ms(lambda: public_feeds(sections, "https://papers.example.org"))
    size = sum(len(f.body) for f in feeds.values())  # type: ignore[attr-defined]
    print(f"public Atom feeds ({len(feeds)}: {KEYWORDS} keywords + all.atom): median "  # type: ignore[arg-type]
          f"{feeds_ms:.1f} ms; {size:,} bytes; CPU {_cpu_ms(lambda: public_feeds(sections, ''))}")


if __name__ == "__main__":
    main()
