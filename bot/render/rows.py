"""Render stage: each paper's row, and each keyword's section of rows, as the Markdown digest and
the HTML page show them; a row's texts made once per render for both, in batches (10,000 rows
for 100 keywords)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NamedTuple

from bot.render.batch import not_plain
from bot.render.cells import (
    line_cell_bytes,
    line_cells,
    linked_line_cells,
    linked_line_cells_bytes,
    utf8_size,
)
from notifiers.text import ELLIPSIS, TRAILING, cut, one_line
from storage.records import Paper

COMMENT_INLINE_CHARS = 40  # longer comments fold behind a summary, as in the reference digest
SUMMARY_CHARS = 30


class PaperLines(NamedTuple):
    """A paper's texts on one line, made once for every rendering that shows it (the Markdown
    digest, the HTML page; a paper in two sections too). A tuple: made 10,000 times per
    render, several times faster than a frozen dataclass."""

    title: str  # the arXiv id when the title is empty
    authors: str  # "A, B, C et al. (N authors)"
    comment: str
    date: str  # the first version's, as a UTC date
    url: str  # the abstract page (Paper.abs_url, a property: made here once for both)


def lines_of(papers: Sequence[Paper]) -> list[PaperLines]:
    """The PaperLines of each paper; texts already on one line (nearly all) are found so in
    one batch."""
    titles = [p.title or p.arxiv_id for p in papers]
    authors = [p.authors_short() for p in papers]
    comments = [p.comment for p in papers]
    for texts in (titles, authors, comments):
        for i in not_plain(texts):
            texts[i] = one_line(texts[i])
    dates = [(m if (m := p.published).tzinfo is UTC else utc(m)).date().isoformat()
             for p in papers]
    urls = [p.abs_url for p in papers]
    return list(map(PaperLines, titles, authors, comments, dates, urls))


@dataclass(slots=True)
class Row:
    """One paper's line of the Markdown table and item of the page; its cells are made once,
    and only the abstract's again when the fitting shortens it, so sizes are known without
    re-rendering."""

    paper: Paper
    lines: PaperLines
    abstract_chars: int  # 0: no abstract
    _cells: tuple[str, str] | None = None  # title (with authors) and comment
    _fixed_size: int = 0  # UTF-8 bytes of the line without its abstract, newline included
    _abstract: str | None = None  # the abstract cell at abstract_chars
    _head: str | None = None  # the abstract on one line cut at abstract_chars, but for
    _tail: str = ""  # the "…" of the cut: the head of plain text stays ASCII (cheaper)
    _bytes: int = -1  # `size`, once known

    @property
    def line(self) -> str:
        title, comment = self._cells or self._make_cells()
        return f"| {title} | {self.lines.date} | {self.abstract} | {comment} |"

    @property
    def bare_line(self) -> str:
        """`line` without the abstract."""
        title, comment = self._cells or self._make_cells()
        return f"| {title} | {self.lines.date} |  | {comment} |"

    @property
    def abstract(self) -> str:
        if self._abstract is None:
            make_abstracts([self])
        return self._abstract  # type: ignore[return-value]

    @property
    def abstract_parts(self) -> tuple[str, str]:
        """The abstract on one line, cut at a word boundary at `abstract_chars`, as its head
        and its end ("…" when cut, else "")."""
        if self._head is None:
            cut_abstracts([self])
        return self._head, self._tail  # type: ignore[return-value]

    @property
    def abstract_text(self) -> str:
        return "".join(self.abstract_parts)

    @property
    def size(self) -> int:
        """UTF-8 bytes of the line with its newline; the abstract's cell is counted, not
        made, when it holds no web address (most rows the fitting measures are left out)."""
        if self._bytes < 0:
            if self._cells is None:
                self._make_cells()
            text = self.abstract_text
            counted = None
            if self._abstract is None and text:
                counted = line_cell_bytes(text)
            self._bytes = self._fixed_size + (utf8_size(self.abstract) if counted is None
                                              else counted + DETAILS_BYTES)
        return self._bytes

    @property
    def fixed_size(self) -> int:
        """`size` without an abstract."""
        if self._cells is None:
            self._make_cells()
        return self._fixed_size

    def shorten(self, abstract_chars: int) -> None:
        self.abstract_chars = abstract_chars
        self._abstract = self._head = None
        self._tail = ""
        self._bytes = -1

    def copy(self) -> Row:
        return Row(self.paper, self.lines, self.abstract_chars, self._cells, self._fixed_size,
                   self._abstract, self._head, self._tail, self._bytes)

    def _make_cells(self) -> tuple[str, str]:
        make_cells([self])
        return self._cells  # type: ignore[return-value]


@dataclass(slots=True)
class SectionView:
    """One keyword's section as rendered: what the Markdown digest and the HTML page show."""

    keyword: str  # on one line
    anchor: str
    note: str | None
    rows: list[Row]  # newest first
    hidden: int = 0  # oldest rows left out to respect max_bytes
    abstracts: bool = True  # False: the fitting removed every abstract

    @property
    def table(self) -> str:
        """The Markdown table's rows, one per line (joined here: a template loop over 10,000
        rows costs more than making them)."""
        if self.abstracts:
            return "\n".join([r.line for r in self.rows])
        return "\n".join([r.bare_line for r in self.rows])


def make_cells(rows: Sequence[Row]) -> None:
    """The title and comment cells of the rows that have none yet, and their sizes: their
    texts escaped in batches (the authors apart: seldom anything to escape, then no split)."""
    todo = [r for r in rows if r._cells is None]
    n = len(todo)
    comments = [r.lines.comment for r in todo]
    folded = [len(r.paper.comment) > COMMENT_INLINE_CHARS for r in todo]  # first words shown
    summaries = [ends_apart(one_line(cut(c, SUMMARY_CHARS))) if fold else ("", "")
                 for c, fold in zip(comments, folded, strict=True)]
    escaped = line_cells([*(r.lines.title for r in todo),
                          *(head for head, _ in summaries)])  # ASCII, usually: "…" kept apart
    linked = linked_line_cells(comments)
    for r, title, authors, (_, end), summary, comment, fold in zip(
            todo, escaped[:n], line_cells([r.lines.authors for r in todo]), summaries,
            escaped[n:], linked, folded, strict=True):
        url = r.lines.url
        title = (f"**[{title}]({url})**<br><sub>{authors}</sub>" if r.paper.authors
                 else f"**[{title}]({url})**")
        if fold:  # even when it shows nothing
            comment = f"<details><summary>{summary}{end}</summary><p>{comment}</p></details>"
        r._cells = (title, comment)
        r._fixed_size = (len(title) if title.isascii() else utf8_size(title)) + (
            len(comment) if comment.isascii() else utf8_size(comment)) + _FIXED


_FIXED = len("|  | YYYY-MM-DD |  |  |\n")  # a row's frame and its date
_DETAILS = ("<details><summary>Show</summary><p>", "</p></details>")
DETAILS_BYTES = len("".join(_DETAILS))  # what a folded abstract adds to its text


def make_abstracts(rows: Sequence[Row]) -> None:
    """The abstract cells of the rows that have none yet, escaped in one batch."""
    todo = [r for r in rows if r._abstract is None]
    cut_abstracts(todo)
    heads = [r._head for r in todo]
    tails = [r._tail for r in todo]
    for r, text in zip(todo, linked_line_cells(heads, tails), strict=True):  # type: ignore[arg-type]
        r._abstract = f"{_DETAILS[0]}{text}{_DETAILS[1]}" if text else ""


def abstracts_bytes(rows: Sequence[Row]) -> int:
    """`size - fixed_size` of all the rows together, counted without making their cells."""
    cut_abstracts(rows)
    shown = [r for r in rows if r._head or r._tail]
    heads = [r._head for r in shown]
    return (linked_line_cells_bytes(heads, [r._tail for r in shown])  # type: ignore[arg-type]
            + DETAILS_BYTES * len(shown))


# --- cutting abstracts ----------------------------------------------------------------------


def cut_abstracts(rows: Sequence[Row]) -> None:
    """Each row's abstract cut at its abstract_chars (see cut_line), the rows that share a
    length in one batch."""
    todo: dict[int, list[Row]] = {}
    for r in rows:
        if r._head is None:
            todo.setdefault(r.abstract_chars, []).append(r)
    for chars, group in todo.items():
        parts = _cut_parts([r.paper.abstract if chars else "" for r in group], chars)
        for r, (head, tail) in zip(group, parts, strict=True):
            r._head, r._tail = head, tail


def cut_line(text: str, limit: int) -> str:
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


def _cut_parts(texts: list[str], limit: int) -> list[tuple[str, str]]:
    """cut_line of each text ("" for ""), as (head, "…") when cut at a word, else (text, "").
    The texts longer than their head whose heads are plain ASCII, and the short texts already
    on one line, are found so in one batch each; the rest are cut one by one."""
    parts = [("", "")] * len(texts)
    long, short, edge = _by_length(texts, limit)
    _cut_long(texts, long, limit, parts)
    shorts = [texts[i] for i in short]
    for n in not_plain(shorts):
        shorts[n] = one_line(shorts[n])
    for i, text in zip(short, shorts, strict=True):
        parts[i] = ends_apart(text)
    for i in edge:
        parts[i] = ends_apart(cut_line(texts[i], limit))
    return parts


def _by_length(texts: list[str], limit: int) -> tuple[list[int], list[int], list[int]]:
    """The indexes of the texts longer than `limit + 2`, of the others but "" up to `limit`,
    and of those between: one loop over the 10,000 abstracts instead of one per kind."""
    long: list[int] = []
    short: list[int] = []
    edge: list[int] = []
    for i, text in enumerate(texts):
        n = len(text)
        if n > limit:
            (long if n > limit + 2 else edge).append(i)
        elif n:
            short.append(i)
    return long, short, edge


def _cut_long(texts: list[str], long: list[int], limit: int,
              parts: list[tuple[str, str]]) -> None:
    """_cut_parts of the texts at `long`, longer than their head (the `limit + 2` characters
    cut_line reads)."""
    heads = [texts[i][: limit + 2] for i in long]
    slow = set(not_plain(heads, heads=True)) if limit > 1 else set(range(len(long)))
    for n, (i, head) in enumerate(zip(long, heads, strict=True)):
        if n in slow:
            parts[i] = ends_apart(cut_line(texts[i], limit))
        else:
            space = head.rfind(" ", 0, limit)  # as cut(head, limit) finds the last word
            parts[i] = (head[: space if space > 0 else limit - 1].rstrip(TRAILING), ELLIPSIS)


def ends_apart(text: str) -> tuple[str, str]:
    """The text as (head, "…") when it ends with one, else (text, "")."""
    return (text[:-1], ELLIPSIS) if text.endswith(ELLIPSIS) else (text, "")


def utc(moment: datetime) -> datetime:
    if moment.tzinfo is UTC:
        return moment
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
