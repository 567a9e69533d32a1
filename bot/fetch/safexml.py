"""Fetch stage: reading an XML answer from arXiv (Atom or OAI-PMH) without trusting it.

No DTD, no entities, no network, no huge trees; an HTML page says what it is. Text is cleaned
once per page where it can be (bidi controls) and collapsed per value.
"""

from __future__ import annotations

import re
import threading

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
_LEAD_BYTES = (b"\xc2", b"\xe1", b"\xe2", b"\xe3")
_ODD_SPACE = re.compile(
    rb"\xc2[\x85\xa0]|\xe1\x9a\x80|\xe2\x80[\x80-\x8a\xa8\xa9\xaf]|\xe2\x81\x9f|\xe3\x80\x80")


def _second_look(data: bytes) -> bool:
    if _REFERENCE.search(data):
        return True
    return any(lead in data for lead in _LEAD_BYTES) and _ODD_SPACE.search(data) is not None


_LOCAL = threading.local()  # a parser is reusable, but not from two threads at once


def _parser() -> etree.XMLParser:
    parser = getattr(_LOCAL, "parser", None)
    if parser is None:
        parser = _LOCAL.parser = etree.XMLParser(
            resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False,
            collect_ids=False)
    return parser


def collapse(text: str | None) -> str:
    """Every run of whitespace (newlines, indentation, NBSP) becomes one space, ends stripped,
    bidi embedding controls dropped (right-to-left text itself is kept)."""
    return " ".join((text or "").translate(_BIDI_TABLE).split())


def parse_xml(data: bytes, what: str) -> tuple[etree._Element, bool]:
    """The root element, and whether values need a second look one by one: bidi controls
    written as references, Unicode spaces beyond XML's (rare; the byte pass did the rest)."""
    head = data[:512].lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html")):
        title = _HTML_TITLE.search(data)
        shown = collapse(title.group(1).decode("utf-8", "replace")) if title else "no title"
        raise ArxivBadAnswer(f"an HTML page, not {what} ({shown[:100]})")
    # A DTD is never part of an arXiv answer; refusing it outright is the XML-bomb defence
    # (the parser options are the second line).
    if _DECLARATIONS.search(data):
        raise ArxivBadAnswer("the answer declares a DTD or entities")
    if b"\xe2" in data:  # once per page, in C, instead of once per value
        data = _BIDI_UTF8.sub(b"", data)
    try:
        root = etree.fromstring(data, _parser())
    except etree.XMLSyntaxError as exc:
        raise ArxivBadAnswer(f"unparsable XML: {exc}") from None
    if root is None:
        raise ArxivBadAnswer("empty answer")
    docinfo = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None:
        raise ArxivBadAnswer("the answer declares a DTD or entities")
    return root, _second_look(data)


FIELD, ITEM = "\t", "\r"  # separators normalize-space() guarantees are in no value


class Extractor:
    """An XSLT program that writes the values of every record of a page as lines of
    tab-separated, whitespace-collapsed text: the tag-targeted reads run in C, the Python
    side splits one string. One compiled program per thread (XSLT objects are not shared)."""

    def __init__(self, stylesheet: str) -> None:
        self.stylesheet = stylesheet
        self._local = threading.local()

    def rows(self, root: etree._Element, second_look: bool) -> list[list[str]]:
        xslt = getattr(self._local, "xslt", None)
        if xslt is None:
            xslt = self._local.xslt = etree.XSLT(etree.XML(self.stylesheet.encode()))
        text = str(xslt(root))
        if second_look:  # normalize-space() only collapses XML's four kinds of whitespace
            text = text.translate(_BIDI_TABLE)
        rows = [line.split(FIELD) for line in text.split("\n") if line]
        return [_respace(row) for row in rows] if second_look else rows


def _respace(row: list[str]) -> list[str]:
    """Collapse the Unicode spaces normalize-space() kept, item by item."""
    return [ITEM.join(" ".join(part.split()) for part in value.split(ITEM)) for value in row]


def value_of(path: str) -> str:
    """XSLT for one value (the first match's whole text), then a field separator."""
    return f'<xsl:value-of select="normalize-space({path})"/><xsl:text>&#9;</xsl:text>'


def values_of(path: str) -> str:
    """XSLT for every match's value, each ended by an item separator."""
    return (f'<xsl:for-each select="{path}"><xsl:value-of select="normalize-space(.)"/>'
            '<xsl:text>&#13;</xsl:text></xsl:for-each><xsl:text>&#9;</xsl:text>')


def items(value: str) -> tuple[str, ...]:
    return tuple(item for item in value.split(ITEM) if item)


def text_of(element: etree._Element, references: bool) -> str:
    """An element's whole text, collapsed."""
    text = element.text if len(element) == 0 else "".join(element.itertext())
    if not text:
        return ""
    if references:
        text = text.translate(_BIDI_TABLE)
    return " ".join(text.split())
