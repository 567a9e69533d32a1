"""Shortening and splitting text for every channel and the digest: one word cutter, one line
splitter, each counting in the channel's own unit (characters, or Telegram's UTF-16 units)."""

from __future__ import annotations

import re
from collections.abc import Callable

Unit = Callable[[str], int]
"""How a channel measures text: `len` for characters, `utf16_len` for Telegram."""

ELLIPSIS = "…"  # one unit in both measures
TRAILING = " ,;:.-"  # never left dangling before the ellipsis
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def utf16_len(text: str) -> int:
    """Telegram measures text in UTF-16 code units: an emoji outside the BMP counts twice."""
    return len(text.encode("utf-16-le")) // 2


def one_line(text: str) -> str:
    """Whitespace runs collapsed to one space, control characters dropped."""
    if text.isprintable() and "  " not in text and text[:1] != " " and text[-1:] != " ":
        return text  # the usual case, and far cheaper to check than to split every word
    return _CONTROL.sub("", " ".join(text.split()))


def cut(text: str, limit: int, unit: Unit = len) -> str:
    """At most `limit` units of `text`; when shortened, cut after the last whole word that fits
    (mid-word only when no space is left to cut at) and ended with "…"."""
    if unit(text) <= limit:
        return text
    if limit <= 1:
        return ELLIPSIS[:limit]
    head = text[:_word_end(text, _fitting(text, limit - 1, unit))]
    return head.rstrip(TRAILING) + ELLIPSIS


def split_lines(text: str, budget: int, unit: Unit = len) -> list[str]:
    """`text` in pieces of at most `budget` units, split between lines; a line longer than
    `budget` is split between words. Nothing is lost; blank text gives no pieces."""
    pieces: list[str] = []
    lines: list[str] = []
    size = 0
    for line in _short_lines(text.rstrip().split("\n"), budget, unit):
        units = unit(line) + 1  # with the newline that joins it to the next
        if lines and size + units > budget + 1:
            pieces.append("\n".join(lines))
            lines, size = [], 0
        lines.append(line)
        size += units
    if lines and any(line.strip() for line in lines):
        pieces.append("\n".join(lines))
    return pieces


def _short_lines(lines: list[str], budget: int, unit: Unit) -> list[str]:
    """Each line longer than `budget` replaced by its pieces, split between words."""
    out: list[str] = []
    for line in lines:
        while unit(line) > budget:
            end = _word_end(line, max(1, _fitting(line, budget, unit)))
            out.append(line[:end].rstrip())
            line = line[end:].lstrip(" ")
        out.append(line)
    return out


def _word_end(text: str, n: int) -> int:
    """Where a head of at most `n` code points ends: at the last space, else mid-word at n."""
    space = text.rfind(" ", 0, n + 1)  # a space right after the n code points ends a word too
    return space if space > 0 else n


def _fitting(text: str, room: int, unit: Unit) -> int:
    """How many code points of `text` fit in `room` units (a code point is at least one)."""
    low, high = 0, max(0, min(room, len(text)))
    if unit(text[:high]) <= room:
        return high  # always so when counting characters
    while low < high:  # binary search for the longest prefix that fits
        middle = (low + high + 1) // 2
        if unit(text[:middle]) <= room:
            low = middle
        else:
            high = middle - 1
    return low
