"""Fetch stage: an arXivRaw ListRecords page read from its text, without a tree.

The tree of a 1,000-record page and the XSLT program reading it cost about two thirds of
parse_oai; a page laid out the way arXiv writes it can be read from its text with one
compiled pattern per record, once libxml2 has checked it without building a tree. "Laid out
the way arXiv writes it" is strict: the patterns cover the whole page, every tag, every
namespace declaration, with only XML whitespace between the elements and no markup inside a
value (so no comments, CDATA, processing instructions or DTD anywhere); character references
and Unicode spaces beyond XML's send the page back too. Anything else returns None and
parse_oai reads the page from its tree, as before. So there are two readings of one layout;
tests/test_oai.py holds them to the same values (the real arXiv page and the local server's,
each read both ways) and to which pages take which.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import compress, repeat

from bot.fetch.safexml import Irregular, from_text, squeeze, unescape

OAI = "http://www.openarchives.org/OAI/2.0/"
RAW = "http://arxiv.org/OAI/arXivRaw/"
# Every repeat is possessive (*+, ?+, ++): what follows it always starts with a character it
# cannot take, so giving some back never helps a match, and not keeping the places to give
# back from costs ~20 % less.
_S = "[ \n]*+"  # XML's whitespace between elements (line breaks and spaces: see read_text)
_SPACE = "[ \n]"  # where arXiv writes one space inside a tag
_TEXT = "[^<]*+"
# A later version's date is never blank (the XSLT program would leave it out, so the count
# of versions would differ); the first's and the last's are checked in full by parse_oai
_DATED = "[^< \n][^<]*+"
_ATTRIBUTE = r"""[ \n]++[A-Za-z_:][\w.:-]*+=(?:'[^'<&]*+'|"[^"<&]*+")"""
_ATTRIBUTES = re.compile(f"(?:{_ATTRIBUTE})*+")  # arXivRaw's: checked once per spelling
_NAMED = re.compile(r"""[ \t\r\n]+([^ \t\r\n=]+)=(?:'([^']*)'|"([^"]*)")""")
_PLAIN_NAME = re.compile(r"[A-Za-z_][\w.-]*")
_XSI = "http://www.w3.org/2001/XMLSchema-instance"


def _attributes(group: str) -> str:
    """An element's attributes, named `group`: a value with a reference is not vouched for."""
    return f"(?P<{group}>(?:{_ATTRIBUTE})*+)"


def _version(group: str, date: str) -> str:
    """One <version> of arXivRaw's history, its date named `group`."""
    return (f"<version{_SPACE}version=(?:'v[0-9]++'|\"v[0-9]++\")>{_S}"
            f"<date>(?P<{group}>{date})</date>{_S}<size>{_TEXT}</size>{_S}"
            + _leaf("source_type", optional=True) + f"</version>{_S}")


def _leaf(name: str, group: str | None = None, *, optional: bool = False) -> str:
    value = f"(?P<{group}>{_TEXT})" if group else _TEXT
    leaf = f"<{name}>{value}</{name}>{_S}"
    return f"(?:{leaf})?+" if optional else leaf


_HEAD = re.compile(
    r"""<\?xml[ \n]version=(['"])1\.0\1[ \n]encoding=(['"])UTF-8\2\?>""" + _S
    + f"<OAI-PMH{_attributes('root')}>{_S}" + _leaf("responseDate")
    + f"<request{_attributes('request')}>{_TEXT}</request>{_S}<ListRecords>{_S}")
_HEADER = (f"<header>{_S}" + _leaf("identifier") + _leaf("datestamp", "datestamp")
           + f"(?:<setSpec>{_TEXT}</setSpec>{_S})*+</header>{_S}")
# arXiv writes an abstract with two spaces before it and a line break after it: the group
# takes neither (its last character found by giving back two), so that _text has no
# 1,000 stripped copies to make (nothing left: no group, "")
_ABSTRACT = f"<abstract>{_S}(?:(?P<abstract>[^<]*[^< \n]){_S})?+</abstract>{_S}"
# arXivRaw's children in the order of its schema (arXivRaw.xsd), those read at most once; the
# four not read between comments and journal-ref in any order (the 2014 export wrote msc-class
# first, the current code acm-class)
_RECORD = re.compile(
    f"<record>{_S}(?:{_HEADER}<metadata>{_S}<arXivRaw(?P<raw>[^>]*+)>{_S}"
    + _leaf("id", "id") + _leaf("submitter", optional=True)
    + f"(?P<versions>{_version('first', _TEXT)}(?:{_version('last', _DATED)})*+)"
    + _leaf("title", "title") + _leaf("authors", "authors") + _leaf("categories", "categories")
    + _leaf("comments", "comments", optional=True)
    + f"(?:<(?P<unread>proxy|report-no|msc-class|acm-class)>{_TEXT}</(?P=unread)>{_S})*+"
    + _leaf("journal-ref", "journal_ref", optional=True)
    + _leaf("doi", "doi", optional=True) + _leaf("license", optional=True)
    + _ABSTRACT + f"</arXivRaw>{_S}</metadata>{_S}"
    + f"|<header{_SPACE}status=(?:'deleted'|\"deleted\")>{_S}" + _leaf("identifier")
    + _leaf("datestamp") + f"(?:<setSpec>{_TEXT}</setSpec>{_S})*+</header>{_S})</record>{_S}")
_TAIL = re.compile(
    f"(?:<resumptionToken{_attributes('token_attributes')}"
    f"(?:/>|>(?P<token>{_TEXT})</resumptionToken>){_S})?+</ListRecords>{_S}</OAI-PMH>{_S}")
# Where each named group's value is in a record's match.groups() (one call, no lookup by name)
_AT = {name: index - 1 for name, index in _RECORD.groupindex.items()}
_GROUPS = _RECORD.groups


@dataclass(frozen=True, slots=True)
class TextPage:
    """A page's values as its text gives them; deleted records left out."""

    token: str
    complete_list_size: str
    # parse_oai's _FIELDS, one list each, but the dates column holds each record's first
    # version's date as written (not every version's, normalised): the patterns take only
    # versions with a date, so the count of versions and the last one's date say the rest
    columns: list[list[str]]
    version_counts: list[int]
    last_dates: list[str | None]  # None: one version only


def read_text(data: bytes) -> TextPage | None:
    """The page's values, the same parse_oai's XSLT program gives, or None when the page
    is not one these patterns vouch for (`data` already screened by safexml.screen)."""
    # Every value read is normalize-space()d and the patterns take any XML whitespace between
    # elements: tabs and carriage returns become spaces in the page's bytes (arXiv writes
    # none), line breaks are taken by the patterns and made spaces per value (_text), so the
    # page is decoded without a second page-sized copy
    return from_text(data, _read, spaced=True)


def _read(text: str) -> TextPage:
    head = _HEAD.match(text)
    if head is None:
        raise Irregular
    root = _attributes_of(head.group("root"), OAI, inherited_xsi=False)
    xsi = root.get("xmlns:xsi") == _XSI
    _attributes_of(head.group("request"), None, inherited_xsi=xsi)
    values: list[str | None] = []
    at = head.end()
    # finditer's next match is the one at `at` when there is one there (none skipped):
    # one call per record fewer than match() at each end. The records' groups go into one
    # flat list (a deleted record's are all None), not a tuple each: 1,000 tuples (and zip's
    # 1,000 iterators over them) set off one more garbage collection per page, which walked
    # their 14,000 values (~5 % of parse_oai's CPU time); a column is then one slice
    for match in _RECORD.finditer(text, at):
        if match.start() != at:
            break
        values += match.groups()
        at = match.end()
    # arXiv writes every record's attributes alike: each spelling checked once
    for attributes in set(values[_AT["raw"]::_GROUPS]) - {None}:
        if not _ATTRIBUTES.fullmatch(attributes):
            raise Irregular
        _attributes_of(attributes, RAW, inherited_xsi=xsi)
    tail = _TAIL.fullmatch(text, at)
    if tail is None:
        raise Irregular
    token = _attributes_of(tail.group("token_attributes") or "", None, inherited_xsi=xsi)
    return TextPage(_value(tail.group("token") or ""),
                    _value(token.get("completeListSize", "")), *_columns(values))


def _attributes_of(attributes: str, namespace: str | None, *, inherited_xsi: bool
                   ) -> dict[str, str]:
    """An element's attributes (as _ATTRIBUTE matched them) by name, when they make `namespace`
    the default one (None: leave the default alone) and use no prefix but `xmlns:xsi` for the
    schema-instance namespace and `xsi:` where that is declared, here or on the root: libxml2
    checks prefixes only when it builds a tree."""
    pairs = [(name, single or double) for name, single, double in _NAMED.findall(attributes)]
    found = dict(pairs)
    if len(found) != len(pairs) or found.get("xmlns") != namespace:
        raise Irregular
    xsi = inherited_xsi or found.get("xmlns:xsi") == _XSI
    if not all(_allowed(name, value, xsi) for name, value in pairs):
        raise Irregular
    return found


def _allowed(name: str, value: str, xsi: bool) -> bool:
    if name == "xmlns":
        return True
    if name == "xmlns:xsi":
        return value == _XSI
    if name.startswith("xsi:"):
        return xsi and _PLAIN_NAME.fullmatch(name[4:]) is not None
    return _PLAIN_NAME.fullmatch(name) is not None


def _columns(values: list[str | None]
             ) -> tuple[list[list[str]], list[int], list[str | None]]:
    """The TextPage's columns from the groups of every record, one after the other; a record
    without an id (deleted, or an empty one) is left out, as parse_oai leaves it out."""
    if not values:
        return [[] for _ in range(11)], [], []
    (datestamps, ids, firsts, authors, titles, categories, comments, journal_refs, dois,
     abstracts, versions, lasts) = (values[_AT[name]::_GROUPS] for name in (
         "datestamp", "id", "first", "authors", "title", "categories", "comments",
         "journal_ref", "doi", "abstract", "versions", "last"))
    counts = ([run.count("<date>") if run else 0 for run in versions] if None in versions
              else list(map(str.count, versions, repeat("<date>"))))
    texts = [_text(c) for c in (datestamps, ids, authors, titles, categories, comments,
                                journal_refs, dois, abstracts)]
    datestamps, ids, authors, titles, categories, comments, journal_refs, dois, abstracts = texts
    columns = [datestamps, [""] * len(ids), ids, ["" if f is None else f for f in firsts],
               authors, titles, categories, comments, journal_refs, dois, abstracts]
    keep = list(map(bool, ids))
    if all(keep):
        return columns, counts, lasts
    return ([list(compress(column, keep)) for column in columns], list(compress(counts, keep)),
            list(compress(lasts, keep)))


def _text(values: list[str | None]) -> list[str]:
    """XPath's normalize-space() of each value as written in the page (None: no element):
    the column checked as one string first, most values need nothing."""
    column = ["" if value is None else value for value in values]
    joined = " ".join(column)
    if "&" in joined:
        column = [unescape(value) if "&" in value else value for value in column]
    lines = "\n" in joined  # the page's line breaks are left in it (see read_text)
    if lines:
        column = list(map(str.replace, column, repeat("\n"), repeat(" ")))
    # a value's end space meets a separator: "  "
    if lines or "  " in joined or joined[:1] == " " or joined[-1:] == " ":
        column = [value.strip(" ") for value in column]
        column = [_squeeze(value) if "  " in value else value for value in column]
    return column


def _squeeze(value: str) -> str:
    """Runs of spaces made one (the only whitespace left in a value: see _text). arXiv wraps
    long values with a line break and two spaces: three spaces, one pass for most values."""
    value = value.replace("   ", " ")
    while "  " in value:
        value = value.replace("  ", " ")
    return value


def _value(text: str) -> str:
    return squeeze(unescape(text))
