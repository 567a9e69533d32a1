"""Render stage: the README digest of every curated keyword's newest papers.

Renders Markdown with Jinja2 and atomically rewrites only the marked region of the file.
"""

from __future__ import annotations

import heapq
import logging
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import cache, partial
from pathlib import Path

import jinja2

from bot.render.cells import (
    cell,
    line_cell_bytes,
    line_cells,
    linked_cell,
    linked_line_cell,
    linked_line_cells,
    linked_line_cells_bytes,
)
from bot.render.files import replace_file, unwritable
from notifiers.text import cut, one_line
from storage.records import Paper

log = logging.getLogger(__name__)

START_MARKER = "<!-- daily-papers:start -->"
END_MARKER = "<!-- daily-papers:end -->"
TITLE = "# Daily Papers"

COMMENT_INLINE_CHARS = 40  # longer comments fold behind a summary, as in the reference digest
SUMMARY_CHARS = 30
NOTE_CHARS = 300
SHORT_ABSTRACT_CHARS = 150  # the first step down when the file would be too big

# Markers count only on a line of their own, so a README may mention them in its text.
_MARKER_LINE = re.compile(r"^[ \t]*<!-- daily-papers:(start|end) -->[ \t]*\r?$", re.MULTILINE)

class DigestRefused(Exception):
    """The digest file cannot be rewritten as it is; the operator must act. It is left unchanged."""


@dataclass(frozen=True)
class DigestSection:
    """One keyword's section of the digest."""

    keyword: str  # display text, e.g. "Video Anomaly Detection"
    papers: Sequence[Paper]  # any order; the digest sorts newest first and keeps max_papers
    note: str | None = None  # arXiv's message when it rejected the keyword's query


BodyRenderer = Callable[..., str]
"""Called as `render(max_bytes=n)`; returns a digest body of at most n UTF-8 bytes."""


@dataclass(frozen=True, slots=True)
class PaperLines:
    """A paper's texts on one line, made once for every rendering that shows it (the Markdown
    digest, the HTML page; a paper in two sections too)."""

    title: str  # the arXiv id when the title is empty
    authors: str  # "A, B, C et al. (N authors)"
    comment: str
    date: str  # the first version's, as a UTC date

    @classmethod
    def of(cls, p: Paper) -> PaperLines:
        return cls(one_line(p.title or p.arxiv_id), one_line(p.authors_short()),
                   one_line(p.comment), _utc(p.published).date().isoformat())


@dataclass(slots=True)
class Row:
    """One paper's line of the Markdown table; its cells are made once, and only the abstract's
    again when the fitting shortens it, so sizes are known without re-rendering."""

    paper: Paper
    lines: PaperLines
    abstract_chars: int  # 0: no abstract
    _cells: tuple[str, str] | None = None  # title (with authors) and comment
    _fixed_size: int = 0  # UTF-8 bytes of the line without its abstract, newline included
    _abstract: str | None = None  # the abstract cell at abstract_chars
    _text: str | None = None  # the abstract as one line cut at abstract_chars (the page's too)
    _bytes: int = -1  # `size`, once known

    @property
    def line(self) -> str:
        title, comment = self._cells or self._make_cells()
        return f"| {title} | {self.lines.date} | {self.abstract} | {comment} |"

    @property
    def abstract(self) -> str:
        if self._abstract is None:
            self._abstract = _abstract_cell(self.abstract_text)
        return self._abstract

    @property
    def abstract_text(self) -> str:
        """The abstract on one line, cut at a word boundary at `abstract_chars`."""
        if self._text is None:
            chars = self.abstract_chars
            text = self.paper.abstract
            self._text = _cut(text, chars) if chars and text else ""
        return self._text

    @property
    def size(self) -> int:
        """UTF-8 bytes of the line with its newline; the abstract's cell is counted, not
        made, when it holds no web address (most rows the fitting measures are left out)."""
        if self._bytes < 0:
            if self._cells is None:
                self._make_cells()
            counted = None
            if self._abstract is None and self.abstract_text:
                counted = line_cell_bytes(self.abstract_text)
            self._bytes = self._fixed_size + (_size(self.abstract) if counted is None
                                              else counted + _DETAILS_BYTES)
        return self._bytes

    @property
    def fixed_size(self) -> int:
        """`size` without an abstract."""
        if self._cells is None:
            self._make_cells()
        return self._fixed_size

    def shorten(self, abstract_chars: int) -> None:
        self.abstract_chars = abstract_chars
        self._abstract = self._text = None
        self._bytes = -1

    def copy(self) -> Row:
        return Row(self.paper, self.lines, self.abstract_chars, self._cells, self._fixed_size,
                   self._abstract, self._text, self._bytes)

    def without_abstract(self) -> Row:
        """A copy shortened to no abstract at all (its cells made: see make_cells)."""
        return Row(self.paper, self.lines, 0, self._cells, self._fixed_size, "", "",
                   self._fixed_size)

    def _make_cells(self) -> tuple[str, str]:
        make_cells([self])
        return self._cells  # type: ignore[return-value]


def make_cells(rows: Sequence[Row]) -> None:
    """The title and comment cells of the rows that have none yet, and their sizes: their
    texts escaped in one batch (10,000 rows for 100 keywords)."""
    todo = [r for r in rows if r._cells is None]
    texts: list[str] = []
    comments: list[str] = []
    for r in todo:
        lines = r.lines
        texts += (lines.title, lines.authors, _summary(r.paper.comment, lines.comment))
        comments.append(lines.comment)
    escaped = line_cells(texts)
    linked = linked_line_cells(comments)
    for i, r in enumerate(todo):
        title, authors, summary = escaped[3 * i:3 * i + 3]
        title = f"**[{title}]({r.paper.abs_url})**"
        if r.paper.authors:
            title += f"<br><sub>{authors}</sub>"
        comment = linked[i]
        if summary:
            comment = f"<details><summary>{summary}</summary><p>{comment}</p></details>"
        r._cells = (title, comment)
        r._fixed_size = _size(title) + _size(r.lines.date) + _size(comment) + _ROW_FRAME


_ROW_FRAME = len("|  |  |  |  |\n")


def make_abstracts(rows: Sequence[Row]) -> None:
    """The abstract cells of the rows that have none yet, escaped in one batch."""
    todo = [r for r in rows if r._abstract is None]
    for r, text in zip(todo, linked_line_cells([r.abstract_text for r in todo]), strict=True):
        r._abstract = f"{_DETAILS[0]}{text}{_DETAILS[1]}" if text else ""


def _abstracts_bytes(rows: Sequence[Row]) -> int:
    """`size - fixed_size` of all the rows together, counted without making their cells."""
    texts = [text for r in rows if (text := r.abstract_text)]
    return linked_line_cells_bytes(texts) + _DETAILS_BYTES * len(texts)


@dataclass(slots=True)
class SectionView:
    """One keyword's section as rendered: what the Markdown digest and the HTML page show."""

    keyword: str  # on one line
    anchor: str
    note: str | None
    rows: list[Row]  # newest first
    hidden: int = 0  # oldest rows left out to respect max_bytes

    @property
    def table(self) -> str:
        """The Markdown table's rows, one per line (joined here: a template loop over 10,000
        rows costs more than making them)."""
        return "\n".join([r.line for r in self.rows])


def render_digest(
    sections: Sequence[DigestSection],
    *,
    updated: date,
    max_papers: int = 100,
    abstract_chars: int = 600,
    max_bytes: int | None = None,
) -> str:
    """The Markdown that goes between the markers.

    With `max_bytes`, the oldest rows' abstracts are shortened, then removed, then the oldest
    rows of the longest sections are left out, until the UTF-8 text fits (one WARNING says so).
    """
    views = section_views(sections, max_papers, abstract_chars)
    return render_views(views, updated=updated, max_papers=max_papers,
                        abstract_chars=abstract_chars, max_bytes=max_bytes)


def render_views(views: list[SectionView], *, updated: date, max_papers: int = 100,
                 abstract_chars: int = 600, max_bytes: int | None = None) -> str:
    """`render_digest` of sections already made into views (shared with the HTML page, which
    sees them whole: the fitting works on copies)."""
    if isinstance(updated, datetime):
        updated = updated.astimezone(UTC).date()
    render = partial(_render, updated=updated.isoformat(), max_papers=max_papers)
    rows = [r for v in views for r in v.rows]
    make_cells(rows)
    if max_bytes is None:
        make_abstracts(rows)
        return render(views)
    abstracts = _abstracts_bytes(rows)
    size = _frame_size(views, render) + sum(r._fixed_size - 1 for r in rows) + abstracts
    if size <= max_bytes:
        make_abstracts(rows)
        return render(views)
    return _fit(views, render, abstract_chars, max_bytes, size, abstracts)


def write_digest(path: Path, body: str | BodyRenderer, *, max_bytes: int = 500_000) -> bool:
    """Put `body` between the markers of the file at `path`; True when the file changed.

    `body` may be a renderer (see BodyRenderer) so the whole file can be kept under
    `max_bytes`. A missing file is created; a whole earlier digest gets markers; any other
    file without markers raises DigestRefused.
    """
    target = Path(path).resolve()
    try:
        old = target.read_bytes() if target.exists() else None
    except OSError as exc:
        raise DigestRefused(unwritable(Path(path), exc)) from None
    before, after = _frame(target, old)
    room = max_bytes - 1 - _size(before) - _size(after)
    text = body(max_bytes=room) if callable(body) else body
    if not text.endswith("\n"):
        text += "\n"
    if _size(text) > room:
        raise DigestRefused(
            f"{target}: the digest would make the file {_size(before + text + after)} bytes, "
            f"over [digest] max_bytes = {max_bytes}; the file is left unchanged"
        )
    data = (before + text + after).encode("utf-8", "surrogateescape")
    if data == old:
        return False
    try:
        replace_file(target, data)
    except OSError as exc:  # name the configured path, not the temporary file beside it
        raise DigestRefused(unwritable(Path(path), exc)) from None
    return True


def update_digest(
    path: Path,
    sections: Sequence[DigestSection],
    *,
    updated: date,
    max_papers: int = 100,
    abstract_chars: int = 600,
    max_bytes: int = 500_000,
) -> bool:
    """Render the sections and write them into the file, whole file under `max_bytes`."""
    render = partial(
        render_digest, sections, updated=updated, max_papers=max_papers,
        abstract_chars=abstract_chars,
    )
    return write_digest(path, render, max_bytes=max_bytes)


# --- rendering ------------------------------------------------------------------------------


@cache
def _template() -> jinja2.Template:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
        autoescape=False,  # Markdown, not HTML: the `cell` filter escapes
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(cell=cell, linked_cell=linked_cell, cut=_cut)
    env.globals.update(note_chars=NOTE_CHARS)
    return env.get_template("digest.md.j2")


def _cut(text: str, limit: int) -> str:
    """`cut` on the text as one line.

    `cut` of a longer text reads only its first `limit` characters, so when the text starts
    with that much plain one-line text (the usual abstract), only that head is examined."""
    if len(text) <= limit:
        return one_line(text)
    head = text[: limit + 2]
    if len(text) > len(head) and head.isprintable() and "  " not in head and head[0] != " ":
        return cut(head, limit)  # one_line(text) starts with exactly this head
    return one_line(cut(one_line(text), limit))  # once more: a dropped control character
    # between two spaces leaves both


# The cells of a table row. Plain Python rather than a template macro: they run for every row
# of every section, and the fitting re-makes single abstracts while it measures them.


def _abstract_cell(text: str) -> str:
    if not text:
        return ""
    return f"{_DETAILS[0]}{linked_line_cell(text)}{_DETAILS[1]}"


_DETAILS = ("<details><summary>Show</summary><p>", "</p></details>")
_DETAILS_BYTES = len("".join(_DETAILS))


def _summary(comment: str, line: str) -> str:
    """A long comment (as written) folds behind its first words; "" when it is short."""
    if len(comment) > COMMENT_INLINE_CHARS:
        return one_line(cut(line, SUMMARY_CHARS))
    return ""


@cache
def _macros() -> jinja2.runtime.TemplateModule:
    """The template's macros on their own, to measure the note that replaces left-out rows."""
    return _template().make_module({"sections": [], "updated": "", "max_papers": 0})


def _render(views: list[SectionView], **context: object) -> str:
    return _template().render(sections=views, **context)


def section_views(
    sections: Sequence[DigestSection], max_papers: int, abstract_chars: int
) -> list[SectionView]:
    """Each section's newest `max_papers` rows, and its heading's anchor."""
    anchors = _Anchors()
    views = []
    lines: dict[tuple[str, int], PaperLines] = {}
    for section in sections:
        keyword = one_line(section.keyword)
        rows = []
        for p in _newest(section.papers, max_papers):
            key = (p.arxiv_id, p.version)
            made = lines.get(key)
            if made is None:
                made = lines[key] = PaperLines.of(p)
            rows.append(Row(p, made, abstract_chars))
        views.append(SectionView(keyword, anchors.add(keyword), section.note, rows))
    return views


def _newest(papers: Sequence[Paper], limit: int) -> list[Paper]:
    """Newest first by first-version date; one row per paper, at its latest version."""
    latest: dict[str, Paper] = {}
    for p in papers:
        if p.arxiv_id not in latest or p.version > latest[p.arxiv_id].version:
            latest[p.arxiv_id] = p
    ordered = sorted(latest.values(), key=lambda p: (_utc(p.published), p.arxiv_id), reverse=True)
    return ordered[: max(limit, 0)]


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


class _Anchors:
    """GitHub's heading anchors (as github-slugger computes them), numbered when repeated."""

    def __init__(self) -> None:
        self._seen: dict[str, int] = {}

    def add(self, heading: str) -> str:
        base = "".join(c for c in heading.lower() if _kept_in_anchor(c)).replace(" ", "-")
        anchor = base
        while anchor in self._seen:
            self._seen[base] += 1
            anchor = f"{base}-{self._seen[base]}"
        self._seen[anchor] = 0
        return anchor


def _kept_in_anchor(c: str) -> bool:
    category = unicodedata.category(c)
    return c in " -" or category[0] in "LMN" or category == "Pc"


def _size(text: str) -> int:
    """UTF-8 bytes; an ASCII string (most cells) is measured without encoding it."""
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogateescape"))


# --- keeping under max_bytes ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Blank:
    line: str = ""


def _frame_size(views: list[SectionView], render: Callable[[list[SectionView]], str]) -> int:
    """The digest's UTF-8 bytes without its rows' lines (the newline after each row is the
    frame's)."""
    blank = _Blank()
    return _size(render([SectionView(v.keyword, v.anchor, v.note,
                                     [blank] * len(v.rows), v.hidden)  # type: ignore[list-item]
                         for v in views]))


def _fit(
    views: list[SectionView],
    render: Callable[[list[SectionView]], str],
    abstract_chars: int,
    budget: int,
    size: int,
    abstracts: int,
) -> str:
    """Shrink the oldest rows until the rendered text fits `budget` bytes, or nothing is left.
    `abstracts`: the bytes all the abstracts' cells add."""
    shrink = _Shrinker(views, abstract_chars)  # works on copies: the caller's views stay
    # whole (the HTML page shows them all)
    shrink.leave_out_rows(shrink.shorten_abstracts(size - budget, abstracts))
    text = render(shrink.views)
    while _size(text) > budget and shrink.leave_out_rows(1) is not None:
        text = render(shrink.views)  # only when the estimate fell short
    log.warning(
        "digest: %d bytes is over the budget of %d bytes, so it shortened the abstracts of the "
        "%d oldest papers, removed %d abstracts and left out %d oldest rows; now %d bytes",
        size, budget, shrink.shortened, shrink.removed, shrink.left_out, _size(text),
    )
    return text


class _Shrinker:
    """Makes a digest smaller oldest rows first, keeping track of each row's bytes."""

    def __init__(self, views: list[SectionView], abstract_chars: int) -> None:
        self.originals = views
        self.views = views
        self.abstract_chars = abstract_chars
        self.shortened = self.removed = self.left_out = 0
        self._macros = _macros()

    def shorten_abstracts(self, excess: int, abstracts: int) -> int:
        """Oldest rows first, step abstracts down (to a few sentences, then none), on copies
        of the views. `abstracts`: the bytes all the abstracts' cells add.

        Returns the bytes still in excess.
        """
        levels = _levels(self.abstract_chars)
        if levels and abstracts < excess:
            return self._remove_all(levels, excess - abstracts)
        self.views = [SectionView(v.keyword, v.anchor, v.note, [r.copy() for r in v.rows],
                                  v.hidden) for v in self.originals]
        rows = [r for v in self.views for r in v.rows if r.paper.abstract]
        oldest_first = sorted(rows, key=lambda r: (_utc(r.paper.published), r.paper.arxiv_id))
        for level in levels:
            for row in oldest_first:
                if excess <= 0:
                    return excess
                before = row.size
                row.shorten(level)
                excess -= before - row.size
                if level:
                    self.shortened += 1
                else:
                    self.removed += 1
        return excess

    def _remove_all(self, levels: list[int], excess: int) -> int:
        """Every abstract removed, as the steps would end when even that is not enough (each
        row's steps save at most its whole abstract): the few-sentence step is not measured."""
        self.views = [SectionView(v.keyword, v.anchor, v.note,
                                  [r.without_abstract() for r in v.rows], v.hidden)
                      for v in self.originals]
        with_abstract = sum(1 for v in self.views for r in v.rows if r.paper.abstract)
        self.shortened += with_abstract * (len(levels) - 1)
        self.removed += with_abstract
        return excess

    def leave_out_rows(self, excess: int) -> int | None:
        """Drop the oldest row of the longest section until `excess` bytes are gone.

        The longest section goes first so every keyword keeps its newest papers. Returns the
        bytes still in excess (an estimate), or None when there was no row left to drop.
        """
        heap = [(-len(v.rows), i) for i, v in enumerate(self.views) if v.rows]
        if excess > 0 and not heap:
            return None
        heapq.heapify(heap)
        while excess > 0 and heap:
            _, i = heapq.heappop(heap)
            view = self.views[i]
            excess -= view.rows.pop().size
            view.hidden += 1
            self.left_out += 1
            if view.hidden == 1:
                excess += _size(self._macros.hidden_note(len(view.rows) + 1)) + 2
            if view.rows:
                heapq.heappush(heap, (-len(view.rows), i))
        return excess


def _levels(abstract_chars: int) -> list[int]:
    return [n for n in (SHORT_ABSTRACT_CHARS, 0) if n < abstract_chars]


# --- the file -------------------------------------------------------------------------------


def _frame(target: Path, old: bytes | None) -> tuple[str, str]:
    """The text before and after the body: kept byte for byte, or made for a new file."""
    fresh = (f"{TITLE}\n\n{START_MARKER}\n", f"{END_MARKER}\n")
    if old is None:
        return fresh
    text = old.decode("utf-8", "surrogateescape")
    markers = list(_MARKER_LINE.finditer(text))
    kinds = [m.group(1) for m in markers]
    if kinds == ["start", "end"]:
        start, end = markers
        return text[: start.end() + 1], text[end.start() :]
    if markers:
        raise DigestRefused(
            f"{target}: expected one line {START_MARKER} and then one line {END_MARKER}, "
            f"found {kinds.count('start')} start and {kinds.count('end')} end markers "
            "in that order; fix them by hand"
        )
    if _is_whole_digest(text):
        return fresh
    raise DigestRefused(
        f"{target} is not a Daily Papers digest. Add these two lines where the digest should "
        f"go, then run again:\n{START_MARKER}\n{END_MARKER}"
    )


def _is_whole_digest(text: str) -> bool:
    return (
        text.lstrip("\ufeff").startswith(TITLE)
        and "Last update:" in text
        and "| **Title** |" in text
    )
