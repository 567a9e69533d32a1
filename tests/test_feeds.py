"""Tests of the render stage's Atom feeds: what a feed reader parses, golden files, hostile
arXiv text, slugs, and the static files of [digest] feeds_dir.

`UPDATE_GOLDEN=1 pytest tests/test_feeds.py` rewrites tests/golden/feed-* after an intended change.
"""

from __future__ import annotations

import os
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import feedparser
import lxml.etree
import pytest

from bot.config import Config
from bot.render.digest import DigestSection
from bot.render.feeds import (
    ALL,
    CONTENT_TYPE,
    MAX_AUTHORS,
    Rendered,
    public_feeds,
    slug,
    write_feeds,
)
from bot.render.job import write_digest_sync
from storage.store import AsyncStore
from tests.conftest import Clock, PaperFactory
from tests.fakes.arxiv_server import FakeArxiv
from tests.fakes.daemon import run_cli, write_config
from tests.test_digest import all_sections, hostile_papers, paper, seed_sections
from tests.test_hostile_data import KEYWORD, MARKUP, PAPERS, RTL

GOLDEN = Path(__file__).parent / "golden"
URL = "https://papers.example.org/daily"
ATOM = "{http://www.w3.org/2005/Atom}"


def assert_golden(name: str, data: bytes) -> None:
    golden = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN") == "1":
        golden.write_bytes(data)
    assert data == golden.read_bytes(), f"{golden} differs; UPDATE_GOLDEN=1 if intended"


def parse(feed: Rendered) -> feedparser.FeedParserDict:
    parsed = feedparser.parse(feed.body)
    assert not parsed.bozo, parsed.get("bozo_exception")
    assert parsed.version == "atom10"
    return parsed


def assert_atom(feed: Rendered) -> lxml.etree._Element:
    """RFC 4287's required elements: the feed's id, title, updated and an author for entries
    without one; each entry's id, title, updated and (no content) an alternate link."""
    root = lxml.etree.fromstring(feed.body)
    assert root.tag == f"{ATOM}feed"
    for name in ("id", "title", "updated", "author"):
        assert len(root.findall(f"{ATOM}{name}")) == 1, name
    assert root.find(f"{ATOM}link[@rel='self']") is not None
    for node in root.iter(f"{ATOM}entry"):
        for name in ("id", "title", "updated", "published", "summary"):
            assert len(node.findall(f"{ATOM}{name}")) == 1, name
        assert node.find(f"{ATOM}link[@rel='alternate']") is not None
    ids = [e.findtext(f"{ATOM}id") for e in root.iter(f"{ATOM}entry")]
    assert len(ids) == len(set(ids))  # a reader never shows a paper twice
    return root


def test_every_public_feed_parses_cleanly_with_the_required_elements() -> None:
    sections = all_sections()
    feeds = public_feeds(sections, URL)
    assert set(feeds) == {slug(s.keyword) for s in sections} | {ALL}
    for name, feed in feeds.items():
        parsed = parse(feed)
        assert_atom(feed)
        assert parsed.feed.id == f"{URL}/feeds/{name}.atom"
        assert parsed.feed.links[0].href == f"{URL}/feeds/{name}.atom"
    assert CONTENT_TYPE == "application/atom+xml; charset=utf-8"


def test_a_keyword_feed_is_its_window_newest_first_with_every_field() -> None:
    section = seed_sections()[0]
    feed = public_feeds([section], URL)[slug(section.keyword)]
    parsed = parse(feed)
    assert parsed.feed.title == f"Daily Papers: {section.keyword}"
    newest = sorted(section.papers, key=lambda p: (p.published, p.arxiv_id), reverse=True)
    assert [e.id for e in parsed.entries] == [p.abs_url for p in newest]
    for got, want in zip(parsed.entries, newest, strict=True):
        assert got.link == f"https://arxiv.org/abs/{want.arxiv_id}"  # versionless
        assert got.title == want.title
        assert got.summary == want.abstract
        assert [a.name for a in got.authors] == list(want.authors)
        assert got.published_parsed[:6] == want.published.timetuple()[:6]
        assert got.updated_parsed[:6] == want.updated.timetuple()[:6]
        assert got.get("arxiv_comment", "") == want.comment
    newest_change = max(p.updated for p in section.papers)
    assert parsed.feed.updated_parsed[:6] == newest_change.timetuple()[:6]
    assert feed.last_modified == newest_change.strftime("%a, %d %b %Y %H:%M:%S GMT")


def test_categories_primary_first_and_journal_data() -> None:
    p = replace(paper("2511.00777", title="Categorised"), primary_category="cs.CV",
                categories=("cs.LG", "cs.CV", "eess.IV"), doi="10.1/x<y",
                journal_ref="J. Tests 1 (2025) & more")
    parsed = parse(public_feeds([DigestSection("Categorised", [p])], URL)["categorised"])
    (e,) = parsed.entries
    assert [t.term for t in e.tags] == ["cs.CV", "cs.LG", "eess.IV"]
    assert e.arxiv_doi == "10.1/x<y" and e.arxiv_journal_ref == "J. Tests 1 (2025) & more"


def test_all_feed_holds_every_keyword_once_per_paper_with_its_keywords() -> None:
    shared = paper("2511.00001", title="In both", published=datetime(2025, 11, 2, tzinfo=UTC))
    a = DigestSection("Alpha", [shared, paper("2511.00002", title="Only alpha")])
    b = DigestSection("Beta", [shared, paper("2511.00003", title="Only beta",
                                             published=datetime(2025, 11, 3, tzinfo=UTC))])
    parsed = parse(public_feeds([a, b], URL)[ALL])
    assert [e.title for e in parsed.entries] == ["Only beta", "In both", "Only alpha"]
    both = parsed.entries[1]
    assert {t.term for t in both.tags} >= {"Alpha", "Beta"}


def test_an_empty_keyword_is_a_valid_feed() -> None:
    feed = public_feeds([DigestSection("Nothing Yet", [])], URL)["nothing-yet"]
    parsed = parse(feed)
    assert_atom(feed)
    assert parsed.entries == [] and parsed.feed.updated.startswith("1970-01-01")


def test_feeds_golden() -> None:
    feeds = public_feeds(all_sections(), URL)
    assert_golden("feed-keyword.atom", feeds[slug(seed_sections()[0].keyword)].body)
    assert_golden("feed-hostile.atom", feeds[slug('ti:"scene graph" AND cat:cs.CV')].body)


# --- hostile text -----------------------------------------------------------------------------


def test_hostile_text_stays_text_in_every_field() -> None:
    feeds = public_feeds([DigestSection(KEYWORD, PAPERS)], URL)
    feed = feeds[slug(KEYWORD)]
    assert_golden("feed-hostile-data.atom", feed.body)
    root = assert_atom(feed)
    assert not [n for n in root.iter() if isinstance(n.tag, str) and
                n.tag.rpartition("}")[2] in {"script", "img", "a", "b"}]
    parsed = parse(feed)
    assert parsed.feed.title == f"Daily Papers: {KEYWORD}"
    by_id = {e.id: e for e in parsed.entries}
    markup = by_id["https://arxiv.org/abs/2511.00001"]
    assert markup.title == f"Markup in the title {MARKUP}"
    assert markup.summary == f"Markup in the abstract {MARKUP}"
    assert markup.arxiv_comment == f"Comment with {MARKUP}\nand a second line"
    assert by_id["https://arxiv.org/abs/2511.00002"].title == f"Right-to-left {RTL} in the title"
    crowd = by_id["https://arxiv.org/abs/2511.00004"]
    names = [a.name for a in crowd.authors]
    assert names[:MAX_AUTHORS] == list(PAPERS[3].authors[:MAX_AUTHORS])
    assert names[-1] == "et al. (3000 authors)" and len(names) == MAX_AUTHORS + 1
    empty = by_id["https://arxiv.org/abs/2511.00005"]
    assert empty.title == "arXiv:2511.00005"  # a reader needs something to click
    all_feed = parse(feeds[ALL])
    assert {t.term for t in all_feed.entries[0].tags} >= {KEYWORD}


def test_characters_xml_cannot_carry_are_dropped_not_fatal() -> None:
    bell = paper("2511.00009", title="Bell\x07 and form\x0cfeed", abstract="Nul\x00 here \ufffe")
    parsed = parse(public_feeds([DigestSection("Bells", [bell])], URL)["bells"])
    assert parsed.entries[0].title == "Bell and formfeed"
    assert parsed.entries[0].summary == "Nul here"


def test_a_text_holding_the_batch_separator_moves_no_other_text() -> None:
    """The entries' texts are escaped joined by \x1f: one holding it takes the slow path."""
    odd = paper("2511.00010", title="Unit\x1fseparator <here>", abstract="A\x1fB & C",
                authors=("Ann\x1f Lee", "Bo <Li>"))
    after = paper("2511.00011", title="Next <paper>", abstract="Its & own")
    parsed = parse(public_feeds([DigestSection("Units", [odd, after])], URL)["units"])
    by_id = {e.id: e for e in parsed.entries}
    first, second = (by_id[f"https://arxiv.org/abs/2511.0001{n}"] for n in (0, 1))
    assert (first.title, first.summary) == ("Unitseparator <here>", "AB & C")
    assert [a.name for a in first.authors] == ["Ann Lee", "Bo <Li>"]
    assert (second.title, second.summary) == ("Next <paper>", "Its & own")


def test_hostile_digest_papers_keep_their_text() -> None:
    feed = public_feeds([DigestSection("Hostile", hostile_papers())], URL)["hostile"]
    parsed = parse(feed)
    assert parsed.entries[0].title.startswith("Pipes | in [Titles] and `code`")
    assert "<script>alert(1)</script>" in parsed.entries[1].summary


# --- slugs --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("keyword", "expected"), [
    ("Video Understanding", "video-understanding"),
    ("video   understanding", "video-understanding"),  # the same keyword, the same slug
    ("Multimodal Large Language Model", "multimodal-large-language-model"),
    ("3D reconstruction", "3d-reconstruction"),
])
def test_plain_keywords_have_plain_slugs(keyword: str, expected: str) -> None:
    assert slug(keyword) == expected


def test_other_keywords_have_readable_unique_stable_slugs() -> None:
    syntax = slug('ti:"scene graph" AND cat:cs.CV')
    assert syntax.startswith("ti-scene-graph-and-cat-cs-cv--") and len(syntax.split("--")[1]) == 8
    assert syntax == slug('ti:"scene graph"  AND cat:cs.CV')  # stable: from the identity
    keywords = ["C++ models", "C models", "c-models", "Café vision", "Cafe vision", "all",
                "video anomaly detection -surveillance", "video anomaly detection surveillance",
                "x" * 150, "x" * 151, "数据"]
    slugs = [slug(k) for k in keywords]
    assert len(set(slugs)) == len(slugs), slugs
    assert ALL not in slugs
    assert all(s.isascii() and "/" not in s and len(s) <= 70 for s in slugs)
    assert slug("数据").startswith("keyword--")


# --- [digest] feeds_dir -----------------------------------------------------------------------


def test_write_feeds_writes_changes_only_and_removes_feeds_no_longer_public(
        tmp_path: Path) -> None:
    directory = tmp_path / "site" / "feeds"
    sections = seed_sections()
    feeds = public_feeds(sections, URL)
    assert write_feeds(directory, feeds) == len(feeds)
    assert {p.name for p in directory.iterdir()} == {f"{n}.atom" for n in feeds}
    assert (directory / "all.atom").read_bytes() == feeds[ALL].body
    assert write_feeds(directory, feeds) == 0  # unchanged: not rewritten
    fewer = public_feeds(sections[1:], URL)
    write_feeds(directory, fewer)
    assert {p.name for p in directory.iterdir()} == {f"{n}.atom" for n in fewer}
    assert not list(directory.glob(".*"))  # no temporary file left behind


# --- feeds_dir from the store: `daily-papers digest`, a cycle, never a private keyword ----------


def feeds_config(tmp_path: Path, api_url: str, feeds_dir: str = "site/feeds") -> Path:
    return write_config(tmp_path, f"""[arxiv]
api_url = "{api_url}"
keywords = ["graph neural networks", 'ti:"protein folding" AND cat:q-bio.BM']
schedule = "interval"
request_interval = 0.02
[storage]
path = "papers.db"
[digest]
path = "README.md"
html_path = "site/index.html"
feeds_dir = "{feeds_dir}"
[web]
public_url = "https://lab.example.org/papers"
""")


PROTEIN = slug('ti:"protein folding" AND cat:q-bio.BM')


async def test_digest_writes_the_feed_files_beside_the_page(tmp_path: Path) -> None:
    (tmp_path / "site").mkdir()  # the page's folder; the feeds' own is made
    config = feeds_config(tmp_path, "http://127.0.0.1:9/")
    code, out, err = await run_cli(config, "digest")
    assert code == 0, err
    feeds = tmp_path / "site" / "feeds"
    assert out.splitlines() == [f"{tmp_path}/README.md: written",
                                f"{tmp_path}/site/index.html: written", f"{feeds}: written"]
    assert sorted(p.name for p in feeds.iterdir()) == sorted(
        ["all.atom", "graph-neural-networks.atom", f"{PROTEIN}.atom"])
    page = (tmp_path / "site" / "index.html").read_text()
    assert 'href="feeds/graph-neural-networks.atom"' in page  # the page links the files
    parsed = feedparser.parse((feeds / "graph-neural-networks.atom").read_bytes())
    assert not parsed.bozo
    assert parsed.feed.id == "https://lab.example.org/papers/feeds/graph-neural-networks.atom"
    code, out, _ = await run_cli(config, "digest")
    assert out.splitlines()[-1] == f"{feeds}: unchanged"


async def test_a_cycle_rewrites_the_feed_files_with_the_new_papers(
        tmp_path: Path, fake_arxiv: FakeArxiv, paper: PaperFactory) -> None:
    fake_arxiv.add(paper(about="graph neural networks", title="Graph <b>Networks</b> & Friends"))
    (tmp_path / "site").mkdir()
    config = feeds_config(tmp_path, fake_arxiv.url, feeds_dir="public/feeds")
    code, _, err = await run_cli(config, "run", "--once")
    assert code == 0, err
    feeds = tmp_path / "public" / "feeds"
    parsed = feedparser.parse((feeds / "graph-neural-networks.atom").read_bytes())
    assert [e.title for e in parsed.entries] == ["Graph <b>Networks</b> & Friends"]
    fake_arxiv.add(paper(about="graph neural networks", title="Graph networks, again", days=0.5))
    code, _, err = await run_cli(config, "run", "--once")
    assert code == 0, err
    everything = feedparser.parse((feeds / "all.atom").read_bytes())
    assert [e.title for e in everything.entries] == ["Graph networks, again",
                                                     "Graph <b>Networks</b> & Friends"]
    assert not list(feeds.glob(".*"))


async def test_private_keywords_never_reach_the_feed_files(
        tmp_path: Path, store: AsyncStore, clock: Clock, public_and_private_papers: None
) -> None:
    cfg = Config()
    cfg.arxiv.keywords = ["graph neural networks"]
    cfg.digest.path = None
    cfg.digest.feeds_dir = tmp_path / "feeds"
    changed = await store.run(lambda s: write_digest_sync(s, cfg, clock.now()))
    assert changed == [tmp_path / "feeds"]
    assert sorted(p.name for p in (tmp_path / "feeds").iterdir()) == [
        "all.atom", "graph-neural-networks.atom"]
    assert not [p for p in (tmp_path / "feeds").iterdir() if b"secret" in p.read_bytes()]


async def test_an_unwritable_feeds_dir_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "feeds").write_text("a file, not a folder")
    config = feeds_config(tmp_path, "http://127.0.0.1:9/")
    code, out, err = await run_cli(config, "digest")
    assert code == 2 and out == "", (out, err)
    assert err.splitlines() == [f"error: {tmp_path}/site/feeds/all.atom: the Atom feeds cannot be "
                                f"written: {tmp_path}/site/feeds is not a folder; or change "
                                "[digest] feeds_dir"]
    assert not (tmp_path / "papers.db").exists()
