"""Render stage: escaping thousands of texts at once (the digest's cells, the page's items, the
feeds' entries), one C pass over all of them per character instead of one call per text."""

from __future__ import annotations

from collections.abc import Callable, Sequence

SEPARATOR = "\x1f"  # a control character: no one-line text holds it, and XML cannot carry it


def replace_each(texts: list[str], pairs: Sequence[tuple[str, str]],
                 accept: Callable[[str], bool] | None = None) -> list[str] | None:
    """Each text with every (old, new) of `pairs` replaced, in order, as a loop of
    str.replace over each text would make it; None when a text holds SEPARATOR or the texts
    joined fail `accept` (the caller escapes each text alone). No `old` or `new` may hold
    SEPARATOR, so a replacement never reaches across two texts."""
    if not texts:
        return []
    joined = SEPARATOR.join(texts)
    if joined.count(SEPARATOR) != len(texts) - 1 or (accept and not accept(joined)):
        return None
    for old, new in pairs:
        if old in joined:
            joined = joined.replace(old, new)
    return joined.split(SEPARATOR)
