"""Render stage: the README digest of every curated keyword's newest papers.

Renders Markdown with Jinja2 and atomically rewrites only the marked region of the file.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import cache, partial
from operator import attrgetter
from pathlib import Path

import jinja2

from bot.render.cells import cell, linked_cell
from bot.render.cells import utf8_size as _size
from bot.render.files import replace_file, unwritable
from bot.render.fitting import Fitted, abstract_steps, fit, fit_bare, frame_size
from bot.render.rows import (
    Row,
    SectionView,
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
    frame = frame_size(views, render)
    note = _macros().hidden_note
    if abstract_steps(abstract_chars):  # every abstract goes if the rows are too many even without
        fitted = fit_bare(views, render, note, abstract_chars, max_bytes, frame)
        if fitted is not None:
            return _warned(fitted, "even without abstracts, it", max_bytes)
    make_cells(rows)
    bare = frame + sum(r._fixed_size - 1 for r in rows)
    size = bare + abstracts_bytes(rows)
    if size <= max_bytes:
        make_abstracts(rows)
        return render(views)
    return _warned(fit(views, render, note, abstract_chars, max_bytes, size), f"{size} bytes",
                   max_bytes)


def _warned(fitted: Fitted, size: str, budget: int) -> str:
    """The fitted text, after one WARNING saying what was left out to fit."""
    log.warning(
        "digest: %s is over the budget of %d bytes, so it shortened the abstracts of the %d "
        "oldest papers, removed %d abstracts and left out %d oldest rows; now %d bytes",
        size, budget, fitted.shortened, fitted.removed, fitted.left_out, _size(fitted.text),
    )
    return fitted.text


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
