"""Render stage: Atom feeds (RFC 4287) of the public keywords, of all of them, and of one reader.

Each paper's <entry> is rendered once from a string template and reused by every feed that
shows it: 100 keywords × 100 papers render in a fraction of feedgen's time (measured in
bench/bench_digest.py); tests check the output with feedparser and lxml.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import heapq
import os
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from functools import cached_property
from operator import attrgetter
from pathlib import Path

import bot
from bot.fetch.keywords import KeywordError, parse_keyword
from bot.render.batch import replace_each
from bot.render.digest import DigestRefused, DigestSection
from bot.render.files import replace_file, unwritable
from storage.records import Paper

CONTENT_TYPE = "application/atom+xml; charset=utf-8"
ARXIV_NS = "http://arxiv.org/schemas/atom"  # arXiv's own Atom extension: comment, DOI, journal
KEYWORD_SCHEME = "tag:daily-papers,2025:keyword"
ALL = "all"  # /feeds/all.atom; a keyword never gets this slug
ALL_ENTRIES = 500  # all.atom: the newest papers of every public keyword together
PRIVATE_ENTRIES = 100  # a reader's own feed
MAX_AUTHORS = 20  # then one "et al. (N authors)": a 3,000-author paper stays a small entry
SLUG_CHARS = 60
NEVER = datetime(1970, 1, 1, tzinfo=UTC)  # the `updated` of a feed with no entries

_EXACT = re.compile(r"[a-z0-9]+(?: [a-z0-9]+)*")
_NOT_SLUG = re.compile(r"[^a-z0-9]+")
# Characters XML 1.0 cannot carry at all (not even as references): dropped.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def slug(keyword: str) -> str:
    """The keyword's name in its feed's URL: stable (from its identity, not its spelling or
    config order), readable, and unique. A keyword of plain lower-case words and digits is
    those words joined by "-"; any other gets its readable part and "--" and 8 hex digits of
    its identity's hash (no plain slug contains "--", so the two kinds never meet)."""
    try:
        canonical = parse_keyword(keyword).canonical
    except KeywordError:
        canonical = keyword
    if _EXACT.fullmatch(canonical) and len(canonical) <= SLUG_CHARS and canonical != ALL:
        return canonical.replace(" ", "-")
    ascii_text = unicodedata.normalize("NFKD", canonical).encode("ascii", "ignore").decode()
    readable = _NOT_SLUG.sub("-", ascii_text.lower()).strip("-")[:SLUG_CHARS].strip("-")
    digest = hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:8]
    return f"{readable or 'keyword'}--{digest}"


def feed_path(name: str) -> str:
    """The URL path of a public feed (`name` a slug or ALL)."""
    return f"/feeds/{name}.atom"


def private_path(token: str) -> str:
    return f"/feeds/s/{token}.atom"


# --- rendering ------------------------------------------------------------------------------


def _x(text: str) -> str:
    """Text for XML character data and double-quoted attributes: literal, whatever it holds."""
    if _NOT_XML.search(text):
        text = _NOT_XML.sub("", text)
    return _markup_escaped(text)


def _markup_escaped(text: str) -> str:
    for char, entity in _XML:
        text = text.replace(char, entity)
    return text


_XML = (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ('"', "&quot;"))  # "&" first


def _x_all(texts: list[str]) -> list[str]:
    """_x of many texts at once (tens of thousands of short names and titles per render);
    text that holds a character XML cannot carry takes the slow path."""
    escaped = replace_each(texts, _XML, _clean)
    return [_x(t) for t in texts] if escaped is None else escaped


_CONTROLS = bytes([*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x1F)])  # all but \t \n \r, US


def _clean(text: str) -> bool:
    """No character XML cannot carry but escaping's separator. ASCII text (arXiv's, nearly always)
    only needs its control characters looked for, each a C scan; other text is checked on its
    UTF-8 bytes, where bytes.translate and `in` run many times faster than a regular expression."""
    if text.isascii():
        return not any(c in text for c in _CONTROL_CHARS)
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate
        return False
    return (len(data.translate(None, _CONTROLS)) == len(data)
            and b"\xef\xbf\xbe" not in data and b"\xef\xbf\xbf" not in data)


_CONTROL_CHARS = _CONTROLS.decode("ascii")


def _when(moment: datetime) -> str:
    if moment.tzinfo is not UTC:
        moment = moment.astimezone(UTC)
    return f"{moment.date().isoformat()}T{moment.time().isoformat()[:8]}Z"  # the fastest way


def _stamps(papers: Sequence[Paper]) -> list[tuple[str, str]]:
    """Each paper's `published` and `updated` as _when writes them, in one loop: 20,000 per
    render, where a call each costs as much as the formatting; a paper that has only its first
    version (`updated` is `published`) is formatted once."""
    stamps = []
    for p in papers:
        first, latest = p.published, p.updated
        if first.tzinfo is not UTC or latest.tzinfo is not UTC:
            stamps.append((_when(first), _when(latest)))
            continue
        written = f"{first.date().isoformat()}T{first.time().isoformat()[:8]}Z"
        stamps.append((written, written if latest == first else
                       f"{latest.date().isoformat()}T{latest.time().isoformat()[:8]}Z"))
    return stamps


def _categories(paper: Paper) -> list[str]:
    """The primary category first, each once."""
    if not paper.categories:
        return [paper.primary_category] if paper.primary_category else []
    return list(dict.fromkeys(filter(None, (paper.primary_category, *paper.categories))))


def _texts(papers: Sequence[Paper]) -> tuple[list[str], list[str], list[int]]:
    """The arXiv texts the papers' entries show, in the order _entry reads them: their prose
    (title, abstract, comment: three each) and their names (id, journal reference, DOI,
    categories, authors), and where each paper's names end. One loop for them all (10,000
    papers per render); apart, as names seldom hold anything to escape (then they are not
    split again: 100,000 strings)."""
    prose: list[str] = []
    names: list[str] = []
    ends: list[int] = []
    for p in papers:
        prose += (p.title or f"arXiv:{p.arxiv_id}", p.abstract, p.comment)
        names += (p.arxiv_id, p.journal_ref, p.doi)
        if p.primary_category or p.categories:
            names += _categories(p)
        names += p.authors[:MAX_AUTHORS]
        ends.append(len(names))
    return prose, names, ends


_CATEGORIES = ('<category term="', f'" scheme="{ARXIV_NS}"/><category term="',
               f'" scheme="{ARXIV_NS}"/>')  # what goes before, between and after the terms
_AUTHORS = ("<author><name>", "</name></author><author><name>", "</name></author>")


def _entry(paper: Paper, prose: tuple[str, str, str], names: list[str],
           stamps: tuple[str, str]) -> str:
    """One paper's <entry> from its texts, escaped (as _texts lists a paper's), and its
    `_stamps`; identified by its versionless abs URL so a reader never shows it twice;
    `published` is the first version's date, `updated` the latest version's. Lists are joined
    in one call each: this runs for every paper of every feed."""
    title, abstract, comment = prose
    arxiv_id, journal_ref, doi = names[:3]
    n_authors = min(len(paper.authors), MAX_AUTHORS)
    end = len(names) - n_authors
    categories = (f"{_CATEGORIES[0]}{_CATEGORIES[1].join(names[3:end])}{_CATEGORIES[2]}"
                  if end > 3 else "")
    authors = f"{_AUTHORS[0]}{_AUTHORS[1].join(names[end:])}{_AUTHORS[2]}" if n_authors else ""
    if len(paper.authors) > MAX_AUTHORS:
        authors += f"<author><name>et al. ({len(paper.authors)} authors)</name></author>"
    extra = ""
    if comment:
        extra += f"<arxiv:comment>{comment}</arxiv:comment>\n"
    if journal_ref:
        extra += f"<arxiv:journal_ref>{journal_ref}</arxiv:journal_ref>\n"
    if doi:
        extra += f"<arxiv:doi>{doi}</arxiv:doi>\n"
    return (
        f"<entry>\n<id>https://arxiv.org/abs/{arxiv_id}</id>\n"
        f'<title type="text">{title}</title>\n'
        f'<link rel="alternate" type="text/html" href="https://arxiv.org/abs/{arxiv_id}"/>\n'
        f'<link rel="related" type="application/pdf" title="pdf" '
        f'href="https://arxiv.org/pdf/{arxiv_id}v{paper.version}"/>\n'
        f"{authors}\n<published>{stamps[0]}</published>\n"
        f"<updated>{stamps[1]}</updated>\n{categories}\n"
        f'<summary type="text">{abstract}</summary>\n{extra}</entry>\n'
    )


class Entries:
    """Each paper's <entry> rendered once, however many feeds show it."""

    def __init__(self) -> None:
        self._done: dict[tuple[str, int], str] = {}

    def render(self, papers: Sequence[Paper],
               labels: Mapping[str, Sequence[str]] | None = None) -> list[str]:
        """The entries of `papers`, in order (joined once with the rest of their feed);
        `labels` names, per arXiv id, the keywords an entry is shown for."""
        self._prepare(papers)
        done = self._done
        if not labels:
            return [done[(p.arxiv_id, p.version)] for p in papers]
        return [_labelled(done[(p.arxiv_id, p.version)], labels.get(p.arxiv_id, ()))
                for p in papers]

    def _prepare(self, papers: Sequence[Paper]) -> None:
        """Render the papers not rendered yet, their texts escaped in one batch."""
        done = self._done
        missing = list({(p.arxiv_id, p.version): p for p in papers
                        if (p.arxiv_id, p.version) not in done}.values())
        prose, names, ends = _texts(missing)
        names = _x_all(names)
        three = iter(_x_all(prose))
        for paper, start, end, stamps, title, abstract, comment in zip(
                missing, [0, *ends], ends, _stamps(missing), three, three, three, strict=False):
            done[(paper.arxiv_id, paper.version)] = _entry(
                paper, (title, abstract, comment), names[start:end], stamps)


def _labelled(entry: str, keywords: Sequence[str]) -> str:
    if not keywords:
        return entry
    labels = "".join(f'<category term="{k}" scheme="{KEYWORD_SCHEME}" label="{k}"/>'
                     for k in map(_x, keywords))
    return f"{entry[:-9]}{labels}\n</entry>\n"


@dataclass(frozen=True)
class FeedHead:
    """What a feed says of itself."""

    url: str  # where it is served: its self link, and its id
    title: str
    subtitle: str
    home: str  # the HTML digest page


@dataclass(frozen=True)
class Rendered:
    """A feed as served and written: its bytes and its validators."""

    body: bytes
    updated: datetime  # the newest change of any entry; NEVER when it has none

    @cached_property
    def etag(self) -> str:
        return f'"{hashlib.sha256(self.body).hexdigest()[:32]}"'

    @property
    def last_modified(self) -> str:
        return format_datetime(self.updated.astimezone(UTC), usegmt=True)


def newest_first(papers: Iterable[Paper]) -> list[Paper]:
    """By first-version date, then id: the order of the digest."""
    return sorted(papers, key=_NEWEST, reverse=True)


_NEWEST = attrgetter("published", "arxiv_id")


def render_feed(head: FeedHead, papers: Sequence[Paper], entries: Entries | None = None,
                labels: Mapping[str, Sequence[str]] | None = None) -> Rendered:
    """A whole Atom document of `papers` (already newest first); `labels` names, per arXiv
    id, the keywords an entry is shown for (all.atom and a reader's own feed)."""
    entries = entries or Entries()
    updated = max((p.updated for p in papers), default=NEVER)
    body = entries.render(papers, labels)
    top = (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        f'<feed xmlns="http://www.w3.org/2005/Atom" xmlns:arxiv="{ARXIV_NS}">\n'
        f"<id>{_x(head.url)}</id>\n"
        f'<title type="text">{_x(head.title)}</title>\n'
        f'<subtitle type="text">{_x(head.subtitle)}</subtitle>\n'
        f"<updated>{_when(updated)}</updated>\n"
        f'<link rel="self" type="application/atom+xml" href="{_x(head.url)}"/>\n'
        f'<link rel="alternate" type="text/html" href="{_x(head.home)}"/>\n'
        "<author><name>Daily Papers</name></author>\n"
        f'<generator version="{bot.__version__}">Daily Papers</generator>\n'
    )
    return Rendered("".join([top, *body, "</feed>\n"]).encode("utf-8"), updated)


# --- the public feeds -----------------------------------------------------------------------


def keyword_head(public_url: str, keyword: str, name: str | None = None) -> FeedHead:
    """`name`: the keyword's slug, when already made (a parse of the keyword each)."""
    base = public_url.rstrip("/")
    return FeedHead(f"{base}{feed_path(name or slug(keyword))}", f"Daily Papers: {keyword}",
                    f"The newest arXiv papers for the keyword {keyword}, newest first.",
                    f"{base}/")


def all_head(public_url: str) -> FeedHead:
    base = public_url.rstrip("/")
    return FeedHead(f"{base}{feed_path(ALL)}", "Daily Papers: every keyword",
                    "The newest arXiv papers for every keyword of this Daily Papers, "
                    "newest first.", f"{base}/")


def everything(sections: Sequence[DigestSection],
               limit: int = ALL_ENTRIES) -> list[tuple[Paper, list[str]]]:
    """The newest papers of all the sections together, each once, with the keywords it is in
    (sorted, as storage's newest_of gives them to the served all.atom)."""
    labels: dict[str, list[str]] = {}
    papers: dict[str, Paper] = {}
    for section in sections:
        for paper in section.papers:
            papers.setdefault(paper.arxiv_id, paper)
            labels.setdefault(paper.arxiv_id, []).append(section.keyword)
    newest = heapq.nlargest(limit, papers.values(), key=_NEWEST)  # newest_first(...)[:limit]
    return [(p, sorted(labels[p.arxiv_id])) for p in newest]


def public_feed(section: DigestSection, public_url: str, entries: Entries | None = None,
                name: str | None = None) -> Rendered:
    """/feeds/{slug}.atom: one [arxiv] keyword's window (`name`: its slug, when made)."""
    return render_feed(keyword_head(public_url, section.keyword, name),
                       newest_first(section.papers), entries)


def all_feed(rows: Sequence[tuple[Paper, Sequence[str]]], public_url: str,
             entries: Entries | None = None) -> Rendered:
    """/feeds/all.atom: every [arxiv] keyword's newest papers together (`everything`, or
    storage's newest_of), each with its keywords."""
    return render_feed(all_head(public_url), [p for p, _ in rows], entries,
                       {p.arxiv_id: k for p, k in rows})


def public_feeds(sections: Sequence[DigestSection], public_url: str) -> dict[str, Rendered]:
    """Every public feed by its name (slug, and ALL), each paper's entry rendered once."""
    entries = Entries()
    feeds = {name: public_feed(s, public_url, entries, name)
             for s, name in zip(sections, [slug(s.keyword) for s in sections], strict=True)}
    feeds[ALL] = all_feed(everything(sections), public_url, entries)
    return feeds


def private_feed(url: str, public_url: str, keywords: Sequence[str],
                 rows: Sequence[tuple[Paper, Sequence[str]]]) -> Rendered:
    """/feeds/s/{token}.atom: a reader's keywords' papers (already newest first), each entry
    labelled with the reader's keywords it is for."""
    head = FeedHead(url, "Daily Papers: your keywords",
                    f"The newest arXiv papers for your keywords: {', '.join(keywords)}.",
                    f"{public_url.rstrip('/')}/")
    return render_feed(head, [p for p, _ in rows], labels={p.arxiv_id: k for p, k in rows})


class FeedsRefused(DigestRefused):
    """[digest] feeds_dir cannot be written; the message is the operator's line."""


def write_feed_files(directory: Path, sections: Sequence[DigestSection],
                     public_url: str) -> int:
    """[digest] feeds_dir: every public feed as a static file; how many files changed."""
    try:
        return write_feeds(directory, public_feeds(sections, public_url))
    except OSError as exc:
        raise FeedsRefused(feeds_unwritable(directory, exc)) from None


def feeds_unwritable(directory: Path, exc: OSError) -> str:
    return unwritable(directory / ALL_FILE, exc, what="the Atom feeds", key="feeds_dir")


def feeds_problem(directory: Path) -> str | None:
    """Why the feeds could not be written in `directory` (asked before anything is done); None
    when it looks writable. A missing folder is made, so its nearest existing parent counts."""
    if directory.exists() and not directory.is_dir():
        return feeds_unwritable(directory, OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR)))
    existing = next((p for p in (directory, *directory.parents) if p.exists()), directory)
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        return feeds_unwritable(directory, OSError(errno.EACCES, os.strerror(errno.EACCES)))
    return None


ALL_FILE = f"{ALL}.atom"


def write_feeds(directory: Path, feeds: Mapping[str, Rendered]) -> int:
    """Write each feed as `{name}.atom` atomically (temporary file + rename); a feed whose file
    already holds the same bytes is left alone. Returns how many files changed. Files of
    keywords no longer public are removed, so a stale feed is never published: the folder
    is Daily Papers' own."""
    directory.mkdir(parents=True, exist_ok=True)
    changed = 0
    for name, feed in feeds.items():
        target = directory / f"{name}.atom"
        with contextlib.suppress(OSError):
            if target.read_bytes() == feed.body:
                continue
        replace_file(target, feed.body)
        changed += 1
    wanted = {f"{name}.atom" for name in feeds}
    for stale in directory.glob("*.atom"):
        if stale.name not in wanted:
            stale.unlink(missing_ok=True)
            changed += 1
    return changed
