"""Render stage: the HTML digest page ([digest] html_path, also served at /), the README
digest's sections for a browser, with each keyword's Atom feed linked and announced.

One static document: no script, nothing fetched from elsewhere (its own Content-Security-Policy
says so), every text from arXiv escaped by Jinja's autoescape.
"""

from __future__ import annotations

import base64
import hashlib
import os.path
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import cache
from pathlib import Path

import jinja2
from markupsafe import Markup

from bot.render.batch import holding, replace_each
from bot.render.cells import LINK_TRIGGERS, has_link_trigger, web_links
from bot.render.digest import NOTE_CHARS, DigestRefused
from bot.render.feeds import ALL, slug
from bot.render.files import replace_file, unwritable
from bot.render.rows import Row, SectionView, cut_abstracts
from notifiers.text import cut, one_line

CONTENT_TYPE = "text/html; charset=utf-8"
_TEMPLATES = Path(__file__).parent / "templates"


class PageRefused(DigestRefused):
    """The page cannot be written at [digest] html_path; the message is the operator's line."""


@dataclass(frozen=True, slots=True)
class _PageSection:
    keyword: str
    anchor: str
    note: str | None
    items: Markup  # where its papers' list items go (_SLOT), or "" when it has none
    feed: str  # its Atom feed, relative to the page or absolute


def render_page(views: Sequence[SectionView], *, updated: date, max_papers: int,
                feeds: str) -> str:
    """The whole page. `feeds` is where the feeds are, as the page's links should say it:
    "feeds/" beside the page, or "https://papers.example.org/feeds/"."""
    if isinstance(updated, datetime):
        updated = updated.astimezone(UTC).date()
    sections = [_PageSection(v.keyword, v.anchor, v.note, Markup(_SLOT if v.rows else ""),
                             f"{feeds}{slug(v.keyword)}.atom") for v in views]
    frame = _template().render(sections=sections, updated=updated.isoformat(),
                               max_papers=max_papers, all_feed=f"{feeds}{ALL}.atom",
                               style=Markup(_style()), policy=Markup(policy()))
    return "".join(_spliced(frame.split(_SLOT), _items([r for v in views for r in v.rows]),
                            [len(v.rows) for v in views if v.rows]))


# The template renders the page around the items, which are put in its slots after: 10 MB of
# items for 100 keywords, copied once into the page instead of three times through Jinja.
_SLOT = "<daily-papers-items/>"  # never made by escaped text, whose "<" is "&lt;"


def _spliced(frame: list[str], items: list[str], counts: list[int]) -> list[str]:
    """The pieces of the page: the frame's, and between them each section's items, one per
    line."""
    pieces = [frame[0]]
    start = 0
    for count, after in zip(counts, frame[1:], strict=True):
        end = start + count
        for item in items[start:end - 1]:
            pieces += (item, "\n")
        pieces += (items[end - 1], after)
        start = end
    return pieces


def write_page(path: Path, html: str) -> bool:
    """Replace the file at `path` with the page, atomically; True when it changed.

    Raises PageRefused with one line naming the path and what to do."""
    data = html.encode("utf-8", "surrogateescape")
    try:
        if path.is_file() and path.read_bytes() == data:
            return False
        replace_file(path, data)
    except OSError as exc:  # name the configured path, not the temporary file beside it
        raise PageRefused(page_unwritable(path, exc)) from None
    return True


def page_unwritable(path: Path, exc: OSError) -> str:
    return unwritable(path, exc, what="the digest page", key="html_path")


def feeds_href(html_path: Path, feeds_dir: Path | None, public_url: str) -> str:
    """Where the page's feed links point: the static feeds beside it when [digest] feeds_dir is
    set (relative, so the pair can be published anywhere, GitHub Pages included), else the
    daemon's own /feeds/ under [web] public_url."""
    if feeds_dir is None:
        return f"{public_url.rstrip('/')}/feeds/"
    relative = Path(os.path.relpath(feeds_dir.resolve(), html_path.resolve().parent))
    return "" if relative == Path(".") else f"{relative.as_posix()}/"


def policy() -> str:
    """Nothing but the page's own style: no script, no outside resource, no form."""
    return (f"default-src 'none'; style-src '{_style_hash()}'; base-uri 'none'; "
            "form-action 'none'")


def _items(rows: Sequence[Row]) -> list[str]:
    """Each paper's list item. Python rather than the template: it runs for every row of every
    section (10,000 for 100 keywords); the texts are escaped as Jinja's autoescape would
    (`&<>"`) in one batch, those with a web address one by one. The cut's "…" and the
    separator "·" are written as character references, so the item of an ASCII paper stays
    an ASCII string: one wider character makes CPython build the item, the page and its UTF-8
    bytes in wider characters (a sixth of the page's time)."""
    cut_abstracts(rows)
    prose: list[str] = []  # apart from the names, which seldom hold anything to escape
    names: list[str] = []
    for r in rows:
        lines = r.lines
        prose += (lines.title, r._head, lines.comment)
        names += (lines.url, lines.authors)
    found = holding([*prose[1::3], *prose[2::3]], LINK_TRIGGERS)  # in the abstracts and comments
    linked = [rows[n] for n in {i % len(rows) for i in found}]
    links = {id(r): (_linked(r.abstract_text), _linked(r.lines.comment)) for r in linked}
    items = []
    three, two = iter(_escape_all(prose)), iter(_escape_all(names))
    for r, title, abstract, comment, url, authors in zip(rows, three, three, three, two, two,
                                                          strict=True):
        tail = _ELLIPSIS if r._tail else ""  # put after the head in the item: one copy fewer
        if links and id(r) in links:
            (abstract, comment), tail = links[id(r)], ""
        meta = f" &middot; {authors}" if r.paper.authors else ""
        if comment:
            comment = f'<p class="comment">{comment}</p>\n'
        opened, closed = _DETAILS if abstract or tail else ("", "")
        items.append(f'<li><a class="title" href="{url}">{title}</a>\n'  # one f-string:
                     f'<p class="meta"><time>{r.lines.date}</time>{meta}</p>\n'  # no part
                     f"{opened}{abstract}{tail}{closed}{comment}</li>")  # copied twice
    return items


_ELLIPSIS = "&hellip;"  # "…"
_DETAILS = ("<details><summary>Abstract</summary><p>", "</p></details>\n")


def _escape_all(texts: list[str]) -> list[str]:
    """_escape of each text, in one batch."""
    return replace_each(texts, _ENTITIES) or [_escape(t) for t in texts]


def _linked(text: str) -> str:
    """The text escaped, each web address in it a link to exactly that address."""
    if not has_link_trigger(text):
        return _escape(text)
    out: list[str] = []
    start = 0
    for begin, end, href in web_links(text):
        out.append(_escape(text[start:begin]))
        out.append(f'<a href="{_escape(href)}" rel="nofollow">{_escape(text[begin:end])}</a>')
        start = end
    out.append(_escape(text[start:]))
    return "".join(out)


def _escape(text: str) -> str:
    """Text for element content and double-quoted attributes, as autoescape makes it; the
    characters a text rarely holds are looked for before anything is copied."""
    for char, entity in _ENTITIES:
        if char in text:
            text = text.replace(char, entity)
    return text


_ENTITIES = (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ('"', "&#34;"))  # "&" first


@cache
def _template() -> jinja2.Template:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(_TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(line=one_line, linked=lambda text: Markup(_linked(text)),
                       cut=lambda text, n: cut(one_line(text), n))
    env.globals.update(note_chars=NOTE_CHARS)
    return env.get_template("digest.html.j2")


@cache
def _style() -> str:
    return (_TEMPLATES / "digest.css").read_text(encoding="utf-8")


@cache
def _style_hash() -> str:
    digest = hashlib.sha256(_style().encode("utf-8")).digest()
    return "sha256-" + base64.b64encode(digest).decode("ascii")
