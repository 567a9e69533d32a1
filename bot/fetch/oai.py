"""Fetch stage: turns one OAI-PMH answer of arXiv (ListRecords, GetRecord) into papers.

Reads `arXivRaw`, the format the harvest asks for: its version history carries the first
version's date, which decides newness (the `arXiv` format's `created` is the *current*
version's date on the new server, so a replacement would pass for a new paper), and one
request per page is enough. The `arXiv` format is read too (old-server semantics). Errors
come back by their OAI name; paging by `resumptionToken`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from itertools import accumulate, compress, repeat
from operator import itemgetter, le, sub

from bot.fetch.atom import MAX_COUNT, MAX_VERSION, Unrepresentable, parse_datetime
from bot.fetch.errors import ArxivBadAnswer
from bot.fetch.frozen import build
from bot.fetch.oai_text import OAI, RAW, TextPage, read_text
from bot.fetch.safexml import (
    ITEM,
    Extractor,
    collapse,
    parse_screened,
    screen,
    squeeze,
    value_of,
    values_of,
)
from storage.records import Paper

log = logging.getLogger(__name__)

ARXIV = "http://arxiv.org/OAI/arXiv/"
_ID = re.compile(r"\d{4}\.\d{4,5}|[A-Za-z][\w.\-]*/\d{7}")
_IDS = re.compile(rf"(?:{_ID.pattern})(?:\n(?:{_ID.pattern}))*")
_MONTH_NAMES = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
# Every date of a dates column as arXivRaw writes it, each ended by ITEM; anything else (and
# a year out of range) is left to _rfc822, date by date
_RFC822_COLUMN = re.compile(r"(?:[A-Z][a-z]{2}, [0-9]{1,2} (?:" + "|".join(_MONTH_NAMES)
                            + r") (?:19|2[0-9])[0-9]{2} (?:[01][0-9]|2[0-3])(?::[0-5][0-9]){2}"
                            r" GMT\r)+")
_MONTHS = {m: i for i, m in enumerate(_MONTH_NAMES, 1)}
_MM = {m: f"-{i:02d}-" for i, m in enumerate(_MONTH_NAMES, 1)}  # ISO 8601 pieces
_DDT = {f"{d:{w}}": f"{d:02d}T" for d in range(100) for w in ("", "02")}  # "4" and "04"
_UTC = "+00:00\n"


@dataclass(frozen=True, slots=True)
class OaiRecord:
    paper: Paper
    datestamp: date  # UTC day of the record's last change (not its submission)
    new_submission: bool  # one version only: first announced by the announcement it is in


@dataclass(frozen=True, slots=True)
class OaiPage:
    records: tuple[OaiRecord, ...]
    token: str | None  # None or "": the list is complete
    complete_list_size: int | None
    error: str | None = None  # OAI error code, e.g. "noRecordsMatch", "badResumptionToken"
    message: str = ""
    dropped: int = 0  # records whose values could not be represented

    @property
    def last_datestamp(self) -> date | None:
        return max((r.datestamp for r in self.records), default=None)


_AUTHOR_NAMES = (  # the arXiv format splits names; written back as "Forenames Keyname Suffix"
    '<xsl:for-each select="m:authors/m:author"><xsl:value-of '
    "select=\"normalize-space(concat(m:forenames, ' ', m:keyname, ' ', m:suffix))\"/>"
    "<xsl:text>&#13;</xsl:text></xsl:for-each><xsl:text>&#9;</xsl:text>")
_COMMON = ("title", "categories", "comments", "journal-ref", "doi", "abstract")
_FIELDS = ("datestamp", "status", "id", "dates", "authors", *_COMMON)
_LIST = "/o:OAI-PMH/*"


def _extractor(prefix: str, element: str, dates: str, authors: str) -> Extractor:
    """First the error code, error text, token and completeListSize; then each record's
    _FIELDS and a newline as its own value. One program per metadata format keeps every path
    a plain one."""
    record = "".join([
        value_of("o:header/o:datestamp"),
        value_of("o:header/@status"),
        f'<xsl:for-each select="o:metadata/{prefix}:{element}">',
        value_of(f"{prefix}:id"), dates, authors,
        *(value_of(f"{prefix}:{name}") for name in _COMMON), "</xsl:for-each>",
    ])
    return Extractor(f"""<xsl:stylesheet version="1.0"
          xmlns:xsl="http://www.w3.org/1999/XSL/Transform" xmlns:o="{OAI}" xmlns:r="{RAW}"
          xmlns:m="{ARXIV}"><xsl:output method="text" encoding="UTF-8"/>
        <xsl:template match="/">{value_of("/o:OAI-PMH/o:error/@code")}{
            value_of("/o:OAI-PMH/o:error")}{value_of(f"{_LIST}/o:resumptionToken")}{
            value_of(f"{_LIST}/o:resumptionToken/@completeListSize")}
          <xsl:for-each select="{_LIST}/o:record">{record}<xsl:text>&#10;&#9;</xsl:text>
          </xsl:for-each></xsl:template></xsl:stylesheet>""")


_WIDTH = len(_FIELDS)
_HEAD = 4  # error code, error text, token, completeListSize
_END = "\n"  # the value that ends a record: no value holds a newline (normalize-space())


_RAW = _extractor("r", "arXivRaw", values_of("r:version/r:date"), value_of("r:authors"))
_ARXIV = _extractor("m", "arXiv", values_of("m:created|m:updated"), _AUTHOR_NAMES)


def parse_oai(data: bytes) -> OaiPage:
    """Parse one OAI-PMH answer; an OAI error comes back as `error`, never raised."""
    raw = RAW.encode() in data
    screened = screen(data, "OAI-PMH")
    text = read_text(screened) if raw else None
    records = _text_records(text) if text is not None else None
    if records is not None:  # a page laid out as arXiv writes it: the same values, no tree
        return OaiPage(tuple(records), text.token or None, _size(text.complete_list_size))
    root, second_look = parse_screened(screened)
    if root.tag != f"{{{OAI}}}OAI-PMH":
        raise ArxivBadAnswer(f"not an OAI-PMH answer: root element {root.tag[:80]!r}")
    values = (_RAW if raw else _ARXIV).values(root, second_look)
    code, message, token, size = values[:_HEAD]
    if code:
        return OaiPage((), None, None, error=code, message=message)
    return _page(_columns(values), token, size, raw)


def _page(columns: list[list[str]], token: str, size: str, raw: bool) -> OaiPage:
    """The page from its records' values, column by column."""
    dates = _version_dates(columns[3]) if raw else None
    records = _read_columns(columns, dates) if dates is not None else None
    dropped = 0
    if records is None:  # the arXiv format, or a page the column checks do not vouch for
        records, dropped = _records(zip(*columns, strict=True), raw)
    return OaiPage(tuple(records), token or None, _size(size), dropped=dropped)


def _size(text: str) -> int | None:
    if not text:
        return None
    if not (text.isascii() and text.isdigit() and len(text) <= 20 and int(text) <= MAX_COUNT):
        raise ArxivBadAnswer(f"completeListSize is not a count: {text[:40]!r}")
    return int(text)


def _columns(values: list[str]) -> list[list[str]]:
    """The _FIELDS of the records that have metadata (a deleted record has none), column by
    column. When every record is _WIDTH values and its end (one metadata element each), a
    column is one slice."""
    count = len(values) // (_WIDTH + 1)
    ends = values[_HEAD + _WIDTH:-1:_WIDTH + 1]
    if (len(values) == _HEAD + count * (_WIDTH + 1) + 1
            and ends.count(_END) == count == values.count(_END)):
        columns = [values[_HEAD + k:-1:_WIDTH + 1] for k in range(_WIDTH)]
    else:
        rows = _rows(values[_HEAD:])
        columns = [[row[k] for row in rows] for k in range(_WIDTH)]
    status, ids = columns[1], columns[2]
    if "deleted" in status or not all(ids):
        keep = [bool(i) and s != "deleted" for s, i in zip(status, ids, strict=True)]
        columns = [list(compress(column, keep)) for column in columns]
    return columns


def _rows(values: list[str]) -> list[list[str]]:
    """The records one by one, when some lack metadata or repeat it: a record without a whole
    row of values is left out, the values of a second metadata element are ignored."""
    rows: list[list[str]] = []
    row: list[str] = []
    for value in values:
        if value != _END:
            row.append(value)
            continue
        if len(row) >= _WIDTH:
            rows.append(row[:_WIDTH])
        row = []
    return rows


def _records(rows: Iterable[tuple[str, ...]], raw: bool) -> tuple[list[OaiRecord], int]:
    """The records, and how many were dropped, one row at a time: the arXiv format, and an
    arXivRaw page with a value the column checks do not take, so that it fails (or drops a
    record) exactly where it did."""
    records: list[OaiRecord] = []
    days: dict[str, date] = {}  # a page's records share a few datestamps
    dropped = 0
    for row in rows:
        try:
            records.append(_read(row, raw, days))
        except Unrepresentable as exc:
            log.warning("OAI record dropped: %s", exc)
            dropped += 1
    return records, dropped


def _read(row: tuple[str, ...], raw: bool, days: dict[str, date]) -> OaiRecord:
    """One row of _FIELDS → a record."""
    (datestamp, _, arxiv_id, dates_text, authors, title, categories_text, comments,
     journal_ref, doi, abstract) = row
    if not _ID.fullmatch(arxiv_id):
        raise ArxivBadAnswer(f"record id is not an arXiv id: {arxiv_id[:100]!r}")
    stamp = days.get(datestamp)
    if stamp is None:
        stamp = days[datestamp] = _day(datestamp, arxiv_id)
    dates = [item for item in dates_text.split(ITEM) if item]
    if len(dates) > MAX_VERSION:
        raise Unrepresentable(f"{arxiv_id}: {len(dates)} versions")
    # arXivRaw: the version history, v1 first; the arXiv format: created [updated] (first and
    # last version on the old server only)
    read = _rfc822 if raw else parse_datetime
    published = read(dates[0], arxiv_id) if dates else _midnight(stamp, arxiv_id)
    updated = read(dates[-1], arxiv_id) if len(dates) > 1 else published
    categories = tuple(dict.fromkeys(categories_text.split()))
    names = _names(authors) if raw else tuple(item for item in authors.split(ITEM) if item)
    paper = Paper(arxiv_id, max(len(dates), 1), title, abstract, names, published, updated,
                  categories[0] if categories else "", categories, comments, journal_ref, doi)
    return OaiRecord(paper, stamp, len(dates) <= 1)


def _text_records(page: TextPage) -> list[OaiRecord] | None:
    """The records of a page read from its text (oai_text.py), or None when a column check
    does not vouch for every value: the page is then read from its tree, which fails or
    drops a record exactly where it does."""
    if not page.version_counts:
        return []
    counts = page.version_counts
    if max(counts) > MAX_VERSION:
        return None
    published = _moments(ITEM.join(page.columns[3]) + ITEM)
    later = [text for text in page.last_dates if text is not None]
    updates = _moments(ITEM.join(later) + ITEM) if later else []
    if published is None or updates is None:
        return None
    moments = iter(updates)
    updated = [first if last is None else next(moments)
               for first, last in zip(published, page.last_dates, strict=True)]
    return _read_columns(page.columns, (counts, published, updated))


def _read_columns(columns: list[list[str]],
                  dates: tuple[list[int], list[datetime], list[datetime]]
                  ) -> list[OaiRecord] | None:
    """An arXivRaw page's records, each check made once per column (a regex over the joined
    column, a few str passes) and the objects built column by column (frozen.build), given
    each record's version count, first and last version dates. None when a check does not
    vouch for every value: the row-by-row reading then fails or drops exactly as it does."""
    (datestamps, _, ids, _, authors, titles, categories_texts, comments,
     journal_refs, dois, abstracts) = columns
    if not _IDS.fullmatch("\n".join(ids)):
        return None
    counts, published, updated = dates
    try:
        days = {text: _day(text, "") for text in set(datestamps)}
    except (ArxivBadAnswer, Unrepresentable):
        return None
    # A page's 1,000 records spell a few hundred category lists: one tuple each, shared (fewer
    # objects for the garbage collector to walk while the page is built)
    spelled = {text: tuple(dict.fromkeys(text.split())) for text in set(categories_texts)}
    categories = list(map(spelled.__getitem__, categories_texts))
    primary = (list(map(itemgetter(0), categories)) if all(categories)
               else [c[0] if c else "" for c in categories])
    papers = build(Paper, [ids, counts, titles, abstracts, _names_column(authors), published,
                           updated, primary, categories, comments, journal_refs, dois])
    return build(OaiRecord, [papers, list(map(days.__getitem__, datestamps)),
                             list(map(le, counts, repeat(1)))])


def _version_dates(texts: list[str]) -> tuple[list[int], list[datetime], list[datetime]] | None:
    """Each record's version count, first and last version dates, from the dates column
    ("date\\r" per version). None for anything but one to MAX_VERSION dates each, all in
    the usual form."""
    counts = list(map(str.count, texts, repeat(ITEM)))
    if not counts or min(counts) < 1 or max(counts) > MAX_VERSION:
        return None
    moments = _moments("".join(texts))
    if moments is None:
        return None
    ends = list(accumulate(counts))
    first = list(map(moments.__getitem__, map(sub, ends, counts)))
    last = list(map(moments.__getitem__, map(sub, ends, repeat(1))))
    return counts, first, last


def _moments(joined: str) -> list[datetime] | None:
    """arXivRaw's dates, each ended by ITEM, as _rfc822 reads them: parsed by one regex check
    and a few map() calls; None unless every one is in the usual form and a real day."""
    if not _RFC822_COLUMN.fullmatch(joined):  # also: no empty date
        return None
    words = joined.replace(ITEM, " ").split(" ")  # 6 a date: Wed, 23 Jan 2008 21:06:41 GMT
    count = len(words) // 6
    # each date as ISO 8601, "2008-01-23T21:06:41+00:00\n", made by one join of its pieces
    # (from lookups, no string formatted per date)
    pieces = [_UTC] * (5 * count)
    pieces[0::5] = words[3::6]
    pieces[1::5] = map(_MM.__getitem__, words[2::6])
    pieces[2::5] = map(_DDT.__getitem__, words[1::6])
    pieces[3::5] = words[4::6]
    iso = "".join(pieces).split("\n")
    iso.pop()
    try:
        return list(map(datetime.fromisoformat, iso))  # UTC: timezone.utc, as _rfc822's
    except ValueError:  # 30 Feb
        return None


def _names_column(column: list[str]) -> list[tuple[str, ...]]:
    """_names of every author line, the str passes made once over the joined column (no
    pattern below can match across the tab that joins two lines)."""
    text = "\t".join(column)
    if "(" in text:
        while (bare := _AFFILIATION_IN_COLUMN.sub(" ", text)) != text:
            text = bare
            if "(" not in text:  # nothing left for another pass to take
                break
        text = _SPACES.sub(" ", text)  # one pass: str.replace takes a pass per halving
        text = text.replace(" \t", "\t").replace("\t ", "\t").strip(" ")
    # Unconditional, unlike _names: where neither " and " nor ",and " is, these passes only
    # take away spaces next to a comma, which _names strips from each name anyway.
    text = (text.replace(", and ", ",").replace(",and ", ",").replace(" , ", ",")
            .replace(" and ", ",").replace(" ,", ",").replace(", ", ","))
    names = map(str.split, text.split("\t"), repeat(","))  # map() in C: no Python step per line
    if text[:1] in _EDGES or text[-1:] in _EDGES or any(pair in text for pair in _EMPTY_NAME):
        names = map(filter, repeat(None), names)  # an empty name (or line) is left out
    return list(map(tuple, names))


def _midnight(day: date, arxiv_id: str) -> datetime:
    return parse_datetime(day.isoformat(), arxiv_id)


def _day(text: str, arxiv_id: str) -> date:
    """The record's datestamp: one outside 1900–3000 drops the record (it would move the
    harvest's resume point out of reach)."""
    try:
        day = date.fromisoformat(text[:10])
    except ValueError:
        raise ArxivBadAnswer(f"{arxiv_id}: invalid datestamp {text[:40]!r}") from None
    if not 1900 <= day.year < 3000:
        raise Unrepresentable(f"{arxiv_id}: datestamp {text[:40]!r} is out of range")
    return day


def _rfc822(text: str, arxiv_id: str) -> datetime:
    """arXivRaw's `Wed, 23 Jan 2008 21:06:41 GMT`, read without email.utils (hot path)."""
    try:
        _, day, month, year, clock, *_ = text.replace(",", " ").split()
        if len(clock) != 8 or clock[2] != ":" or clock[5] != ":":
            raise ValueError(clock)
        in_range = 1900 <= int(year) < 3000
        if in_range:
            return datetime(int(year), _MONTHS[month], int(day), int(clock[:2]),
                            int(clock[3:5]), int(clock[6:]), tzinfo=UTC)
    except (ValueError, KeyError):
        raise ArxivBadAnswer(f"{arxiv_id}: invalid version date {text[:40]!r}") from None
    # Raised outside the try: Unrepresentable is a ValueError, and this one drops the record
    raise Unrepresentable(f"{arxiv_id}: version date {text[:40]!r} is out of range")


# Where a line of the joined column splits into an empty name: at its ends, between two commas
_EDGES = ("", ",", "\t")
_EMPTY_NAME = (",,", "\t,", ",\t", "\t\t")
_AFFILIATION = re.compile(r"\([^()]*\)")
_AFFILIATION_IN_COLUMN = re.compile(r"\([^()\t]*\)")
_SPACES = re.compile("  +")  # what the affiliations leave: "A (X), B" -> "A  , B"


def split_authors(text: str) -> tuple[str, ...]:
    """arXivRaw's one free-text author line → names: "A (X, Y), B and C" → (A, B, C).

    Affiliations in parentheses are dropped, as the search API does."""
    return _names(collapse(text))


def _names(text: str) -> tuple[str, ...]:
    """split_authors for a line already collapsed: str methods in C, no regex pass."""
    if "(" in text:
        while (bare := _AFFILIATION.sub(" ", text)) != text:
            text = bare
        text = squeeze(text)
    if " and " in text or ",and " in text:
        text = (text.replace(", and ", ",").replace(",and ", ",").replace(" , ", ",")
                .replace(" and ", ","))
    return tuple(name for part in text.split(",") if (name := part.strip(" ")))
