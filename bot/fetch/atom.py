"""Fetch stage: turns one arXiv API answer (Atom bytes) into a `Feed` of `Paper` records.

Reads the API's old and new formats alike: elements are found by namespace and local name
(http or https URIs), never by order, prefix or placement of namespace declarations. Each
field is read for the whole page by one compiled XPath (`safexml.Columns`): parsing was half
of a search cycle's CPU, and per-entry work in Python is what it costs. A page laid out the
way arXiv writes it skips the tree (bot/fetch/atom_text.py, held to the same values by
tests/test_atom_text.py), and its Papers are built column by column (frozen.build).
"""

from __future__ import annotations

import functools
import logging
import re
from datetime import UTC, datetime

from lxml import etree

from bot.fetch.atom_text import read_text
from bot.fetch.errors import ArxivBadAnswer, ArxivRejected
from bot.fetch.frozen import build
from bot.fetch.safexml import Columns, MixedContent, collapse, parse_screened, screen
from storage.records import Feed, Paper

__all__ = ["collapse", "parse_feed", "split_id"]

log = logging.getLogger(__name__)

# Values from outside are range-checked here, before they reach date arithmetic or SQLite's
# 64-bit integers (a year-9999 date or a 10^20 version raised OverflowError further down).
MAX_COUNT = 10**9  # arXiv holds a few million papers; a count beyond this is not believable
MAX_VERSION = 10_000
_VERSION_DIGITS = len(str(MAX_VERSION))  # a longer number is not converted at all
EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)
LATEST = datetime(3000, 1, 1, tzinfo=UTC)

# The https spellings are accepted in case arXiv ever "upgrades" them.
_ATOM = ("http://www.w3.org/2005/Atom", "https://www.w3.org/2005/Atom")
_ARXIV = ("http://arxiv.org/schemas/atom", "https://arxiv.org/schemas/atom")
_OPENSEARCH = ("http://a9.com/-/spec/opensearch/1.1/", "https://a9.com/-/spec/opensearch/1.1/")


_FEED_ROOTS = {f"{{{uri}}}feed" for uri in _ATOM}
_ID = re.compile(r"(?P<id>\d{4}\.\d{4,5}|[A-Za-z][\w.\-]*/\d{7})(?:v(?P<version>\d+))?")


class _Paths:
    """Compiled XPaths for one spelling of the namespaces: each selects one field of every
    entry of the page at once."""

    def __init__(self, atom: str, arxiv: str, opensearch: str) -> None:
        ns = {"a": atom, "x": arxiv, "o": opensearch}

        def path(expression: str) -> etree.XPath:
            return etree.XPath(expression, namespaces=ns, smart_strings=False)

        self.entries = path("/a:feed/a:entry")
        self.counts = [path(f"/a:feed/o:{name}")
                       for name in ("totalResults", "startIndex", "itemsPerPage")]
        # `[1]`: the first one counts, and libxml2 stops looking through an entry there.
        # A field every entry has is read as its text nodes (`Columns.first_leaf`), falling
        # back on its elements; one that many entries lack, as its elements straight away.
        self.texts = [(path(f"/a:feed/a:entry/{name}[1]/node()") if name.startswith("a:")
                       else None, path(f"/a:feed/a:entry/{name}[1]")) for name in (
            "a:id", "a:title", "a:summary", "a:published", "a:updated",
            "x:comment", "x:journal_ref", "x:doi")]
        self.names = path("/a:feed/a:entry/a:author/a:name")
        self.categories = path("/a:feed/a:entry/a:category")
        self.primary = path("/a:feed/a:entry/x:primary_category[1]")
        self.primary_terms = path("/a:feed/a:entry/x:primary_category[1]/@term")


@functools.cache
def _paths(atom: str, arxiv: str, opensearch: str) -> _Paths:
    return _Paths(atom, arxiv, opensearch)


def parse_feed(data: bytes) -> Feed:
    """Parse one API answer. Raises ArxivRejected for an error feed, ArxivBadAnswer otherwise.
    A page laid out as arXiv writes it is read from its text (atom_text.py); any other is
    read first from a tree without the whitespace between elements (13 % faster); a value with
    child nodes (markup or a comment in a title: never seen from arXiv) reads the page again
    from a tree that has it, where that whitespace is part of the value."""
    screened = screen(data, "Atom")
    text = read_text(screened)
    if text is not None:
        return _feed(text.counts, text.columns, text.names, text.terms, text.primary)
    try:
        return _read_feed(screened, blanks=False)
    except MixedContent:
        return _read_feed(screened, blanks=True)


def _read_feed(data: bytes, *, blanks: bool) -> Feed:
    root, second_look = parse_screened(data, blanks=blanks)
    if root.tag not in _FEED_ROOTS:
        name = etree.QName(root).localname if isinstance(root.tag, str) else "?"
        raise ArxivBadAnswer(f"not an Atom feed: root element <{name}>")
    paths = _paths(root.tag[1:].split("}")[0], _pick(data, _ARXIV), _pick(data, _OPENSEARCH))
    columns = Columns(paths.entries(root), second_look, blanks=blanks)
    texts = [columns.first(elements(root)) if nodes is None else
             columns.first_leaf(nodes(root), lambda path=elements: columns.first(path(root)))
             for nodes, elements in paths.texts]
    for raw_id, title, summary in zip(*texts[:3], strict=True):
        if "/api/errors" in raw_id:
            raise ArxivRejected(summary or title or "error")
    names = columns.every(paths.names(root), depth=2)
    terms = columns.every_attribute(paths.categories(root), "term")
    primary = columns.first_leaf(paths.primary_terms(root), functools.partial(
        columns.first_attribute, paths.primary(root), "term"))
    page = Columns([root], second_look, blanks=blanks)
    counts = [page.first(path(root))[0] for path in paths.counts]
    return _feed(counts, texts, names, terms, primary)


def _feed(counts: list[str], texts: list[list[str]], names: list[list[str]],
          terms: list[list[str]], primary: list[str]) -> Feed:
    """The Feed of a page's values, read from its tree or its text alike."""
    papers = _regular_papers(texts, names, terms, primary)
    if papers is None:
        papers = []
        for row in zip(*texts, names, terms, primary, strict=True):
            try:
                papers.append(_paper(*row))
            except Unrepresentable as exc:
                log.warning("arXiv entry dropped: %s", exc)
    return Feed(
        total_results=_count(counts, 0, "totalResults"),
        start_index=_count(counts, 1, "startIndex"),
        items_per_page=_count(counts, 2, "itemsPerPage"),
        entries=tuple(papers),
        dropped=len(primary) - len(papers),
    )


# A column of ids as arXiv writes them, one a line: each in range, so read at once
_REGULAR_IDS = re.compile(r"^[^\n]*/abs/([0-9]{4}\.[0-9]{4,5}|[A-Za-z][\w.\-]*/[0-9]{7})"
                          r"v([1-9][0-9]{0,3})$", re.MULTILINE)


def _regular_papers(texts: list[list[str]], names: list[list[str]], terms: list[list[str]],
                    primary: list[str]) -> list[Paper] | None:
    """The page's Papers built column by column (frozen.build) when every id and date is in
    arXiv's own form and range, so no entry can fail or be dropped; otherwise None (the
    entries are then read one by one by _paper, which says what is wrong)."""
    raw_ids, titles, summaries, published_texts, updated_texts, comments, journal_refs, dois = (
        texts)
    count = len(raw_ids)
    ids = _REGULAR_IDS.findall("\n".join(raw_ids))
    moments = _regular_dates(published_texts + updated_texts)
    if len(ids) != count or moments is None:
        return None
    categories = [tuple(dict.fromkeys(filter(None, row))) for row in terms]
    return build(Paper, [
        [arxiv_id for arxiv_id, _ in ids], [int(version) for _, version in ids], titles,
        summaries, [tuple(filter(None, row)) for row in names], moments[:count],
        moments[count:], [first or (row[0] if row else "") for first, row in zip(
            primary, categories, strict=True)], categories, comments, journal_refs, dois])


def _regular_dates(texts: list[str]) -> list[datetime] | None:
    """Each date as parse_datetime gives it, when every one is in UTC and in range."""
    try:
        moments = list(map(datetime.fromisoformat, texts))
    except ValueError:  # an empty or malformed date
        return None
    if moments and not (all(moment.tzinfo is UTC for moment in moments)
                        and min(moments) >= EARLIEST and max(moments) < LATEST):
        return None
    return moments


def _pick(data: bytes, uris: tuple[str, ...]) -> str:
    """The spelling of a namespace this page uses: one search per page, not per element."""
    return next((uri for uri in uris[1:] if uri.encode() in data), uris[0])


class Unrepresentable(ValueError):
    """An entry value out of any sensible range: the entry is dropped, the page kept."""


def split_id(raw: str) -> tuple[str, int]:
    """`http://arxiv.org/abs/astro-ph/0601001v2` → ("astro-ph/0601001", 2); no version means 1."""
    return _split_id(raw.strip())


def _split_id(raw: str) -> tuple[str, int]:
    match = _ID.fullmatch(raw.rpartition("/abs/")[2])
    if match is None:
        raise ArxivBadAnswer(f"entry id is not an arXiv id: {raw[:100]!r}")
    arxiv_id, version = match.groups()
    if version is None:
        return arxiv_id, 1
    if len(version) <= _VERSION_DIGITS and 1 <= (number := int(version)) <= MAX_VERSION:
        return arxiv_id, number
    raise Unrepresentable(f"{arxiv_id}: version {version[:30]} is out of range")


def _count(counts: list[str], index: int, key: str) -> int:
    """A count of the page: one that is not a believable number makes the answer bad."""
    text = counts[index] if index < len(counts) else ""
    if not (text.isascii() and text.isdigit() and len(text) <= 20 and int(text) <= MAX_COUNT):
        raise ArxivBadAnswer(f"<os:{key}> is missing or not a count up to {MAX_COUNT:,}: "
                             f"{text[:40]!r}")
    return int(text)


def parse_datetime(text: str, arxiv_id: str) -> datetime:
    """An ISO date in UTC; one outside 1900–3000 drops its entry (Unrepresentable)."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise ArxivBadAnswer(f"invalid date {text[:40]!r}") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    elif value.tzinfo is not UTC:
        try:  # 0001-01-01T00:00:00+01:00 would be in year 0 once in UTC
            value = value.astimezone(UTC)
        except OverflowError:
            value = LATEST
    if not EARLIEST <= value < LATEST:
        raise Unrepresentable(f"{arxiv_id}: date {text[:40]!r} is out of range")
    return value


def _paper(raw_id: str, title: str, summary: str, published_text: str, updated_text: str,
           comment: str, journal_ref: str, doi: str, names: list[str], terms: list[str],
           primary: str) -> Paper:
    """One entry's values (in the order of `_Paths.texts`, then the lists) → a Paper."""
    arxiv_id, version = _split_id(raw_id)
    if not published_text:
        published_text = updated_text
        if not published_text:
            raise ArxivBadAnswer(f"entry {arxiv_id} has no date")
    published = parse_datetime(published_text, arxiv_id)
    updated = (published if not updated_text or updated_text == published_text
               else parse_datetime(updated_text, arxiv_id))
    categories = tuple(dict.fromkeys(filter(None, terms)))
    return Paper(arxiv_id, version, title, summary, tuple(filter(None, names)), published,
                 updated, primary or (categories[0] if categories else ""), categories,
                 comment, journal_ref, doi)
