"""The harvest's local matcher agrees with the search path's fake arXiv on queries × papers."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest

from bot.fetch.arxiv import ArxivClient
from bot.fetch.keywords import parse_keyword
from bot.fetch.matcher import Matcher, QueryError, compile_query
from storage.records import Paper
from tests.fakes.arxiv_server import FakeArxiv, matches_query, seed_corpus

WHEN = datetime(2026, 3, 2, 12, tzinfo=UTC)


def extra_papers() -> list[Paper]:
    base = Paper(arxiv_id="2603.00001", version=1, title="", abstract="", authors=(),
                 published=WHEN, updated=WHEN)
    return [
        dataclasses.replace(base, arxiv_id="2603.00001", title="Graph Neural Networks for Crowd "
                            "Counting", abstract="We count crowds. Surveillance is not studied.",
                            authors=("Yann LeCun", "Ada Lovelace"), categories=("cs.CV", "cs.LG"),
                            comment="10 pages, CVPR 2026", primary_category="cs.CV"),
        dataclasses.replace(base, arxiv_id="2603.00002", title="Quantum error correction",
                            abstract="Video anomaly detection in quantum circuits?",
                            authors=("Alan Turing",), categories=("quant-ph", "cs.ET"),
                            journal_ref="Phys. Rev. Lett. 130, 1 (2026)", primary_category="quant-ph"),
        dataclasses.replace(base, arxiv_id="2603.00003", title="Large-Scale VIDEO Understanding",
                            abstract="Multimodal large language models watch videos; "
                            "video-language pretraining.", authors=("Grace Hopper",),
                            categories=("stat.ML", "cs.CV"), primary_category="stat.ML"),
        dataclasses.replace(base, arxiv_id="2603.00004", title="Anomaly video detection",
                            abstract="Words in another order: detection of video anomaly.",
                            authors=("Ada Lovelace",), categories=("math.OC",),
                            primary_category="math.OC"),
    ]


KEYWORDS = [
    "Video Anomaly Detection", "Video Understanding", "Vision Language Model",
    "Multimodal Large Language Model", "graph neural networks", "crowd counting",
    "video-language pretraining", "quantum", "large-scale video",
    'ti:"video understanding" AND cat:cs.CV', "cat:cs.CV ANDNOT ti:video", "cat:cs",
    "cat:quant-ph OR cat:math.OC", "au:lovelace", 'au:"ada lovelace" AND cat:math.OC',
    "co:cvpr", "jr:phys", "all:surveillance", "(ti:video OR ti:vision) AND abs:model",
    "ti:video OR ti:vision AND abs:model", "ti:anomaly ANDNOT abs:quantum",
    'abs:"large language models" OR ti:"vision language"', "cat:cs.* AND all:benchmark",
    "detection anomaly", "cat:stat.ML AND ti:video", "cat:cs.et",
    'graph neural networks -"crowd counting"', "video -surveillance -quantum",
    "crowd counting -Surveillance", "video anomaly detection -crowd",
]


@pytest.fixture(scope="module")
def papers() -> list[Paper]:
    return seed_corpus() + extra_papers()


@pytest.mark.parametrize("keyword", KEYWORDS)
def test_local_matching_agrees_with_the_search_fake(keyword: str, papers: list[Paper]):
    query = parse_keyword(keyword).query
    expected = [p.arxiv_id for p in papers if matches_query(query, p)]
    found = Matcher([(1, query)]).match(papers).get(1, [])
    assert [p.arxiv_id for p in found] == expected


def test_golden_table_of_queries_and_papers(papers: list[Paper]):
    """Exact answers for the extra papers: phrases, cross-lists, archives, precedence."""
    extra = {p.arxiv_id for p in extra_papers()}
    table = {
        "crowd counting": {"2603.00001"},
        "Video Anomaly Detection": {"2603.00002"},  # in an abstract, any case
        "video-language pretraining": {"2603.00003"},  # dashes are word breaks
        "cat:cs.CV": {"2603.00001", "2603.00003"},  # a cross-list counts
        "cat:cs": {"2603.00001", "2603.00002", "2603.00003"},  # the archive
        "cat:cs.CV ANDNOT ti:video": {"2603.00001"},
        'au:"ada lovelace" AND cat:math.OC': {"2603.00004"},
        "co:cvpr": {"2603.00001"},
        "jr:phys": {"2603.00002"},
        "detection anomaly": set(),  # a phrase: these words in this order
        "all:detection all:anomaly": {"2603.00002", "2603.00004"},  # both words, any order
        'ti:"anomaly video detection"': {"2603.00004"},
        "ti:anomaly ANDNOT abs:quantum": {"2603.00004"},
        "crowd counting -surveillance": set(),  # an exclusion reads the abstract too
        "video anomaly detection -quantum": set(),
        'video anomaly detection -"crowd counting"': {"2603.00002"},
        "video -surveillance -quantum": {"2603.00003", "2603.00004"},
    }
    keywords = [(i, parse_keyword(text).query) for i, text in enumerate(table)]
    found = Matcher(keywords).match(papers)
    for i, (text, expected) in enumerate(table.items()):
        assert {p.arxiv_id for p in found.get(i, [])} & extra == expected, text


def test_many_keywords_in_one_matcher_give_each_its_own_answer(papers: list[Paper]):
    keywords = [(i, parse_keyword(text).query) for i, text in enumerate(KEYWORDS)]
    found = Matcher(keywords).match(papers)
    for i, (_, query) in enumerate(keywords):
        expected = [p.arxiv_id for p in papers if matches_query(query, p)]
        assert [p.arxiv_id for p in found.get(i, [])] == expected, query


def test_and_binds_tighter_than_or():
    assert compile_query("ti:a OR ti:b AND ti:c") == compile_query("ti:a OR (ti:b AND ti:c)")
    assert compile_query("ti:a AND ti:b OR ti:c") == compile_query("(ti:a AND ti:b) OR ti:c")


def test_an_unreadable_query_is_set_aside_not_raised():
    matcher = Matcher([(1, 'ti:"unclosed'), (2, "ti:video")])
    assert 1 in matcher.unreadable and 2 in matcher.queries
    with pytest.raises(QueryError):
        compile_query("ti:a AND")


@pytest.mark.parametrize("query", [parse_keyword(k).query for k in KEYWORDS] + [
    "", "ti:", "(ti:video", "ti:video OR", 'all:"video anomaly" ANDNOT cat:cs.LG', "cat:cs.*"])
def test_the_fakes_index_answers_as_its_scan(query: str, papers: list[Paper]):
    """bench_cycle's fake arXiv searches an index; it must agree with the plain scan."""
    from tests.fakes.arxiv_server import CorpusIndex

    expected = [p.arxiv_id for p in papers if matches_query(query, p)]
    assert [p.arxiv_id for p in CorpusIndex(papers).search(query)] == expected


async def test_matching_agrees_with_the_fake_arxiv_answering_through_the_client(
        papers: list[Paper], fake_arxiv: FakeArxiv, arxiv_client: ArxivClient):
    """The same table asked of the running fake arXiv (the search path: query string sent,
    served, parsed) and of the local matcher: the same papers for every keyword."""
    fake_arxiv.add(*papers)
    keywords = [(i, parse_keyword(text).query) for i, text in enumerate(KEYWORDS)]
    found = Matcher(keywords).match(papers)
    for i, query in keywords:
        feed = await arxiv_client.fetch(query, 0, 2000)
        assert feed.total_results == len(feed.entries)  # one page holds every answer
        assert {p.arxiv_id for p in found.get(i, [])} == {p.arxiv_id for p in feed.entries}, (
            KEYWORDS[i])
