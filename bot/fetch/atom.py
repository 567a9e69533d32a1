"""Fetch stage: turns one arXiv API answer (Atom bytes) into a `Feed` of `Paper` records.

Reads the API's old and new formats alike: elements are found by namespace and local name
(http or https URIs), never by order, prefix or placement of namespace declarations. The
values are read by a small XSLT program in C: parsing was half of a search cycle's CPU.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime

from lxml import etree

from bot.fetch.errors import ArxivBadAnswer, ArxivRejected
from bot.fetch.safexml import Extractor, collapse, items, parse_xml, value_of, values_of
from storage.records import Feed, Paper

__all__ = ["collapse", "parse_feed", "split_id"]

log = logging.getLogger(__name__)

# Values from outside are range-checked here, before they reach date arithmetic or SQLite's
# 64-bit integers (a year-9999 date or a 10^20 version raised OverflowError further down).
MAX_COUNT = 10**9  # arXiv holds a few million papers; a count beyond this is not believable
MAX_VERSION = 10_000
EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)
LATEST = datetime(3000, 1, 1, tzinfo=UTC)

# The https spellings are accepted in case arXiv ever "upgrades" them.
_ATOM = ("http://www.w3.org/2005/Atom", "https://www.w3.org/2005/Atom")
_ARXIV = ("http://arxiv.org/schemas/atom", "https://arxiv.org/schemas/atom")
_OPENSEARCH = ("http://a9.com/-/spec/opensearch/1.1/", "https://a9.com/-/spec/opensearch/1.1/")


_FEED_ROOTS = {f"{{{uri}}}feed" for uri in _ATOM}
_ID = re.compile(r"(?P<id>\d{4}\.\d{4,5}|[A-Za-z][\w.\-]*/\d{7})(?:v(?P<version>\d+))?")
_FIELDS = ("id", "title", "summary", "published", "updated", "authors", "categories",
           "comment", "journal_ref", "doi", "primary_category")


def _stylesheet(atom: str, arxiv: str, opensearch: str) -> Extractor:
    """The first line holds the page's counts, then one line per entry with _FIELDS."""
    entry = "".join([
        *(value_of(f"a:{name}") for name in ("id", "title", "summary", "published", "updated")),
        values_of("a:author/a:name"), values_of("a:category/@term"),
        *(value_of(f"x:{name}") for name in ("comment", "journal_ref", "doi")),
        value_of("x:primary_category/@term"),
    ])
    counts = "".join(value_of(f"/*/o:{name}")
                     for name in ("totalResults", "startIndex", "itemsPerPage"))
    return Extractor(f"""<xsl:stylesheet version="1.0"
          xmlns:xsl="http://www.w3.org/1999/XSL/Transform" xmlns:a="{atom}" xmlns:x="{arxiv}"
          xmlns:o="{opensearch}"><xsl:output method="text" encoding="UTF-8"/>
        <xsl:template match="/">{counts}<xsl:text>&#10;</xsl:text>
          <xsl:for-each select="/*/a:entry">{entry}<xsl:text>&#10;</xsl:text></xsl:for-each>
        </xsl:template></xsl:stylesheet>""")


_EXTRACTORS = {(a, x, o): _stylesheet(a, x, o) for a in _ATOM for x in _ARXIV for o in _OPENSEARCH}


def parse_feed(data: bytes) -> Feed:
    """Parse one API answer. Raises ArxivRejected for an error feed, ArxivBadAnswer otherwise."""
    root, references = parse_xml(data, "Atom")
    if root.tag not in _FEED_ROOTS:
        name = etree.QName(root).localname if isinstance(root.tag, str) else "?"
        raise ArxivBadAnswer(f"not an Atom feed: root element <{name}>")
    spelling = (root.tag[1:].split("}")[0], _pick(data, _ARXIV), _pick(data, _OPENSEARCH))
    counts, *rows = _EXTRACTORS[spelling].rows(root, references)
    entries = [dict(zip(_FIELDS, row, strict=False)) for row in rows]
    for fields in entries:
        _raise_if_error(fields)
    papers = [paper for fields in entries if (paper := _representable(fields)) is not None]
    return Feed(
        total_results=_count(counts, 0, "totalResults"),
        start_index=_count(counts, 1, "startIndex"),
        items_per_page=_count(counts, 2, "itemsPerPage"),
        entries=tuple(papers),
        dropped=len(entries) - len(papers),
    )


def _pick(data: bytes, uris: tuple[str, ...]) -> str:
    """The spelling of a namespace this page uses: one search per page, not per element."""
    return next((uri for uri in uris[1:] if uri.encode() in data), uris[0])


class Unrepresentable(ValueError):
    """An entry value out of any sensible range: the entry is dropped, the page kept."""


def _representable(fields: dict[str, str]) -> Paper | None:
    try:
        return _paper(fields)
    except Unrepresentable as exc:
        log.warning("arXiv entry dropped: %s", exc)
        return None


def split_id(raw: str) -> tuple[str, int]:
    """`http://arxiv.org/abs/astro-ph/0601001v2` → ("astro-ph/0601001", 2); no version means 1."""
    tail = raw.strip().rsplit("/abs/", 1)[-1]
    match = _ID.fullmatch(tail)
    if match is None:
        raise ArxivBadAnswer(f"entry id is not an arXiv id: {raw.strip()[:100]!r}")
    version = match["version"] or "1"
    if len(version) > len(str(MAX_VERSION)) or not 1 <= int(version) <= MAX_VERSION:
        raise Unrepresentable(f"{match['id']}: version {version[:30]} is out of range")
    return match["id"], int(version)


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


def _raise_if_error(fields: dict[str, str]) -> None:
    if "/api/errors" in fields.get("id", ""):
        raise ArxivRejected(fields.get("summary") or fields.get("title") or "error")


def _paper(fields: dict[str, str]) -> Paper:
    get = fields.get
    arxiv_id, version = split_id(get("id", ""))
    published = get("published") or get("updated") or ""
    if not published:
        raise ArxivBadAnswer(f"entry {arxiv_id} has no date")
    updated = get("updated") or published
    categories = tuple(dict.fromkeys(items(get("categories", ""))))
    return Paper(
        arxiv_id=arxiv_id,
        version=version,
        title=get("title", ""),
        abstract=get("summary", ""),
        authors=items(get("authors", "")),
        published=parse_datetime(published, arxiv_id),
        updated=parse_datetime(updated, arxiv_id),
        primary_category=get("primary_category") or (categories[0] if categories else ""),
        categories=categories,
        comment=get("comment", ""),
        journal_ref=get("journal_ref", ""),
        doi=get("doi", ""),
    )
