"""The Atom parser of the fetch stage against real recorded arXiv answers and broken ones."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from pathlib import Path

import pytest
from lxml import etree

from bot.fetch.atom import parse_feed, split_id
from bot.fetch.errors import ArxivBadAnswer, ArxivRejected
from tests.fakes.arxiv_server import ACCESS_DENIED, BILLION_LAUGHS

FIXTURES = Path(__file__).parent / "fixtures"
OLD = (FIXTURES / "old-format-multi-entry-cat-and-query.xml").read_bytes()
NEW = (FIXTURES / "new-format-multi-entry-doi-journalref.xml").read_bytes()
ERROR = (FIXTURES / "new-format-error-http400-bad-id.xml").read_bytes()


def test_old_format_exact_values() -> None:
    feed = parse_feed(OLD)
    assert (feed.total_results, feed.start_index, feed.items_per_page) == (5619, 0, 2)
    first, second = feed.entries
    assert (first.arxiv_id, first.version) == ("2510.14968", 1)
    assert first.title == (
        "RDD: Retrieval-Based Demonstration Decomposer for Planner Alignment in "
        "Long-Horizon Tasks"
    )
    assert first.abstract.startswith(
        "To tackle long-horizon tasks, recent hierarchical vision-language-action (VLAs) "
        "frameworks employ vision-language model (VLM)-based planners to decompose"
    )
    assert first.abstract.endswith("Code and more results are available at rdd-neurips.github.io.")
    assert "\n" not in first.abstract and "  " not in first.abstract
    assert first.authors == ("Mingxuan Yan", "Yuping Wang", "Zechun Liu", "Jiachen Li")
    assert first.categories == ("cs.RO", "cs.AI", "cs.CV", "cs.LG", "cs.SY", "eess.SY")
    assert first.primary_category == "cs.RO"
    assert first.comment == (
        "39th Conference on Neural Information Processing Systems (NeurIPS 2025); "
        "Project Website: rdd-neurips.github.io"
    )
    assert (first.journal_ref, first.doi) == ("", "")
    assert first.published == datetime(2025, 10, 16, 17, 59, 37, tzinfo=UTC)
    assert first.updated == first.published
    assert (second.arxiv_id, second.comment, second.categories) == ("2510.14827", "", ("cs.RO",))
    assert second.authors[-1] == "Martin Magnusson" and len(second.authors) == 6


def test_new_format_exact_values() -> None:
    feed = parse_feed(NEW)
    assert (feed.total_results, feed.start_index, feed.items_per_page) == (214881, 0, 10)
    assert [(p.arxiv_id, p.version) for p in feed.entries] == [
        ("2202.12139", 1), ("2405.13786", 1), ("2005.14124", 2), ("2204.08348", 3),
        ("2302.03287", 3), ("1202.4527", 1), ("2503.05378", 2), ("1205.1866", 1),
        ("2502.07719", 2), ("1812.11470", 1),
    ]
    first = feed.entries[0]
    assert first.authors == ("Mohit Kumar Ahuja", "Arnaud Gotlieb", "Helge Spieker")
    assert first.categories == ("cs.SE", "cs.LG") and first.primary_category == "cs.SE"
    assert first.doi == "10.1109/ICSTW55395.2022.00035"
    assert first.comment == "Artificial Intelligence in Software Testing 2022 workshop @ ICST 2022"
    assert first.journal_ref.startswith("Artificial Intelligence in Software Testing @ 2022 IEEE")
    by_id = {p.arxiv_id: p for p in feed.entries}
    fuzz = by_id["2005.14124"]
    assert fuzz.published == datetime(2020, 5, 28, 16, 19, 50, tzinfo=UTC)
    assert fuzz.updated == datetime(2020, 7, 16, 8, 15, 48, tzinfo=UTC)
    assert by_id["2405.13786"].authors[0] == "Aurora Ramírez"
    assert by_id["2302.03287"].title == "ChatGPT and Software Testing Education: Promises & Perils"
    assert by_id["1202.4527"].journal_ref == (
        "International Journal of Software Engineering & Applications (IJSEA), Vol.3, No.1, "
        "January 2012"
    )
    assert by_id["1202.4527"].doi == ""
    review = by_id["1812.11470"].abstract
    assert "as a whole. Objective. In this systematic review" in review
    assert "\n" not in review and "  " not in review


def test_error_feed_is_rejected_with_arxivs_message() -> None:
    with pytest.raises(ArxivRejected) as caught:
        parse_feed(ERROR)
    assert caught.value.message == "incorrect id format for abc"


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(ACCESS_DENIED, id="html"),
        pytest.param(NEW[: len(NEW) // 2], id="truncated"),
        pytest.param(BILLION_LAUGHS, id="bomb"),
        pytest.param(b"", id="empty"),
        pytest.param(b"<rss version='2.0'><channel/></rss>", id="wrong-root"),
        pytest.param(b"<feed><title>no namespace</title></feed>", id="no-namespace"),
        pytest.param(
            b'<?xml version="1.0"?><!DOCTYPE feed [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
            b'<feed xmlns="http://www.w3.org/2005/Atom"><title>&x;</title></feed>',
            id="external-entity",
        ),
        pytest.param(NEW.replace(b"<opensearch:totalResults>214881", b"<opensearch:x>1")
                     .replace(b"</opensearch:totalResults>", b"</opensearch:x>"),
                     id="no-total"),
        pytest.param(NEW.replace(b"2202.12139v1</id>", b"not-an-id</id>"), id="bad-entry-id"),
    ],
)
def test_what_is_not_an_atom_feed_is_a_bad_answer(data: bytes) -> None:
    with pytest.raises(ArxivBadAnswer):
        parse_feed(data)


def test_html_answer_names_the_page_it_got() -> None:
    with pytest.raises(ArxivBadAnswer, match="Access Denied"):
        parse_feed(ACCESS_DENIED)


def test_element_order_and_prefixes_do_not_matter() -> None:
    root = etree.fromstring(NEW)
    for entry in root.iter("{http://www.w3.org/2005/Atom}entry"):
        children = list(entry)
        for child in children:
            entry.remove(child)
        # Kinds of elements reordered; authors and categories keep their order (it means something).
        for child in sorted(children, key=lambda c: str(c.tag), reverse=True):
            entry.append(child)
    # Same namespaces under other prefixes, declared on each element instead of the root.
    renamed = etree.Element(
        "{http://www.w3.org/2005/Atom}feed", nsmap={"a": "http://www.w3.org/2005/Atom"}
    )
    for child in root:
        renamed.append(copy.deepcopy(child))
    shuffled = etree.tostring(renamed, encoding="UTF-8")
    assert b"<a:feed" in shuffled
    assert parse_feed(shuffled) == parse_feed(NEW)


def test_first_alternate_link_being_the_pdf_changes_nothing() -> None:
    swapped = OLD.replace(
        b'<link href="http://arxiv.org/abs/2510.14968v1" rel="alternate" type="text/html"/>',
        b'<link href="http://arxiv.org/pdf/2510.14968v1" rel="alternate" type="application/pdf"/>'
        b'<link href="https://arxiv.org/abs/2510.14968v1" rel="alternate" type="text/html"/>',
    )
    assert swapped != OLD
    paper = parse_feed(swapped).entries[0]
    assert paper.abs_url == "https://arxiv.org/abs/2510.14968"
    assert paper.pdf_url == "https://arxiv.org/pdf/2510.14968v1"


def test_bidi_overrides_are_dropped_but_right_to_left_text_stays() -> None:
    root = etree.fromstring(NEW)
    atom = "{http://www.w3.org/2005/Atom}"
    entry = next(root.iter(f"{atom}entry"))
    entry.find(f"{atom}title").text = "\u202eevil\u202c and \u2067مرحبا\u2069 \u200ftoo"
    entry.find(f"{atom}author").find(f"{atom}name").text = "\u202dMallory\u202c Eve"
    paper = parse_feed(etree.tostring(root, encoding="UTF-8")).entries[0]
    assert paper.title == "evil and مرحبا \u200ftoo"  # a mark (U+200F) embeds nothing
    assert paper.authors[0] == "Mallory Eve"


def test_markup_comments_and_cdata_in_values_read_as_their_text() -> None:
    """Values with child nodes keep the whitespace between them ("<b>Deep</b> <i>Learning</i>"
    is "Deep Learning", not "DeepLearning"); the other entries read as they always do."""
    root = etree.fromstring(NEW)
    atom = "{http://www.w3.org/2005/Atom}"
    first, second = list(root.iter(f"{atom}entry"))[:2]
    title = first.find(f"{atom}title")
    title.text = None
    etree.SubElement(title, f"{atom}b").text = "Deep"
    title[0].tail = " "
    etree.SubElement(title, f"{atom}i").text = "Learning"
    name = first.find(f"{atom}author").find(f"{atom}name")
    name.text = "Ada"
    name.append(etree.Comment(" a comment "))
    name[0].tail = " Lovelace"
    second.find(f"{atom}summary").text = etree.CDATA("a < b  and\n c")
    feed = parse_feed(etree.tostring(root, encoding="UTF-8"))
    assert feed.entries[0].title == "Deep Learning"
    assert feed.entries[0].authors[0] == "Ada Lovelace"
    assert feed.entries[1].abstract == "a < b and c"
    assert feed.entries[2:] == parse_feed(NEW).entries[2:]


def test_offset_dates_become_utc_and_https_ids_work() -> None:
    data = OLD.replace(b"<updated>2025-10-16T17:59:37Z", b"<updated>2025-10-17T00:00:00-04:00")
    data = data.replace(b"<id>http://arxiv.org/abs/2510.14968v1", b"<id>https://arxiv.org/abs/2510.14968v1")
    paper = parse_feed(data).entries[0]
    assert paper.updated == datetime(2025, 10, 17, 4, 0, tzinfo=UTC)
    assert paper.updated.tzinfo is UTC
    assert paper.arxiv_id == "2510.14968"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("http://arxiv.org/abs/astro-ph/0601001v1", ("astro-ph/0601001", 1)),
        ("https://arxiv.org/abs/math.GT/0309136v12", ("math.GT/0309136", 12)),
        ("http://arxiv.org/abs/2511.00524v2", ("2511.00524", 2)),
        ("http://arxiv.org/abs/0704.0001", ("0704.0001", 1)),
        ("2511.00524v3", ("2511.00524", 3)),
    ],
)
def test_ids_lose_their_version(raw: str, expected: tuple[str, int]) -> None:
    assert split_id(raw) == expected


def test_old_style_id_in_a_feed() -> None:
    data = OLD.replace(b"2510.14968v1</id>", b"astro-ph/0601001v1</id>")
    paper = parse_feed(data).entries[0]
    assert (paper.arxiv_id, paper.version) == ("astro-ph/0601001", 1)
    assert paper.abs_url == "https://arxiv.org/abs/astro-ph/0601001"


# -- values from outside are range-checked where they are parsed ------------------------------
@pytest.mark.parametrize(
    ("old", "new"),
    [
        pytest.param(b"<published>2022-02-24T15:05:19Z", b"<published>9999-12-31T23:59:59-01:00",
                     id="year-9999-west-of-utc"),
        pytest.param(b"<published>2022-02-24T15:05:19Z", b"<published>0001-01-01T00:00:00+01:00",
                     id="year-1-east-of-utc"),
        pytest.param(b"<updated>2022-02-24T15:05:19Z", b"<updated>9999-12-31T23:59:59Z",
                     id="updated-year-9999"),
        pytest.param(b"2202.12139v1</id>", b"2202.12139v100000000000000000000</id>",
                     id="version-10^20"),
        pytest.param(b"2202.12139v1</id>", b"2202.12139v0</id>", id="version-0"),
    ],
)
def test_an_entry_that_cannot_be_represented_is_dropped_with_a_warning(
        old: bytes, new: bytes, caplog: pytest.LogCaptureFixture) -> None:
    data = NEW.replace(old, new, 1)
    assert data != NEW
    with caplog.at_level("WARNING", logger="bot.fetch.atom"):
        feed = parse_feed(data)
    assert [p.arxiv_id for p in feed.entries] == [p.arxiv_id for p in parse_feed(NEW).entries[1:]]
    assert feed.dropped == 1 and feed.size == 10
    assert "arXiv entry dropped: 2202.12139" in caplog.text


@pytest.mark.parametrize(
    "total", [b"1" + b"0" * 30, b"10000000000", b"-1", b"1e6", b"\xd9\xa3"])  # Arabic-Indic 3
def test_a_count_that_cannot_be_represented_makes_the_answer_bad(total: bytes) -> None:
    data = NEW.replace(b"<opensearch:totalResults>214881", b"<opensearch:totalResults>" + total)
    with pytest.raises(ArxivBadAnswer, match="totalResults"):
        parse_feed(data)
