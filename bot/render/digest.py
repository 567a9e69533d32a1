"""Render stage: the README digest of every curated keyword's newest papers.

Renders Markdown with Jinja2 and atomically rewrites only the marked region of the file.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import cache, partial
from itertools import accumulate
from operator import attrgetter
from pathlib import Path

import jinja2

from bot.render.cells import cell, linked_cell
from bot.render.cells import utf8_size as _size
from bot.render.files import replace_file, unwritable
from bot.render.rows import (
    Row,
    abstracts_bytes,
    cut_line,
    lines_of,
    make_abstracts,
    make_cells,
    utc,
)
from notifiers.text import one_line
from storage.records import Paper

log = logging.getLogger(__name__)

START_MARKER = "<!-- daily-papers:start -->"
END_MARKER = "<!-- daily-papers:end -->"
TITLE = "# Daily Papers"

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
    if max_bytes is None:
        make_cells(rows)
        make_abstracts(rows)
        return render(views)
    frame = _frame_size(views, render)
    if _levels(abstract_chars):  # every abstract goes when the rows are too many even without
        text = _fit_bare(views, render, abstract_chars, max_bytes, frame)
        if text is not None:
            return text
    make_cells(rows)
    bare = frame + sum(r._fixed_size - 1 for r in rows)
    size = bare + abstracts_bytes(rows)
    if size <= max_bytes:
        make_abstracts(rows)
        return render(views)
    return _fit(views, render, abstract_chars, max_bytes, size)


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
    env.filters.update(cell=cell, linked_cell=linked_cell, cut=cut_line)
    env.globals.update(note_chars=NOTE_CHARS)
    return env.get_template("digest.md.j2")


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
    newest = [_newest(section.papers, max_papers) for section in sections]
    first: dict[tuple[str, int], Paper] = {}
    for ps in newest:
        for p in ps:
            first.setdefault((p.arxiv_id, p.version), p)
    papers = list(first.values())
    lines = dict(zip([(p.arxiv_id, p.version) for p in papers], lines_of(papers), strict=True))
    views = []
    for section, ps in zip(sections, newest, strict=True):
        keyword = one_line(section.keyword)
        rows = [Row(p, lines[(p.arxiv_id, p.version)], abstract_chars) for p in ps]
        views.append(SectionView(keyword, anchors.add(keyword), section.note, rows))
    return views


def _newest(papers: Sequence[Paper], limit: int) -> list[Paper]:
    """Newest first by first-version date; one row per paper, at its latest version."""
    latest: dict[str, Paper] = {}
    for p in papers:
        if p.arxiv_id not in latest or p.version > latest[p.arxiv_id].version:
            latest[p.arxiv_id] = p
    try:  # aware datetimes compare as instants, as in UTC
        ordered = sorted(latest.values(), key=_NEWEST, reverse=True)
    except TypeError:  # naive ones among them count as UTC
        ordered = sorted(latest.values(), key=lambda p: (utc(p.published), p.arxiv_id),
                         reverse=True)
    return ordered[: max(limit, 0)]


_NEWEST = attrgetter("published", "arxiv_id")
_FIXED_SIZE = attrgetter("_fixed_size")


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
) -> str:
    """Shrink the oldest rows until the rendered text of `size` bytes fits `budget` bytes, or
    nothing is left."""
    shrink = _Shrinker(views, abstract_chars)  # works on copies: the caller's views stay
    # whole (the HTML page shows them all)
    shrink.leave_out_rows(shrink.shorten_abstracts(size - budget))
    return _fitted(shrink, render, budget, f"{size} bytes")


def _fit_bare(views: list[SectionView], render: Callable[[list[SectionView]], str],
              abstract_chars: int, budget: int, frame: int) -> str | None:
    """`_fit` when even the rows without their abstracts are over the budget: every abstract
    removed and the oldest rows left out, the rows measured from the newest, only as far as
    they fit (the cells of the rest, 8,300 of 10,000 rows in 500 kB, are never made). None
    when they all fit without abstracts (then every row's cells are made)."""
    shrink = _Shrinker(views, abstract_chars)
    shrink.remove_abstracts()
    if not shrink.leave_out_measured(budget - frame + sum(len(v.rows) for v in views)):
        return None
    shrink.count_removed()
    return _fitted(shrink, render, budget, "even without abstracts, it")


def _fitted(shrink: _Shrinker, render: Callable[[list[SectionView]], str], budget: int,
            size: str) -> str:
    """The shrunk views rendered, and still shrunk while over the budget (when the estimate
    fell short); one WARNING says what was done."""
    text = render(shrink.views)
    while _size(text) > budget and shrink.leave_out_rows(1) is not None:
        text = render(shrink.views)
    log.warning(
        "digest: %s is over the budget of %d bytes, so it shortened the abstracts of the %d "
        "oldest papers, removed %d abstracts and left out %d oldest rows; now %d bytes",
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

    def shorten_abstracts(self, excess: int) -> int:
        """Oldest rows first, step abstracts down (to a few sentences, then none), on copies
        of the views, until `excess` bytes are gone.

        Returns the bytes still in excess.
        """
        self.views = [SectionView(v.keyword, v.anchor, v.note, [r.copy() for r in v.rows],
                                  v.hidden) for v in self.originals]
        rows = [r for v in self.views for r in v.rows if r.paper.abstract]
        oldest_first = sorted(rows, key=lambda r: (utc(r.paper.published), r.paper.arxiv_id))
        for level in _levels(self.abstract_chars):
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

    def remove_abstracts(self) -> None:
        """Every abstract removed, as the steps would end when even that is not enough (each
        row's steps save at most its whole abstract): the few-sentence step is not measured."""
        self.views = [SectionView(v.keyword, v.anchor, v.note, list(v.rows), v.hidden,
                                  abstracts=False) for v in self.originals]

    def count_removed(self) -> None:
        """Count what `remove_abstracts` did, for the warning."""
        with_abstract = sum(1 for v in self.originals for r in v.rows if r.paper.abstract)
        self.shortened += with_abstract * (len(_levels(self.abstract_chars)) - 1)
        self.removed += with_abstract

    def leave_out_measured(self, room: int) -> bool:
        """Leave out the rows `leave_out_rows(excess)` would for the rows' `excess` over the
        budget, measuring only the rows from the newest until they no longer fit in `room` (the
        budget less the frame, for rows without abstracts). False, leaving nothing out, when
        they all fit.

        After its first k rows are left out, the excess is what the other rows and the notes so
        far take beyond `room`: the first k where that is no longer positive is found from the
        newest rows (notes only add, so none before the rows outgrow `room` qualifies)."""
        newest = self._newest_until(room)
        if newest is None:
            return False
        kept, at, sizes, levels = newest
        notes = self._notes()
        firsts = [notes.get(i, 0) if level == len(self.views[i].rows) else 0
                  for i, level in zip(at, levels, strict=True)]  # a view's oldest row
        noted = sum(notes.values()) - sum(firsts)
        keep = 0
        for n in reversed(range(len(at))):
            kept -= sizes[n]
            noted += firsts[n]
            if kept + noted <= room:
                keep = n
                break
        self._keep_newest(at[:keep])
        return True

    def _newest_until(self, room: int) -> tuple[int, list[int], list[int], list[int]] | None:
        """The rows newest first (the reverse of the order `leave_out_rows` leaves them out: a
        level at a time, each view's row at that level) until they take more than `room`
        bytes: their bytes, and each one's view, size and level; None when they all fit.
        Their cells are made in batches of the levels they will likely fill, a view's rows
        together (in the order they were made: several times faster than level by level)."""
        top = max((len(v.rows) for v in self.views), default=0)
        kept = level = 0
        while kept <= room and level < top:
            more = 1 if not kept else (room - kept) * level // kept + 2  # at the mean so far
            first, level = level + 1, min(level + more, top)
            rows = [r for v in self.views for r in v.rows[first - 1 : level]]
            make_cells(rows)
            kept += sum(map(_FIXED_SIZE, rows))
        if kept <= room:
            return None
        at, levels = self._newest_order(level)
        sizes = [self.views[i].rows[n - 1]._fixed_size for i, n in zip(at, levels, strict=True)]
        totals = list(accumulate(sizes, initial=0))
        over = bisect_right(totals, room)  # the first row past `room`
        return totals[over], at[:over], sizes[:over], levels[:over]

    def _newest_order(self, top: int) -> tuple[list[int], list[int]]:
        """The view and level of each row up to level `top`, newest first."""
        lengths = [len(v.rows) for v in self.views]
        at: list[int] = []
        levels: list[int] = []
        for level in range(1, top + 1):
            views = [i for i in reversed(range(len(lengths))) if lengths[i] >= level]
            at += views
            levels += [level] * len(views)
        return at, levels

    def _notes(self) -> dict[int, int]:
        """What each view's note of left-out rows adds when its first row is left out."""
        return {i: _size(self._macros.hidden_note(len(v.rows))) + 2
                for i, v in enumerate(self.views) if v.rows and not v.hidden}

    def _keep_newest(self, kept: list[int]) -> None:
        """Each view cut to its rows among the newest `kept` (their views' indexes)."""
        counts = Counter(kept)
        for i, view in enumerate(self.views):
            n = counts[i]
            view.hidden += len(view.rows) - n
            self.left_out += len(view.rows) - n
            del view.rows[n:]

    def leave_out_rows(self, excess: int) -> int | None:
        """Drop the oldest row of the longest section until `excess` bytes are gone.

        The longest section goes first so every keyword keeps its newest papers (of two as
        long, the first). Returns the bytes still in excess (an estimate), or None when there
        was no row left to drop.
        """
        level = max((len(v.rows) for v in self.views), default=0)
        if excess > 0 and not level:
            return None
        while excess > 0 and level:
            for view in self.views:
                if len(view.rows) != level:
                    continue
                row = view.rows.pop()
                excess -= row.size if view.abstracts else row.fixed_size
                view.hidden += 1
                self.left_out += 1
                if view.hidden == 1:
                    excess += _size(self._macros.hidden_note(len(view.rows) + 1)) + 2
                if excess <= 0:
                    break
            level -= 1
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
