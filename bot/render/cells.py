"""Render stage: text for one cell of the README digest's Markdown table, as GitHub renders it
(cmark-gfm with its table and autolink extensions): literal, on one line, web links whole."""

from __future__ import annotations

from collections.abc import Iterator

from linkify_it import LinkifyIt

from bot.render.batch import holding, replace_each
from notifiers.text import one_line

# Entities rather than backslashes: GitHub does not process Markdown escapes inside the raw
# HTML of <details>, but it decodes entities everywhere, and `&#124;` never splits a table row.
# "&" goes first so the entities themselves are not escaped again.
_CELL_ESCAPES = (
    ("&", "&amp;"),
    ("<", "&lt;"),
    (">", "&gt;"),
    ("|", "&#124;"),
    ("\\", "&#92;"),
    ("`", "&#96;"),
    ("*", "&#42;"),
    ("_", "&#95;"),
    ("[", "&#91;"),
    ("]", "&#93;"),
    ("$", "&#36;"),
    ("~", "&#126;"),  # GitHub strikes through even single tildes: "~10% … ~20%"
)
# GitHub's autolink extension links bare text at `://` and `www.`, reading the source with
# its entities, so a bare URL with `&#95;` in it gets a broken href: links are made explicit
# instead, and any other trigger (a URL cut short in a summary) is written as an entity.
_URL_TAIL = "?!.,:*_~…"  # never the end of a URL (GitHub's rule), nor the cut's ellipsis

_LINKS = LinkifyIt(options={"fuzzy_link": True, "fuzzy_email": False, "fuzzy_ip": False})
_LINKS.add("//", None).add("mailto:", None)  # GitHub links e-mail addresses right by itself


def cell(text: str) -> str:
    """One line of text that shows literally in a Markdown table cell and inside <details>."""
    return _escape(one_line(str(text)))


def line_cell(text: str) -> str:
    """`cell` of a text already on one line (made once for every rendering of a paper)."""
    return _escape(text)


# Counting what escaping adds: every escaped character is ASCII, so the UTF-8 bytes with all
# others deleted are exactly the characters that grow; most grow by the same number of bytes.
_ESCAPED = bytes(ord(char) for char, _ in _CELL_ESCAPES)
_OTHERS = bytes(b for b in range(256) if b not in _ESCAPED)
_GROWTH = 4
_ODD_GROWTH = tuple((char.encode(), len(entity) - 1 - _GROWTH)
                    for char, entity in _CELL_ESCAPES if len(entity) - 1 != _GROWTH)


def line_cell_bytes(text: str) -> int | None:
    """The UTF-8 bytes of `linked_line_cell(text)`, counted without making it; None when the
    text holds a web address or an autolink trigger (make the cell to know)."""
    if has_link_trigger(text):
        return None
    return _escaped_bytes(text)


def utf8_size(text: str) -> int:
    """UTF-8 bytes; an ASCII string (most cells) is measured without encoding it."""
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogateescape"))


def _escaped_bytes(text: str) -> int:
    """The UTF-8 bytes of `_escape(text)` for a text without autolink triggers."""
    raw = text.encode("utf-8", "surrogateescape")
    escaped = raw.translate(None, _OTHERS)
    n = len(raw) + _GROWTH * len(escaped)
    for char, odd in _ODD_GROWTH:
        n += escaped.count(char) * odd
    return n


def line_cells(texts: list[str]) -> list[str]:
    """`line_cell` of many texts at once (every title of the digest, say)."""
    escaped = replace_each(texts, _ALL_ESCAPES)
    return [_escape(t) for t in texts] if escaped is None else escaped


def linked_line_cells(texts: list[str], ends: list[str] | None = None) -> list[str]:
    """`linked_line_cell` of many texts at once, each followed by its `end` (a cut's "…",
    which needs no escaping: the heads of plain text stay ASCII, cheaper to escape); those
    with a web address are made alone."""
    linked = holding(texts, LINK_TRIGGERS)
    cells = line_cells([("" if i in linked else t) for i, t in enumerate(texts)])
    if ends:
        cells = [cell + end for cell, end in zip(cells, ends, strict=True)]
    for i in linked:
        cells[i] = linked_line_cell(texts[i] + (ends[i] if ends else ""))
    return cells


def linked_line_cells_bytes(texts: list[str], ends: list[str] | None = None) -> int:
    """The UTF-8 bytes of `linked_line_cells` of all the texts together: counted in one batch
    for those without a web address or autolink trigger, made for the others."""
    ends = ends or [""] * len(texts)
    linked = holding(texts, LINK_TRIGGERS)
    if linked:
        made = [linked_line_cell(texts[i] + ends[i]) for i in linked]
        texts = [t for i, t in enumerate(texts) if i not in linked]
        ends = [e for i, e in enumerate(ends) if i not in linked]
        return linked_line_cells_bytes(texts, ends) + utf8_size("".join(made))
    return _escaped_bytes("".join(texts)) + utf8_size("".join(ends))  # ends need no escaping


def linked_cell(text: str) -> str:
    """Like `cell`, with every web address (http, https, ftp, www.) an explicit link whose
    href is the address exactly as written."""
    return linked_line_cell(one_line(str(text)))


def linked_line_cell(text: str) -> str:
    """`linked_cell` of a text already on one line."""
    if not has_link_trigger(text):
        return _escape(text)
    out: list[str] = []
    start = 0
    for begin, end, href in web_links(text):
        out.append(f"{_escape(text[start:begin])}[{_escape(text[begin:end])}]"
                   f"(<{_destination(href)}>)")
        start = end
    out.append(_escape(text[start:]))
    return "".join(out)


def web_links(text: str) -> Iterator[tuple[int, int, str]]:
    """(start, end, href) of each web address; bare domains such as arXiv.org are no links."""
    for match in _LINKS.match(text) or ():
        raw = match.raw.rstrip(_URL_TAIL)
        if match.schema and raw:
            yield match.index, match.index + len(raw), raw
        elif raw.startswith("www."):
            yield match.index, match.index + len(raw), "http://" + raw


def _destination(href: str) -> str:
    """A link destination read back exactly: cmark decodes entities in it even after a
    backslash, so `&` is written as one; a pipe is escaped so it cannot split the row."""
    for char, written in (("\\", "\\\\"), ("&", "&amp;"), ("|", "\\|")):
        if char in href:
            href = href.replace(char, written)
    return href


def _escape(text: str) -> str:
    for char, entity in _CELL_ESCAPES:  # str.replace: many times faster than str.translate
        if char in text:
            text = text.replace(char, entity)
    if has_link_trigger(text):  # shown as written, but GitHub's autolinks do not see them
        for trigger, written in _TRIGGERS:
            text = text.replace(trigger, written)
    return text


_TRIGGERS = (("://", "&#58;//"), ("www.", "www&#46;"))
LINK_TRIGGERS = tuple(trigger for trigger, _ in _TRIGGERS)  # where a web address may start
_ALL_ESCAPES = (*_CELL_ESCAPES, *_TRIGGERS)  # as `_escape` makes them, in its order


def has_link_trigger(text: str) -> bool:
    """Whether the text may hold a web address (then web_links finds them)."""
    return "://" in text or "www." in text  # cmark-gfm matches `www.` in lower case only
