"""The OAI-PMH parser against real recorded arXiv answers (arXivRaw and arXiv formats)."""

from __future__ import annotations

import contextlib
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from bot.fetch import oai
from bot.fetch.errors import ArxivBadAnswer
from bot.fetch.oai import parse_oai, split_authors
from bot.fetch.oai_text import read_text
from bot.fetch.safexml import screen
from tests.fakes.arxiv_server import seed_corpus
from tests.fakes.oai_server import OaiItem, _envelope, _record

OAI = Path(__file__).parent / "fixtures" / "oai"
RAW = (OAI / "old-export-2014-listrecords-arXivRaw-1000rec-versions-resumptiontoken.xml").read_bytes()
CS = (OAI / "old-export-2016-listrecords-arXiv-set-cs-no-token.xml").read_bytes()
NEW_GET = (OAI / "new-oaipmh-2026-getrecord-arXiv-2511.23462.xml").read_bytes()
NO_RECORDS = (OAI / "old-export-2016-error-noRecordsMatch.xml").read_bytes()
BUSY = (OAI / "old-export-2018-http503-retry-after-body.html").read_bytes()


def test_arxivraw_page_first_version_date_from_the_version_history():
    page = parse_oai(RAW)
    assert len(page.records) == 1000 and page.dropped == 0
    assert (page.token, page.complete_list_size) == ("496549|47001", 907096)
    by_id = {r.paper.arxiv_id: r for r in page.records}
    first = by_id["0801.3673"]
    assert first.new_submission and first.paper.version == 1
    assert first.paper.published == datetime(2008, 1, 23, 21, 6, 41, tzinfo=UTC)
    assert first.datestamp == date(2008, 1, 25)
    replaced = by_id["0801.3674"]
    assert not replaced.new_submission
    assert replaced.paper.version >= 4
    assert replaced.paper.published == datetime(2008, 1, 23, 21, 13, 53, tzinfo=UTC)
    assert replaced.paper.updated > replaced.paper.published
    assert replaced.paper.authors == ("Robert H. Brandenberger", "Keshav Dasgupta",
                                      "Anne-Christine Davis")
    assert replaced.paper.categories == ("hep-th", "astro-ph", "gr-qc", "hep-ph")
    assert replaced.paper.primary_category == "hep-th"
    assert replaced.paper.journal_ref == "Phys.Rev.D78:083502,2008"
    assert replaced.paper.doi == "10.1103/PhysRevD.78.083502"
    assert replaced.paper.title.endswith("Inflation Model") and "\n" not in replaced.paper.title
    assert "  " not in replaced.paper.abstract and "\n" not in replaced.paper.abstract
    assert page.last_datestamp == max(r.datestamp for r in page.records)


def test_arxiv_format_old_and_new_server():
    page = parse_oai(CS)
    assert len(page.records) == 46 and page.token is None
    cross = next(r.paper for r in page.records if r.paper.arxiv_id == "1101.4388")
    assert cross.categories == ("stat.ML", "cs.LG", "math.FA")
    assert cross.authors == ("Guohui Song", "Haizhang Zhang", "Fred J. Hickernell")
    assert cross.published == datetime(2011, 1, 23, tzinfo=UTC)
    new = parse_oai(NEW_GET).records[0].paper
    assert (new.arxiv_id, new.authors[0], new.comment) == (
        "2511.23462", "Carl Thomas", "12 pages, 6 figures")
    assert new.categories == ("physics.atom-ph", "quant-ph")


def test_oai_errors_come_back_by_name():
    page = parse_oai(NO_RECORDS)
    assert page.error == "noRecordsMatch" and page.records == ()
    assert "No records match" in page.message
    bad = (b"<?xml version='1.0'?><OAI-PMH xmlns='http://www.openarchives.org/OAI/2.0/'>"
           b"<responseDate>2026-03-03T10:00:00Z</responseDate><request>x</request>"
           b"<error code='badResumptionToken'>The value of the resumptionToken argument is "
           b"invalid or expired.</error></OAI-PMH>")
    assert parse_oai(bad).error == "badResumptionToken"


@pytest.mark.parametrize("data", [BUSY, RAW[: len(RAW) // 2], b"", b"<rss/>",
                                  b"<!DOCTYPE x [<!ENTITY a 'b'>]><x>&a;</x>"])
def test_what_is_not_oai_pmh_is_a_bad_answer(data: bytes):
    with pytest.raises(ArxivBadAnswer):
        parse_oai(data)


@pytest.mark.parametrize(("line", "names"), [
    ("A. Author", ("A. Author",)),
    ("A. Author and B. Writer", ("A. Author", "B. Writer")),
    ("A (X, Y), B (Z) and C", ("A", "B", "C")),
    ("A, B, and C", ("A", "B", "C")),
    ("The ATLAS Collaboration (CERN (Geneva))", ("The ATLAS Collaboration",)),
])
def test_arxivraw_author_lines(line: str, names: tuple[str, ...]):
    assert split_authors(line) == names


_LINES = ["A, B, and C", ",, A", "A,", "", "A (X (Y) Z) and B", "A ,and B", "A (X", "(X) A",
          "A (X)\n  and B (Y)", "A &amp; B and C", "A,and B", ","]


@pytest.mark.parametrize("lines", [_LINES, _LINES[:1] + _LINES[4:6]], ids=["empty", "no-empty"])
def test_author_lines_of_a_whole_page_read_as_one_line_is(lines: list[str],
                                                         monkeypatch: pytest.MonkeyPatch):
    # a page's author lines are split as one column (no step per line), with or without a
    # line that gives an empty name; each record has what split_authors gives its line
    data = RAW
    for line in lines:
        at = _nth_authors(data, lines.index(line))
        end = data.index(b"</authors>", at)
        data = data[:at + 9] + line.encode() + data[end:]
    assert _read_from_text(data, monkeypatch)
    records = parse_oai(data).records
    assert [r.paper.authors for r in records[:len(lines)]] == [
        split_authors(line.replace("&amp;", "&")) for line in lines]


def _nth_authors(data: bytes, n: int) -> int:
    at = -1
    for _ in range(n + 1):
        at = data.index(b"<authors>", at + 1)
    return at


# -- values from outside are range-checked where they are parsed (as the Atom parser's) ---------
FIRST_DATE = b"<date>Wed, 23 Jan 2008 21:06:41 GMT</date>"


@pytest.mark.parametrize(("old", "new"), [
    pytest.param(FIRST_DATE, b"<date>Fri, 31 Dec 9999 23:59:59 GMT</date>", id="version-year-9999"),
    pytest.param(FIRST_DATE, b"<date>Mon, 1 Jan 0001 00:00:00 GMT</date>", id="version-year-1"),
    pytest.param(b"<datestamp>2008-01-25</datestamp>", b"<datestamp>9999-12-31</datestamp>",
                 id="datestamp-year-9999"),
])
def test_a_record_that_cannot_be_represented_is_dropped_with_a_warning(
        old: bytes, new: bytes, caplog: pytest.LogCaptureFixture):
    data = RAW.replace(old, new, 1)
    assert data != RAW
    with caplog.at_level("WARNING", logger="bot.fetch.oai"):
        page = parse_oai(data)
    assert len(page.records) == 999 and page.dropped == 1
    assert "0801.3673" not in {r.paper.arxiv_id for r in page.records}
    assert "OAI record dropped: 0801.3673" in caplog.text
    assert page.last_datestamp is not None and page.last_datestamp.year < 3000


def test_a_record_with_more_versions_than_believable_is_dropped():
    versions = b"".join(b"<version version='v%d'>%s<size>1kb</size></version>" % (i, FIRST_DATE)
                        for i in range(1, 10_002))
    data = RAW.replace(FIRST_DATE, versions[len(b"<version version='v1'>"):-len(b"</version>")]
                       , 1)
    page = parse_oai(data)
    assert page.dropped == 1 and len(page.records) == 999


@pytest.mark.parametrize("size", [b"1" + b"0" * 30, b"-1", b"1e6", b"\xd9\xa3"])
def test_a_list_size_that_is_not_a_count_makes_the_answer_bad(size: bytes):
    data = RAW.replace(b"completeListSize='907096'", b"completeListSize='" + size + b"'")
    assert data != RAW
    with pytest.raises(ArxivBadAnswer, match="completeListSize"):
        parse_oai(data)


@pytest.mark.parametrize(("old", "new"), [
    pytest.param(b"<id>0801.3673</id>", b"<id>not an id</id>", id="id"),
    pytest.param(FIRST_DATE, b"<date>yesterday</date>", id="version-date"),
    pytest.param(b"<datestamp>2008-01-25</datestamp>", b"<datestamp>soon</datestamp>",
                 id="datestamp"),
])
def test_a_value_that_is_not_what_it_says_makes_the_answer_bad(old: bytes, new: bytes):
    data = RAW.replace(old, new, 1)
    assert data != RAW
    with pytest.raises(ArxivBadAnswer):
        parse_oai(data)


def test_a_deleted_record_is_left_out_and_the_others_read_as_before():
    start = RAW.index(b"<record>")
    end = RAW.index(b"</record>", start)
    deleted = (b"<record><header status='deleted'><identifier>oai:arXiv.org:0801.3673"
               b"</identifier><datestamp>2008-01-26</datestamp></header>")
    page = parse_oai(RAW[:start] + deleted + RAW[end:])
    full = parse_oai(RAW)
    assert [r.paper.arxiv_id for r in page.records] == [
        r.paper.arxiv_id for r in full.records if r.paper.arxiv_id != "0801.3673"]
    assert page.records == full.records[1:] and page.dropped == 0


def test_a_version_date_in_a_rarer_form_gives_the_same_papers():
    # "+0000" instead of "GMT": the page is read record by record, with the same outcome
    data = RAW.replace(FIRST_DATE, b"<date>Wed, 23 Jan 2008 21:06:41 +0000</date>", 1)
    assert data != RAW
    assert parse_oai(data) == parse_oai(RAW)


@pytest.mark.parametrize("old, new, from_text", [
    # arXiv's own layout is read from its text; anything else from the page's tree
    (b"</record>\n<record>", b"</record>\n<!-- a comment -->\n<record>", False),
    (b"<title>Variational Functionals", b"<title><![CDATA[Variational]]> Functionals", False),
    (b"<title>Variational", b"<title>&#86;ariational", False),
    (b"<arXivRaw xsi:", b"<arXivRaw xmlns:r='http://arxiv.org/OAI/arXivRaw/' xsi:", False),
    (b"<request resumptionToken='496549|46001'", b"<request resumptionToken=\"496549|46001\"",
     True),
    (b"\n", b"\r\n", True),
], ids=["comment", "cdata", "reference", "second-prefix", "double-quotes", "crlf"])
def test_the_same_page_written_differently_gives_the_same_papers(
        old: bytes, new: bytes, from_text: bool, monkeypatch: pytest.MonkeyPatch):
    data = RAW.replace(old, new)
    assert data != RAW
    assert _read_from_text(data, monkeypatch) is from_text
    assert parse_oai(data) == parse_oai(RAW)


def _read_from_text(data: bytes, monkeypatch: pytest.MonkeyPatch) -> bool:
    """Whether parse_oai reads the page without building its tree."""
    trees = []

    def parse_screened(*args: object, **kwargs: object) -> object:
        trees.append(1)
        return real(*args, **kwargs)

    real = oai.parse_screened
    with monkeypatch.context() as patched:
        patched.setattr(oai, "parse_screened", parse_screened)
        with contextlib.suppress(ArxivBadAnswer):
            parse_oai(data)
    return not trees


def _outcome(data: bytes) -> object:
    try:
        return parse_oai(data)
    except ArxivBadAnswer as exc:
        return f"ArxivBadAnswer: {exc}"


_V4 = b"<date>Thu, 11 Sep 2008 22:03:53 GMT</date>"  # 0801.3674's last version's date


@pytest.mark.parametrize("old, new, versions", [
    # a later version without a date: the tree leaves it out, a version fewer
    (b"<date>Mon, 4 Feb 2008 15:05:55 GMT</date>", b"<date>  </date>", 3),
    (_V4, b"<date>\n</date>", 3),
    # the last or first date not a real day, out of range, or not in the usual form
    (_V4, b"<date>Thu, 31 Sep 2008 22:03:53 GMT</date>", None),
    (_V4, b"<date>Thu, 11 Sep 3008 22:03:53 GMT</date>", None),
    (_V4, b"<date>Thu,  11 Sep 2008\n22:03:53 GMT </date>", 4),
    (_V4, b"<date>Thu, 11 Sep 2008 22:03:53 +0000</date>", 4),
    (b"<date>Wed, 23 Jan 2008 21:13:53 GMT</date>", b"<date> Wed, 23 Jan 2008 21:13:53 GMT</date>",
     4),
    (b"<date>Wed, 23 Jan 2008 21:13:53 GMT</date>", b"<date></date>", 3),
], ids=["blank-middle", "blank-last", "no-such-day", "out-of-range", "spaced", "offset",
        "first-spaced", "first-empty"])
def test_odd_version_dates_are_read_from_the_tree(old: bytes, new: bytes, versions: int | None,
                                                  monkeypatch: pytest.MonkeyPatch):
    # the text reading takes only dates as arXiv writes them; the tree says what the rest is
    data = RAW.replace(old, new, 1)
    assert data != RAW
    assert not _read_from_text(data, monkeypatch)
    outcome = _outcome(data)
    monkeypatch.setattr("bot.fetch.oai.read_text", lambda data: None)
    assert _outcome(data) == outcome
    if versions is None:  # the page fails, or the record is dropped, saying which date
        assert ("0801.3674" in outcome if isinstance(outcome, str)
                else outcome.dropped == 1 and "0801.3674" not in _ids(outcome))
    else:
        paper = next(r.paper for r in outcome.records if r.paper.arxiv_id == "0801.3674")
        assert paper.version == versions


def _ids(page: object) -> set[str]:
    return {r.paper.arxiv_id for r in page.records}


def _harvest_page() -> bytes:
    """A ListRecords page of the local OAI-PMH server, as the harvest tests are served."""
    items = [OaiItem(p, date(2025, 11, 13)) for p in seed_corpus()]
    records = "".join(_record(item, raw=True) for item in items)
    return _envelope({"verb": "ListRecords", "metadataPrefix": "arXivRaw"},
                     f"<ListRecords>{records}</ListRecords>")


@pytest.mark.parametrize("page", [RAW, _harvest_page()], ids=["arxiv-2014", "local-server"])
def test_the_text_reading_gives_what_the_tree_gives(page: bytes,
                                                    monkeypatch: pytest.MonkeyPatch):
    # the shortcut is taken for these pages, and the tree (forced) reads them alike
    assert read_text(screen(page, "OAI-PMH")) is not None
    assert _read_from_text(page, monkeypatch)
    from_text = parse_oai(page)
    monkeypatch.setattr("bot.fetch.oai.read_text", lambda data: None)
    from_tree = parse_oai(page)
    assert len(from_tree.records) > 10
    assert from_text == from_tree
