"""Render stage: keeping the README digest under [digest] max_bytes. The oldest rows' abstracts
are shortened, then removed, then the oldest rows of the longest sections left out, each step
measured rather than rendered: the digest is rendered once, and again only when the estimate
fell short."""

from __future__ import annotations

from bisect import bisect_right
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from itertools import accumulate
from operator import attrgetter

from bot.render.cells import utf8_size as _size
from bot.render.rows import SectionView, make_cells, utc

SHORT_ABSTRACT_CHARS = 150  # the first step down when the file would be too big
_FIXED_SIZE = attrgetter("_fixed_size")

Render = Callable[[list[SectionView]], str]
"""The digest's text of some views (the template, with the render's other values bound)."""
Note = Callable[[int], str]
"""The note that stands for a section's `n` left-out rows (measured at its longest: n = all of
the section's rows)."""


@dataclass(frozen=True, slots=True)
class Fitted:
    """A digest made to fit, and what was done to it (for the operator's warning)."""

    text: str
    shortened: int  # abstracts cut to a few sentences
    removed: int  # abstracts removed
    left_out: int  # oldest rows left out


@dataclass(frozen=True, slots=True)
class _Blank:
    line: str = ""


def frame_size(views: list[SectionView], render: Render) -> int:
    """The digest's UTF-8 bytes without its rows' lines (the newline after each row is the
    frame's)."""
    blank = _Blank()
    return _size(render([SectionView(v.keyword, v.anchor, v.note,
                                     [blank] * len(v.rows), v.hidden)  # type: ignore[list-item]
                         for v in views]))


def fit(views: list[SectionView], render: Render, note: Note, abstract_chars: int,
        budget: int, size: int) -> Fitted:
    """Shrink the oldest rows of a digest of `size` bytes until its text fits `budget` bytes,
    or nothing is left."""
    shrink = Shrinker(views, abstract_chars, note)  # works on copies: the caller's views
    # stay whole (the HTML page shows them all)
    shrink.leave_out_rows(shrink.shorten_abstracts(size - budget))
    return _fitted(shrink, render, budget)


def fit_bare(views: list[SectionView], render: Render, note: Note, abstract_chars: int,
             budget: int, frame: int) -> Fitted | None:
    """`fit` when even the rows without their abstracts are over the budget: every abstract
    removed and the oldest rows left out, the rows measured from the newest, only as far as
    they fit (the cells of the rest, 8,300 of 10,000 rows in 500 kB, are never made). None
    when they all fit without abstracts (then every row's cells are made)."""
    shrink = Shrinker(views, abstract_chars, note)
    shrink.remove_abstracts()
    if not shrink.leave_out_measured(budget - frame + sum(len(v.rows) for v in views)):
        return None
    shrink.count_removed()
    return _fitted(shrink, render, budget)


def _fitted(shrink: Shrinker, render: Render, budget: int) -> Fitted:
    """The shrunk views rendered, and still shrunk while over the budget (when the estimate
    fell short)."""
    text = render(shrink.views)
    while _size(text) > budget and shrink.leave_out_rows(1) is not None:
        text = render(shrink.views)
    return Fitted(text, shrink.shortened, shrink.removed, shrink.left_out)


class Shrinker:
    """Makes a digest smaller oldest rows first, keeping track of each row's bytes."""

    def __init__(self, views: list[SectionView], abstract_chars: int, note: Note) -> None:
        self.originals = views
        self.views = views
        self.abstract_chars = abstract_chars
        self.shortened = self.removed = self.left_out = 0
        self._note = note

    def shorten_abstracts(self, excess: int) -> int:
        """Oldest rows first, step abstracts down (to a few sentences, then none), on copies
        of the views, until `excess` bytes are gone.

        Returns the bytes still in excess.
        """
        self.views = [SectionView(v.keyword, v.anchor, v.note, [r.copy() for r in v.rows],
                                  v.hidden) for v in self.originals]
        rows = [r for v in self.views for r in v.rows if r.paper.abstract]
        oldest_first = sorted(rows, key=lambda r: (utc(r.paper.published), r.paper.arxiv_id))
        for level in abstract_steps(self.abstract_chars):
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
        self.shortened += with_abstract * (len(abstract_steps(self.abstract_chars)) - 1)
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
        return {i: _size(self._note(len(v.rows))) + 2
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
                    excess += _size(self._note(len(view.rows) + 1)) + 2
                if excess <= 0:
                    break
            level -= 1
        return excess


def abstract_steps(abstract_chars: int) -> list[int]:
    """The steps an abstract is shortened by, longest first (none: abstracts are kept)."""
    return [n for n in (SHORT_ABSTRACT_CHARS, 0) if n < abstract_chars]


