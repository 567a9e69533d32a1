"""Benchmark of the two parsers, side by side with the seed's feedparser parse in one run.

Run from the repository root: `python -m bench.bench_parse` (needs the `bench` extra for
feedparser). Prints CPU milliseconds per 100 entries for: a 100-entry API page (Atom) through
`parse_feed` and through `feedparser.parse`, and a real 1,000-record arXivRaw harvest page
through `parse_oai`. The three are timed in turn, round after round, so a machine that slows
down slows all of them; each figure is the median of the rounds (min in brackets) and each
ratio is the median of the rounds' own ratios (the seed has no harvest parser: parse_oai's
time per 100 records is set against feedparser's per 100 Atom entries, the seed's parse).
Target: ≤ 3 ms per 100 entries for both, ≥ 25 × faster than the seed. The same rounds time
the floor under each figure: lxml's own parse of the page into a tree, libxml2's check of it
without a tree (what a page laid out as arXiv writes it costs at least: both parsers read
such a page from its text after that check) and building its Paper objects alone.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from pathlib import Path
from statistics import median

from lxml import etree

from bot.fetch.atom import parse_feed
from bot.fetch.oai import parse_oai
from bot.fetch.safexml import well_formed
from storage.records import Paper
from tests.fakes.arxiv_server import render_feed, seed_corpus

RAW = (Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "oai"
       / "old-export-2014-listrecords-arXivRaw-1000rec-versions-resumptiontoken.xml")


def best_ms(fn: Callable[[], object], rounds: int = 7, repeat: int = 10) -> float:
    """CPU time of one call, best of `rounds` (other processes cannot add to it)."""
    return min(cpu_ms(fn, repeat) for _ in range(rounds))


def cpu_ms(fn: Callable[[], object], repeat: int) -> float:
    t0 = time.process_time()
    for _ in range(repeat):
        fn()
    return (time.process_time() - t0) / repeat * 1000


def atom_page() -> bytes:
    papers = seed_corpus()
    papers = [dataclasses.replace(p, arxiv_id=f"2601.{i:05d}")
              for i, p in enumerate((papers * 2)[:100])]
    return render_feed(papers, total=1000, start=0, items_per_page=100)


def rebuild(papers: list[Paper]) -> list[Paper]:
    """The Paper objects of a page built again from their values: the parsers' last step."""
    return [Paper(p.arxiv_id, p.version, p.title, p.abstract, p.authors, p.published, p.updated,
                  p.primary_category, p.categories, p.comment, p.journal_ref, p.doi)
            for p in papers]


def main(rounds: int = 15) -> None:
    import feedparser

    page = atom_page()
    raw = RAW.read_bytes()
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False,
                             collect_ids=False)
    papers = list(parse_feed(page).entries)
    ours, seed, oai, ratios, oai_ratios, lxml_atom, lxml_oai, build, check = (
        [] for _ in range(9))
    for _ in range(rounds):
        ours.append(cpu_ms(lambda: parse_feed(page), 10))
        seed.append(cpu_ms(lambda: feedparser.parse(page), 1))
        oai.append(cpu_ms(lambda: parse_oai(raw), 1) / 10)
        ratios.append(seed[-1] / ours[-1])
        oai_ratios.append(seed[-1] / oai[-1])
        lxml_atom.append(cpu_ms(lambda: etree.fromstring(page, parser), 10))
        lxml_oai.append(cpu_ms(lambda: etree.fromstring(raw, parser), 1) / 10)
        build.append(cpu_ms(lambda: rebuild(papers), 10))
        check.append(cpu_ms(lambda: well_formed(page), 10))
    load = os.getloadavg()[0]
    print(f"Atom, 100 entries ({len(page) / 1000:.0f} kB): parse_feed {median(ours):.2f} ms "
          f"[{min(ours):.2f}], feedparser {median(seed):.1f} ms [{min(seed):.1f}]: "
          f"{median(ratios):.1f}x faster (target <= 3 ms, >= 25x)")
    print(f"OAI-PMH arXivRaw, real 1,000-record page ({len(raw) / 1e6:.1f} MB): parse_oai "
          f"{median(oai):.2f} ms [{min(oai):.2f}] per 100 records: {median(oai_ratios):.1f}x "
          f"faster than feedparser per 100 Atom entries (target <= 3 ms, >= 25x)")
    print(f"Floor per 100: lxml's parse alone {median(lxml_atom):.2f} ms (Atom), "
          f"{median(lxml_oai):.2f} ms (OAI); libxml2's check without a tree "
          f"{median(check):.2f} ms (Atom); building 100 Papers alone {median(build):.2f} ms")
    print(f"{rounds} rounds, load average {load:.1f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
