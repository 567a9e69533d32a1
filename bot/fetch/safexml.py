"""Fetch stage: reading an XML answer from arXiv (Atom or OAI-PMH) without trusting it.

No DTD, no entities, no network, no huge trees; an HTML page says what it is. Text is cleaned
once per page where it can be (bidi controls) and collapsed per value. Two ways to read a
page's values, whichever measured faster for its shape (bench/bench_parse.py): `Columns`, one
XPath per field over the whole page (the 100-entry Atom page), and `Extractor`, one XSLT
program writing every value normalized in C (1,000-record OAI pages, long abstracts; an
arXivRaw or Atom page laid out as arXiv writes it skips the tree: bot/fetch/oai_text.py and
atom_text.py, which use `screen` and `from_text` from here).
"""

from __future__ import annotations

import re
import threading
from bisect import bisect_left
from collections.abc import Callable
from itertools import pairwise
from typing import TypeVar

from lxml import etree

from bot.fetch.errors import ArxivBadAnswer

_HTML_TITLE = re.compile(rb"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)

# Bidi embeddings, overrides and isolates (U+202A–202E, U+2066–2069): left open in a title they
# reorder what follows it (the rest of a digest table row, the next paper of a message).
BIDI_CONTROLS = [*range(0x202A, 0x202F), *range(0x2066, 0x206A)]
_BIDI_TABLE = dict.fromkeys(BIDI_CONTROLS)
_BIDI_UTF8 = re.compile("|".join(chr(c) for c in BIDI_CONTROLS).encode())
_DECLARATIONS = re.compile(rb"<!(?:DOCTYPE|ENTITY)")
# What needs a second, per-value look after parsing: a character reference (lxml decodes it
# after the byte pass), or whitespace beyond XML's four (NEL, NBSP, U+1680, U+2000–200A,
# U+2028, U+2029, U+202F, U+205F, U+3000) in UTF-8, looked for only when a lead byte is there.
_REFERENCE = re.compile(rb"&#")
# One pattern per lead byte: a pattern that starts with a literal byte is searched for at
# memchr speed, an alternation of leads byte by byte (15x slower on a page with a dash or NBSP).
_ODD_SPACES = {lead: re.compile(lead + rest) for lead, rest in (
    (b"\xc2", rb"[\x85\xa0]"), (b"\xe1", rb"\x9a\x80"),
    (b"\xe2", rb"(?:\x80[\x80-\x8a\xa8\xa9\xaf]|\x81\x9f)"), (b"\xe3", rb"\x80\x80"))}


def _found(pattern: re.Pattern[bytes], data: bytes, limit: int = 64) -> bool:
    """pattern.search(data), for a pattern whose every match has a rare byte second (`!` of
    `<!DOCTYPE`, `#` of `&#`): memchr finds that byte, where the regex engine stops at every
    `<` or `&` of the page (0.5 ms per 1.8 MB page, against 0.05); a page full of it is
    searched the regex's way."""
    rare = pattern.pattern[1:2]
    at = data.find(rare, 1)
    for _ in range(limit):
        if at < 0:
            return False
        if pattern.match(data, at - 1):
            return True
        at = data.find(rare, at + 1)
    return pattern.search(data) is not None


def second_look(data: bytes) -> bool:
    """Whether values need a second look one by one (see parse_xml)."""
    if _found(_REFERENCE, data):
        return True
    return any(lead in data and odd.search(data) is not None
               for lead, odd in _ODD_SPACES.items())


_LOCAL = threading.local()  # a parser is reusable, but not from two threads at once


def _parser(blanks: bool) -> etree.XMLParser:
    """The parser for this thread; `blanks=False` leaves out the whitespace between elements
    (a 100-entry Atom page has ~2,000 such text nodes: parsing, searching and freeing the tree
    all go faster), which is safe to read values from only where they have no child nodes."""
    name = "keeping" if blanks else "dropping"
    parser = getattr(_LOCAL, name, None)
    if parser is None:
        parser = etree.XMLParser(
            resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False,
            collect_ids=False, remove_blank_text=not blanks)
        setattr(_LOCAL, name, parser)
    return parser


def collapse(text: str | None) -> str:
    """Every run of whitespace (newlines, indentation, NBSP) becomes one space, ends stripped,
    bidi embedding controls dropped (right-to-left text itself is kept)."""
    return " ".join((text or "").translate(_BIDI_TABLE).split())


def parse_xml(data: bytes, what: str, *, blanks: bool = True) -> tuple[etree._Element, bool]:
    """The root element, and whether values need a second look one by one: bidi controls
    written as references, Unicode spaces beyond XML's (rare; the byte pass did the rest).
    `blanks=False`: whitespace-only text between elements left out (see `_parser`)."""
    return parse_screened(screen(data, what), blanks=blanks)


def parse_screened(data: bytes, *, blanks: bool = True) -> tuple[etree._Element, bool]:
    """parse_xml for a page `screen` has passed (and cleaned)."""
    try:
        root = etree.fromstring(data, _parser(blanks))
    except etree.XMLSyntaxError as exc:
        raise ArxivBadAnswer(f"unparsable XML: {exc}") from None
    if root is None:
        raise ArxivBadAnswer("empty answer")
    docinfo = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None:
        raise ArxivBadAnswer("the answer declares a DTD or entities")
    return root, second_look(data)


def screen(data: bytes, what: str) -> bytes:
    """The checks made on the bytes before any parse (an HTML page says what it is, a DTD is
    refused), and the page without bidi controls."""
    head = data[:512].lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html")):
        title = _HTML_TITLE.search(data)
        shown = collapse(title.group(1).decode("utf-8", "replace")) if title else "no title"
        raise ArxivBadAnswer(f"an HTML page, not {what} ({shown[:100]})")
    # A DTD is never part of an arXiv answer; refusing it outright is the XML-bomb defence
    # (the parser options are the second line).
    if _found(_DECLARATIONS, data):
        raise ArxivBadAnswer("the answer declares a DTD or entities")
    if b"\xe2" in data:  # once per page, in C, instead of once per value
        data = _BIDI_UTF8.sub(b"", data)
    return data


class _NoTree:
    """A parser target that keeps nothing: libxml2 checks the page without building a tree."""

    def close(self) -> None:
        return None


def well_formed(data: bytes) -> bool:
    """Whether libxml2 (with the same options as parse_xml) takes the page, no tree built:
    about half the cost of parsing it into one."""
    parser = getattr(_LOCAL, "checking", None)
    if parser is None:
        parser = _LOCAL.checking = etree.XMLParser(
            target=_NoTree(), resolve_entities=False, no_network=True, load_dtd=False,
            huge_tree=False, collect_ids=False)
    try:
        etree.fromstring(data, parser)
    except etree.XMLSyntaxError:
        return False
    return True


class Irregular(Exception):
    """A page not laid out the way a text reading's patterns expect: read it from its tree."""


T = TypeVar("T")


def from_text(data: bytes, read: Callable[[str], T], *, spaced: bool = False) -> T | None:
    """`read` of a screened page's text (oai_text.py, atom_text.py), or None when the page
    is not one its patterns vouch for (`read` raised Irregular), has values that need a
    second look, is not UTF-8 or is not well-formed. `spaced`: tabs and carriage returns
    are spaces in the text `read` gets (replaced in the bytes, before decoding: ASCII bytes
    are never part of a longer UTF-8 character; arXiv writes neither, so the page is
    decoded as it is: a second page-sized copy costs ~850 page faults, ~2 ms of system time
    for a 1.8 MB page on this VM); line breaks are left for `read`."""
    if not data.startswith(b"<?xml") or second_look(data):
        return None
    text = data
    if spaced:
        for space in (b"\r", b"\t"):
            if space in text:
                text = text.replace(space, b" ")
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError:
        return None
    del text  # a spaced copy let go before the reading, whose values then reuse its memory
    try:
        values = read(decoded)
    except Irregular:
        return None
    # Checked last: a page the patterns do not take costs no parse more than before
    return values if well_formed(data) else None


_PREDEFINED = {"&lt;": "<", "&gt;": ">", "&quot;": '"', "&apos;": "'", "&amp;": "&"}
_PREDEFINED_REFERENCE = re.compile("&(?:lt|gt|quot|apos|amp);")


def _predefined(reference: re.Match[str]) -> str:
    return _PREDEFINED[reference.group()]


def unescape(text: str) -> str:
    """The five references XML predefines undone, in one pass from left to right ("&amp;lt;"
    stays "&lt;"): a quarter less time than five str.replace passes over a long abstract, for
    the same text (a reference holds neither "&" nor ";" inside, so no two overlap and none is
    made by undoing another). A text reading meets no other: a page with character references
    goes to the tree (second_look), and one with any other reference is refused by libxml2's
    check after the reading (from_text), so what it is left as is never seen."""
    return _PREDEFINED_REFERENCE.sub(_predefined, text)


FIELD, ITEM = "\t", "\r"  # separators normalize-space() guarantees are in no value


class Extractor:
    """An XSLT program that writes the values of every record of a page as tab-separated,
    whitespace-collapsed text: the tag-targeted reads run in C, the Python side splits one
    string. One compiled program per thread (XSLT objects are not shared)."""

    def __init__(self, stylesheet: str) -> None:
        self.stylesheet = stylesheet
        self._local = threading.local()

    def values(self, root: etree._Element, second_look: bool) -> list[str]:
        """Every value the program wrote, in order (the empty string after the last tab
        included): a page of fixed-width records is read column by column by slicing."""
        xslt = getattr(self._local, "xslt", None)
        if xslt is None:
            xslt = self._local.xslt = etree.XSLT(etree.XML(self.stylesheet.encode()))
        text = str(xslt(root))
        if second_look:  # normalize-space() only collapses XML's four kinds of whitespace
            return _respace_row(text.translate(_BIDI_TABLE).split(FIELD))
        return text.split(FIELD)


def _respace_row(row: list[str]) -> list[str]:
    """Collapse the Unicode spaces normalize-space() kept, item by item (a record's end,
    a lone newline, is kept: it is not a value)."""
    return [value if value == "\n" else ITEM.join(" ".join(part.split()) for part in
                                                  value.split(ITEM)) for value in row]


def value_of(path: str) -> str:
    """XSLT for one value (the first match's whole text), then a field separator."""
    return f'<xsl:value-of select="normalize-space({path})"/><xsl:text>&#9;</xsl:text>'


def values_of(path: str) -> str:
    """XSLT for every match's value, each ended by an item separator."""
    return (f'<xsl:for-each select="{path}"><xsl:value-of select="normalize-space(.)"/>'
            '<xsl:text>&#13;</xsl:text></xsl:for-each><xsl:text>&#9;</xsl:text>')


def items(value: str) -> tuple[str, ...]:
    return tuple(item for item in value.split(ITEM) if item)


class MixedContent(Exception):
    """A value has child nodes: its page must be read from a tree that kept its blanks."""


class Columns:
    """The values of a page read column by column: one compiled XPath per field selects that
    field of every record at once (tag-targeted, in C), and the elements are matched to their
    record by parent, so the per-record work left in Python is reading `.text`. A record that
    lacks a field gets "" (or no item); when a field repeats, the first one counts. Over a tree
    parsed with `blanks=False`, a value with child nodes raises MixedContent."""

    def __init__(self, records: list[etree._Element], second_look: bool, *,
                 blanks: bool = True) -> None:
        self.records = records
        self._index: dict[etree._Element, int] | None = None
        self._clean = _respace if second_look else squeeze
        self._blanks = blanks

    def first(self, found: list[etree._Element], depth: int = 1) -> list[str]:
        """One collapsed text per record, `found` being `depth` levels below the records."""
        return self._first(self._texts(found), found, depth)

    def first_leaf(self, children: list[str | etree._Element],
                   otherwise: Callable[[], list[str]]) -> list[str]:
        """One collapsed text per record, from `children`: the child nodes (or attribute) of
        each record's first such element (`F[1]/node()`, strings not wrapped). Exactly one per
        record, all text, is the common case, and then they are the values in record order with
        no element object made: libxml2 joins a text's character data, references and CDATA
        into one node, and a comment, PI or child element comes back as an object. None at all
        means the field is empty everywhere. Anything else is read `otherwise`."""
        if not children:
            return [""] * len(self.records)
        if len(children) == len(self.records):
            try:
                joined = " ".join(children)  # type: ignore[arg-type]
            except TypeError:  # an element, comment or PI among them
                pass
            else:
                return self._cleaned(children, joined)  # type: ignore[arg-type]
        return otherwise()

    def first_attribute(self, found: list[etree._Element], name: str,
                        depth: int = 1) -> list[str]:
        return self._first(self._cleaned([e.get(name) or "" for e in found]), found, depth)

    def every(self, found: list[etree._Element], depth: int = 1) -> list[list[str]]:
        """Every collapsed text per record, in document order."""
        return self.group(self._texts(found), found, depth)

    def every_attribute(self, found: list[etree._Element], name: str,
                        depth: int = 1) -> list[list[str]]:
        return self.group(self._cleaned([e.get(name) or "" for e in found]), found, depth)

    def _texts(self, found: list[etree._Element]) -> list[str]:
        """Each element's string value: its .text, unless it has children (rare: then the
        text of its descendants, comments and processing instructions left out)."""
        texts = [e.text or "" for e in found]
        if any(map(len, found)):
            if not self._blanks:  # whitespace between its children may have been left out
                raise MixedContent
            texts = [_whole(e) if len(e) else text for e, text in zip(found, texts, strict=True)]
        return self._cleaned(texts)

    def _cleaned(self, values: list[str], joined: str | None = None) -> list[str]:
        """The values collapsed. Most are clean already: the column is checked as one string
        (`joined` by spaces), a handful of searches in C instead of a call per value."""
        clean = self._clean
        if clean is squeeze and not needs_squeeze(" ".join(values) if joined is None
                                                  else joined):
            return values
        return [clean(value) for value in values]

    def group(self, values: list[str], found: list[etree._Element],
              depth: int) -> list[list[str]]:
        """`values` (one per element of `found`) gathered by the record they are in. In
        document order a record's elements come in one run, so each record's values are one
        slice, its bounds found by bisection (no Python step per value)."""
        index = self._record_index()
        positions = list(map(index.__getitem__, self._owners(found, depth)))
        bounds = [bisect_left(positions, i) for i in range(len(self.records) + 1)]
        return [values[start:end] for start, end in pairwise(bounds)]

    def _owners(self, found: list[etree._Element], depth: int) -> list[etree._Element]:
        owners = [e.getparent() for e in found]
        for _ in range(depth - 1):
            owners = [e.getparent() for e in owners]
        return owners

    def _record_index(self) -> dict[etree._Element, int]:
        if self._index is None:
            self._index = {record: i for i, record in enumerate(self.records)}
        return self._index

    def _positions(self, owners: list[etree._Element]) -> list[int]:
        index = self._record_index()
        return [index[owner] for owner in owners]

    def _first(self, values: list[str], found: list[etree._Element], depth: int) -> list[str]:
        owners = self._owners(found, depth)
        if owners == self.records:  # the common case: each record has it exactly once
            return values
        column = [""] * len(self.records)
        for position, value in zip(reversed(self._positions(owners)), reversed(values),
                                   strict=True):
            column[position] = value  # backwards: the first one written last wins
        return column


def _whole(element: etree._Element) -> str:
    """The string value of an element with children (a leaf's is its .text)."""
    return "".join(element.xpath("descendant::text()"))


def needs_squeeze(joined: str) -> bool:
    """Whether any value of a column joined by single spaces may have XML whitespace to
    collapse or strip: a value's leading or trailing space meets a separator as a double space,
    so one slow search covers all three (an empty value is a false alarm: the values are then
    squeezed one by one). Line breaks first: they are found at memchr speed, and a column that
    has them needs squeezing anyway."""
    return ("\n" in joined or "\t" in joined or "\r" in joined or "  " in joined
            or joined[:1] == " " or joined[-1:] == " ")


def squeeze(text: str) -> str:
    """XPath's normalize-space(): runs of XML whitespace become one space, ends stripped.
    Built from str.replace passes, which run in C (split/join costs an object per word)."""
    text = text.strip(" \n\t\r")
    for space in "\n\t\r":
        if space in text:
            text = text.replace(space, " ")
    while "  " in text:
        text = text.replace("  ", " ")
    return text


def _respace(text: str) -> str:
    """The second look: bidi controls written as references dropped, Unicode spaces too."""
    return collapse(text)
