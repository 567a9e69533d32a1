"""The README digest as GitHub shows it: rendered by cmark-gfm with the table and autolink
extensions (GitHub's own renderer), web addresses in arXiv text must be whole, clickable links
and everything around them literal text in a four-cell row."""

from __future__ import annotations

import shutil
import subprocess
from datetime import UTC, date, datetime
from urllib.parse import unquote

import lxml.html

from bot.render.digest import DigestSection, render_digest
from storage.records import Paper

UPDATED = date(2025, 11, 13)
# Each address as arXiv text writes it (between the spaces, quotes or brackets shown) and the
# href GitHub must give it.
LINKS = {
    "https://github.com/a_b/c_d": "https://github.com/a_b/c_d",
    "https://x.org/p_(q)_r": "https://x.org/p_(q)_r",
    "www.site.org/x_y": "http://www.site.org/x_y",
    "https://x.org/?a=1&b=2#frag_1": "https://x.org/?a=1&b=2#frag_1",
    "ftp://files.org/a*b*c": "ftp://files.org/a*b*c",
    "https://x.org/a|b": "https://x.org/a|b",
    "https://angle.org/x_y": "https://angle.org/x_y",
    "https://q.org/a_b": "https://q.org/a_b",
    "https://lab.org/~u/my_project/": "https://lab.org/~u/my_project/",
    "http://x.org/&amp;_\\y": "http://x.org/&amp;_\\y",
}
ABSTRACT = (
    "Code: https://github.com/a_b/c_d. See (https://x.org/p_(q)_r), www.site.org/x_y! "
    "*stars* _under_ ~strike~ `code` $x_i$ | pipes | <tags> & https://x.org/?a=1&b=2#frag_1, "
    "and ftp://files.org/a*b*c. Also https://x.org/a|b or <https://angle.org/x_y> or "
    "\"https://q.org/a_b\" or [https://lab.org/~u/my_project/] or http://x.org/&amp;_\\y end"
)
COMMENT = "Project page: https://lab.org/~u/my_project/ | code at https://github.com/z/w_v"
LONG_URL = "https://github.com/some_organisation/a_rather_long_repository_name"


def paper(n: int, abstract: str, comment: str = "") -> Paper:
    when = datetime(2025, 1, 10 - n, tzinfo=UTC)
    return Paper(arxiv_id=f"2501.0000{n}", version=1, title=f"Paper {n} with https://t.org/a_b",
                 abstract=abstract, authors=("Ada Lovelace",), published=when, updated=when,
                 comment=comment)


def on_github(markdown: str) -> lxml.html.HtmlElement:
    cmark = shutil.which("cmark-gfm")
    assert cmark, "cmark-gfm is missing: apt-get install cmark-gfm (.ci/run installs it)"
    page = subprocess.run([cmark, "--unsafe", "-e", "table", "-e", "autolink"],
                          input=markdown, capture_output=True, text=True, check=True).stdout
    return lxml.html.fromstring(f"<html><body>{page}</body></html>")


def rows(markdown: str) -> list[list[lxml.html.HtmlElement]]:
    page = on_github(markdown)
    found = [row.findall("td") for row in page.iter("tr") if row.find("td") is not None]
    assert found and all(len(cells) == 4 for cells in found), [len(c) for c in found]
    return found


def hrefs(cell: lxml.html.HtmlElement) -> list[str]:
    return [unquote(a.get("href")) for a in cell.iter("a")]


def shown(cell: lxml.html.HtmlElement) -> str:
    """The folded text of a <details> cell, or the cell's text."""
    body = cell.find(".//p")
    return (body if body is not None else cell).text_content()


def test_web_addresses_are_whole_links_and_the_rest_stays_text() -> None:
    markdown = render_digest([DigestSection("K", [paper(1, ABSTRACT, COMMENT)])],
                             updated=UPDATED)
    (row,) = rows(markdown)
    assert hrefs(row[0]) == ["https://arxiv.org/abs/2501.00001"]  # no link inside the title
    assert hrefs(row[2]) == list(LINKS.values()), hrefs(row[2])
    assert hrefs(row[3]) == ["https://lab.org/~u/my_project/", "https://github.com/z/w_v"]
    assert shown(row[2]) == ABSTRACT
    assert shown(row[3]) == COMMENT
    assert [a.text_content() for a in row[2].iter("a")] == list(LINKS)
    for kind in ("em", "strong", "del", "code"):
        assert row[2].find(f".//{kind}") is None and row[3].find(f".//{kind}") is None


def test_a_shortened_text_links_only_whole_addresses() -> None:
    """A cut abstract ending in an address keeps it whole, without the ellipsis; a summary
    that cuts an address short shows it as text, not as a broken link."""
    abstract = "See https://github.com/z/w_v and then a few more words."
    comment = f"{LONG_URL} holds the code, the data and the trained weights."
    chars = len("See https://github.com/z/w_v") + 2
    markdown = render_digest([DigestSection("K", [paper(1, abstract, comment)])],
                             updated=UPDATED, abstract_chars=chars)
    (row,) = rows(markdown)
    assert shown(row[2]) == "See https://github.com/z/w_v…"
    assert hrefs(row[2]) == ["https://github.com/z/w_v"]
    summary = row[3].find(".//summary")
    assert summary is not None and summary.text_content().endswith("…")
    assert hrefs(summary) == []
    assert hrefs(row[3]) == [LONG_URL]
