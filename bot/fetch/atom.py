"""Fetch stage: turns one arXiv API answer (Atom bytes) into a `Feed` of `Paper` records.

Reads the API's old and new formats alike: elements are found by namespace family and local
name, never by order, prefix, placement of namespace declarations, or http/https links.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime

from lxml import etree

from bot.fetch.errors import ArxivBadAnswer, ArxivRejected
from storage.records import Feed, Paper

log = logging.getLogger(__name__)

# Values from outside are range-checked here, before they reach date arithmetic or SQLite's
# 64-bit integers (a year-9999 date or a 10^20 version raised OverflowError further down).
MAX_COUNT = 10**9  # arXiv holds a few million papers; a count beyond this is not believable
MAX_VERSION = 10_000
EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)
LATEST = datetime(3000, 1, 1, tzinfo=UTC)

# Namespace URI → family. The https spellings are accepted in case arXiv ever "upgrades" them.
_FAMILIES = {
    "http://www.w3.org/2005/Atom": "atom",
    "https://www.w3.org/2005/Atom": "atom",
    "http://arxiv.org/schemas/atom": "arxiv",
    "https://arxiv.org/schemas/atom": "arxiv",
    "http://a9.com/-/spec/opensearch/1.1/": "os",
    "https://a9.com/-/spec/opensearch/1.1/": "os",
}
_ID = re.compile(r"(?P<id>\d{4}\.\d{4,5}|[A-Za-z][\w.\-]*/\d{7})(?:v(?P<version>\d+))?")
_HTML_TITLE = re.compile(rb"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)

Children = dict[str, list[etree._Element]]


def parse_feed(data: bytes) -> Feed:
    """Parse one API answer. Raises ArxivRejected for an error feed, ArxivBadAnswer otherwise."""
    root = _parse_xml(data)
    if _key(root) != "atom:feed":
        raise ArxivBadAnswer(f"not an Atom feed: root element <{etree.QName(root).localname}>")
    kids = _children(root)
    entries = [_children(entry) for entry in kids.get("atom:entry", [])]
    for entry in entries:
        _raise_if_error(entry)
    papers = [paper for entry in entries if (paper := _representable(entry)) is not None]
    return Feed(
        total_results=_int(kids, "os:totalResults"),
        start_index=_int(kids, "os:startIndex"),
        items_per_page=_int(kids, "os:itemsPerPage"),
        entries=tuple(papers),
        dropped=len(entries) - len(papers),
    )


class Unrepresentable(ValueError):
    """An entry value out of any sensible range: the entry is dropped, the page kept."""


def _representable(kids: Children) -> Paper | None:
    try:
        return _paper(kids)
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


# Bidi embeddings, overrides and isolates (U+202A–202E, U+2066–2069): left open in a title they
# reorder what follows it (the rest of a digest table row, the next paper of a message).
_BIDI_CONTROLS = dict.fromkeys([*range(0x202A, 0x202F), *range(0x2066, 0x206A)])


def collapse(text: str | None) -> str:
    """Every run of whitespace (newlines, indentation, NBSP) becomes one space, ends stripped,
    bidi embedding controls dropped (right-to-left text itself is kept)."""
    return " ".join((text or "").translate(_BIDI_CONTROLS).split())


def _parse_xml(data: bytes) -> etree._Element:
    head = data[:512].lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html")):
        title = _HTML_TITLE.search(data)
        shown = collapse(title.group(1).decode("utf-8", "replace")) if title else "no title"
        raise ArxivBadAnswer(f"an HTML page, not Atom ({shown[:100]})")
    # A DTD is never part of an arXiv answer; refusing it outright is the XML-bomb defence
    # (the parser options below are the second line).
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        raise ArxivBadAnswer("the answer declares a DTD or entities")
    parser = etree.XMLParser(
        resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False
    )
    try:
        root = etree.fromstring(data, parser)
    except etree.XMLSyntaxError as exc:
        raise ArxivBadAnswer(f"unparsable XML: {exc}") from None
    if root is None:
        raise ArxivBadAnswer("empty answer")
    docinfo = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None:
        raise ArxivBadAnswer("the answer declares a DTD or entities")
    return root


_KEYS: dict[str, str | None] = {}
ATOM_NAME = "{http://www.w3.org/2005/Atom}name"


def _key(element: etree._Element) -> str | None:
    tag = element.tag
    if not isinstance(tag, str):  # comments and processing instructions
        return None
    key = _KEYS.get(tag, "")
    if key == "":  # first sight of this tag: resolve its namespace once (a hot path)
        name = etree.QName(tag)
        family = _FAMILIES.get(name.namespace or "")
        key = _KEYS[tag] = f"{family}:{name.localname}" if family else None
    return key


def _children(element: etree._Element) -> Children:
    found: Children = {}
    for child in element:
        key = _key(child)
        if key is not None:
            found.setdefault(key, []).append(child)
    return found


def _text(kids: Children, key: str) -> str:
    elements = kids.get(key)
    return collapse("".join(elements[0].itertext())) if elements else ""


def _int(kids: Children, key: str) -> int:
    """A count of the page: one that is not a believable number makes the answer bad."""
    text = _text(kids, key)
    if not (text.isascii() and text.isdigit() and len(text) <= 20 and int(text) <= MAX_COUNT):
        raise ArxivBadAnswer(f"<{key}> is missing or not a count up to {MAX_COUNT:,}: "
                             f"{text[:40]!r}")
    return int(text)


def _datetime(text: str, arxiv_id: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise ArxivBadAnswer(f"invalid date {text[:40]!r}") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    try:  # 0001-01-01T00:00:00+01:00 would be in year 0 once in UTC
        value = value.astimezone(UTC)
    except OverflowError:
        value = LATEST
    if not EARLIEST <= value < LATEST:
        raise Unrepresentable(f"{arxiv_id}: date {text[:40]!r} is out of range")
    return value


def _raise_if_error(kids: Children) -> None:
    if "/api/errors" in _text(kids, "atom:id"):
        raise ArxivRejected(_text(kids, "atom:summary") or _text(kids, "atom:title") or "error")


def _paper(kids: Children) -> Paper:
    arxiv_id, version = split_id(_text(kids, "atom:id"))
    published = _text(kids, "atom:published") or _text(kids, "atom:updated")
    updated = _text(kids, "atom:updated") or published
    if not published:
        raise ArxivBadAnswer(f"entry {arxiv_id} has no date")
    categories = tuple(
        dict.fromkeys(
            term for c in kids.get("atom:category", []) if (term := collapse(c.get("term")))
        )
    )
    primary = kids.get("arxiv:primary_category")
    return Paper(
        arxiv_id=arxiv_id,
        version=version,
        title=_text(kids, "atom:title"),
        abstract=_text(kids, "atom:summary"),
        authors=tuple(_author_names(kids)),
        published=_datetime(published, arxiv_id),
        updated=_datetime(updated, arxiv_id),
        primary_category=(collapse(primary[0].get("term")) if primary else "")
        or (categories[0] if categories else ""),
        categories=categories,
        comment=_text(kids, "arxiv:comment"),
        journal_ref=_text(kids, "arxiv:journal_ref"),
        doi=_text(kids, "arxiv:doi"),
    )


def _author_names(kids: Children) -> list[str]:
    names = (collapse(author.findtext(ATOM_NAME)) or _text(_children(author), "atom:name")
             for author in kids.get("atom:author", []))
    return [name for name in names if name]
