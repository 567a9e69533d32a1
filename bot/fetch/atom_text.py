"""Fetch stage: an arXiv API answer (Atom) read from its text, without a tree.

parse_feed's tree and its XPaths cost about half of a page's parse. A page laid out the way
arXiv writes it, in the API's new layout (since 2025-11) or its old one, can be read from its
text with one compiled pattern per entry, once libxml2 has checked it without building a tree.
"Laid out the way arXiv writes it" is strict: the patterns cover the whole page, every tag,
attribute and namespace declaration, each element on its own line indented as arXiv indents
it, no markup inside a value (so no comments, CDATA, processing instructions or DTD anywhere);
character references, Unicode spaces beyond XML's, an error answer and the https spellings of
the arxiv and opensearch namespaces send the page back too. Anything else returns None and
parse_feed reads the page from its tree, as before. So there are two readings of one layout;
tests/test_atom_text.py holds them to the same values (the real arXiv pages and the local
server's, each read both ways) and to which pages take which.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import accumulate, pairwise, repeat

from bot.fetch.safexml import (
    Irregular,
    from_text,
    needs_squeeze,
    squeeze,
    unescape,
)

ATOM = "http://www.w3.org/2005/Atom"
ARXIV = "http://arxiv.org/schemas/atom"
OPENSEARCH = "http://a9.com/-/spec/opensearch/1.1/"
# Every repeat is possessive (*+, ++, ?+): what follows always starts with a character it
# cannot take, so giving some back never helps a match.
_TEXT = "[^<]*+"
_TERM = r"[\w.\-]*+"  # a category: no whitespace or reference to undo
# The attributes arXiv writes on a link (never read): names without a prefix, which libxml2
# would check only when building a tree; a "<" in a value it refuses itself.
_LINK = '<link(?: (?:href|rel|type|title)="[^"]*+")*+/>'


def _leaf(name: str, group: str, indent: str, *, optional: bool = False,
          attributes: str = "") -> str:
    leaf = f"\n{indent}<{name}{attributes}>(?P<{group}>{_TEXT})</{name}>"
    return f"(?:{leaf})?+" if optional else leaf


def _entries(declared: bool) -> tuple[re.Pattern[str], re.Pattern[str]]:
    """One entry in the API's new layout and in its old one, its values as named groups;
    `declared`: the root declares the arxiv prefix (else each such element must)."""
    x = f'(?: xmlns:arxiv="{ARXIV}")?+' if declared else f' xmlns:arxiv="{ARXIV}"'
    indent = " " * 4
    links = f"(?:\n{indent}{_LINK})*+"
    authors = (f"(?P<authors>(?:\n{indent}<author>\n{indent}  <name>{_TEXT}</name>"
               f"\n{indent}</author>)*+)")
    categories = f'(?P<categories>(?:\n{indent}<category term="{_TERM}" scheme="[^"]*+"/>)*+)'
    primary = (f'\n{indent}<arxiv:primary_category{x} term="(?P<primary>{_TERM})"'
               f'(?: scheme="{ARXIV}")?+/>')
    comment = _leaf("arxiv:comment", "comment", indent, optional=True, attributes=x)
    journal = _leaf("arxiv:journal_ref", "journal_ref", indent, optional=True, attributes=x)
    doi = f'(?:{_leaf("arxiv:doi", "doi", indent, attributes=x)}\n{indent}{_LINK})?+'
    new = (_leaf("id", "id", indent) + _leaf("title", "title", indent)
           + _leaf("updated", "updated", indent) + links + _leaf("summary", "summary", indent)
           + categories + _leaf("published", "published", indent) + comment + primary
           + journal + authors + doi)
    old = (_leaf("id", "id", indent) + _leaf("updated", "updated", indent)
           + _leaf("published", "published", indent) + _leaf("title", "title", indent)
           + _leaf("summary", "summary", indent) + authors + doi + comment + journal + links
           + primary + categories)
    return tuple(re.compile(f"\n  <entry>{layout}\n  </entry>") for layout in (new, old))


_ENTRIES = {declared: _entries(declared) for declared in (False, True)}
_GROUPS = ("id", "title", "summary", "published", "updated", "comment", "journal_ref", "doi",
           "authors", "categories", "primary")
_ROOT = re.compile(r"""<\?xml version=(['"])1\.0\1 encoding=(['"])UTF-8\2\?>"""
                   r'\n<feed((?: [\w:]++="[^"<&]*+")*+)>')
_NAMED = re.compile(r' ([\w:]++)="([^"]*)"')
# The feed's own elements, in any order: its id, title, updated and links are not read
_HEAD = re.compile(
    r'\n  (?:<(id|updated|title(?: type="html")?+)>[^<]*+</(?:id|updated|title)>|'
    + _LINK + r'|<opensearch:(totalResults|startIndex|itemsPerPage)((?: xmlns:opensearch="'
    + OPENSEARCH + r'")?+)>([0-9]*+)</opensearch:\2>)')
_COUNTS = ("totalResults", "startIndex", "itemsPerPage")
_NAME = re.compile("<name>([^<]*)</name>")
_CATEGORY = re.compile('term="([^"]*)"')


@dataclass(frozen=True, slots=True)
class TextFeed:
    counts: list[str]  # totalResults, startIndex, itemsPerPage
    columns: list[list[str]]  # id, title, summary, published, updated, comment, journal, doi
    names: list[list[str]]  # each entry's authors
    terms: list[list[str]]  # each entry's categories
    primary: list[str]


def read_text(data: bytes) -> TextFeed | None:
    """The page's values, the same parse_feed's tree reading gives, or None when the page
    is not one these patterns vouch for (`data` already screened by safexml.screen)."""
    # parse_feed's tree reading takes the https spelling of the arxiv or opensearch
    # namespace for the page's as soon as it is anywhere in it: such a page is left to it
    if (b"https://arxiv.org/schemas/atom" in data
            or b"https://a9.com/-/spec/opensearch/1.1/" in data):
        return None
    return from_text(data, _read)


def _read(text: str) -> TextFeed:
    root = _ROOT.match(text)
    if root is None:
        raise Irregular
    arxiv, opensearch = _declared(root.group(3))
    at, counts = _head(text, root.end(), opensearch)
    for entry in _ENTRIES[arxiv]:  # the layout of the page's first entry
        match = entry.match(text, at)
        if match is not None:
            break
    rows = []
    while match is not None:
        rows.append(match.groups())
        at = match.end()
        match = entry.match(text, at)
    if text[at:] not in ("\n</feed>", "\n</feed>\n"):
        raise Irregular
    return _columns(counts, entry, rows)


def _declared(attributes: str) -> tuple[bool, bool]:
    """Whether the root declares the arxiv and the opensearch prefix; it must make Atom the
    default namespace and declare nothing else."""
    pairs = _NAMED.findall(attributes)
    found = dict(pairs)
    if len(found) != len(pairs) or found.pop("xmlns", None) != ATOM:
        raise Irregular
    arxiv, opensearch = found.pop("xmlns:arxiv", None), found.pop("xmlns:opensearch", None)
    if found or arxiv not in (None, ARXIV) or opensearch not in (None, OPENSEARCH):
        raise Irregular
    return arxiv is not None, opensearch is not None


def _head(text: str, at: int, declared: bool) -> tuple[int, list[str]]:
    """Where the feed's own elements end, and its three counts (each there once)."""
    counts: dict[str, str] = {}
    match = _HEAD.match(text, at)
    while match is not None:
        name = match.group(2)
        if name is not None:
            if name in counts or not (declared or match.group(3)):
                raise Irregular
            counts[name] = match.group(4)
        at = match.end()
        match = _HEAD.match(text, at)
    if len(counts) != len(_COUNTS):
        raise Irregular
    return at, [counts[name] for name in _COUNTS]


def _columns(counts: list[str], entry: re.Pattern[str], rows: list[tuple[str | None, ...]]
             ) -> TextFeed:
    """The values of each entry as parse_feed's tree reading gives them, column by column."""
    if not rows:
        return TextFeed(counts, [[] for _ in range(8)], [], [], [])
    order = sorted(entry.groupindex, key=entry.groupindex.__getitem__)
    named = dict(zip(order, zip(*rows, strict=True), strict=True))
    texts = [_text(named[name]) for name in _GROUPS[:8]]
    if any("/api/errors" in raw_id for raw_id in texts[0]):  # the tree reading says why
        raise Irregular
    names = _runs_of(named["authors"], _NAME, "<name>", _text)
    terms = _runs_of(named["categories"], _CATEGORY, "term=", list)  # _TERM: nothing to undo
    return TextFeed(counts, texts, names, terms, list(named["primary"]))


def _runs_of(runs: Sequence[str], pattern: re.Pattern[str], marker: str,
             clean: Callable[[list[str]], list[str]]) -> list[list[str]]:
    """Each entry's values of a repeated element (its authors, its categories), from the run
    of them its pattern matched: one search over the joined runs (NUL, which no XML text
    holds, between them), `clean`ed as one column, then each entry's values sliced by how
    many times `marker` is in its run."""
    values = clean(pattern.findall("\0".join(runs)))
    ends = list(accumulate(map(str.count, runs, repeat(marker))))
    return [values[start:end] for start, end in pairwise([0, *ends])]


def _text(values: tuple[str | None, ...] | list[str]) -> list[str]:
    """XPath's normalize-space() of each value as written in the page (None: no element):
    the column checked as one string first, most values need nothing."""
    column = ["" if value is None else value for value in values]
    joined = " ".join(filter(None, column))  # an absent value would look like a double space
    if "&" in joined:
        column = [unescape(value) if "&" in value else value for value in column]
    if needs_squeeze(joined):
        column = list(map(squeeze, column))
    return column

