"""Tests of the render stage: the README digest's look, its escaping, and how it is written.

`UPDATE_GOLDEN=1 pytest` rewrites tests/golden/ after an intended change of the digest.
"""

from __future__ import annotations

import html
import json
import logging
import os
import re
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import pytest

from bot.render.digest import (
    END_MARKER,
    START_MARKER,
    DigestRefused,
    DigestSection,
    cell,
    render_digest,
    update_digest,
    write_digest,
)
from notifiers.text import cut
from storage.records import Paper

FIXTURES = Path(__file__).parent / "fixtures"
GOLDEN = Path(__file__).parent / "golden"
UPDATED = date(2025, 11, 13)

GIVEN = ("Ada", "Alan", "Grace", "Edsger", "Barbara", "Donald", "Frances", "John")
FAMILY = ("Lovelace", "Turing", "Hopper", "Dijkstra", "Liskov", "Knuth", "Allen", "Backus")

HOSTILE_TITLE = "Pipes | in [Titles] and `code` *stars* _under_ <b>bold</b> & $x_i$ \\ back"
HOSTILE_ABSTRACT = (
    "We learn triples <Subject, Predicate> & <script>alert(1)</script> where $x_i^* = "
    "\\sum_j w_{ij}$, ~10% to ~20% faster; see [link](http://example.org) | done.\n"
    "A second line\x07 with a bell."
)
LONG_COMMENT = (
    "Accepted at the Conference on Computer Vision and Pattern Recognition (CVPR 2026) | "
    "main track; 14 pages, 9 figures, 5 tables; code and data at https://example.org/a_b"
)


def paper(
    arxiv_id: str = "2501.00001",
    *,
    title: str = "A title",
    abstract: str = "An abstract.",
    authors: tuple[str, ...] = ("Ada Lovelace",),
    published: datetime = datetime(2025, 1, 1, 12, tzinfo=UTC),
    updated: datetime | None = None,
    version: int = 1,
    comment: str = "",
) -> Paper:
    return Paper(
        arxiv_id=arxiv_id, version=version, title=title, abstract=abstract, authors=authors,
        published=published, updated=updated or published, comment=comment,
    )


def seed_sections() -> list[DigestSection]:
    """The reference digest's 79 papers with made-up authors and first-version dates."""
    by_keyword: dict[str, list[Paper]] = {}
    for i, row in enumerate(json.loads((FIXTURES / "seed-papers.json").read_text())):
        updated = datetime.fromisoformat(row["updated"]) + timedelta(hours=i % 24)
        authors = tuple(
            f"{GIVEN[(i + j) % len(GIVEN)]} {FAMILY[(i * 3 + j) % len(FAMILY)]}"
            for j in range(1 + i % 6)
        )
        by_keyword.setdefault(row["keyword"], []).append(
            Paper(
                arxiv_id=row["id"], version=row["version"], title=row["title"],
                abstract=row["summary"], authors=authors,
                published=updated - timedelta(days=45 * (row["version"] - 1)),
                updated=updated, comment=row["comment"],
            )
        )
    return [DigestSection(keyword, papers) for keyword, papers in by_keyword.items()]


def hostile_papers() -> list[Paper]:
    day = datetime(2025, 10, 1, 9, tzinfo=UTC)
    return [
        paper("2510.00001", title=HOSTILE_TITLE, published=day, comment="8 pages | *draft*"),
        paper("2510.00002", title="Triples", abstract=HOSTILE_ABSTRACT,
              published=day - timedelta(days=1), comment=LONG_COMMENT),
        paper("2510.00003", title="A Very Large Collaboration",
              authors=tuple(f"Physicist {n:04d}" for n in range(3000)),
              published=day - timedelta(days=2), comment=""),
        paper("hep-ex/0601001", title="An Old-Style Identifier", version=4,
              published=datetime(2006, 1, 1, tzinfo=UTC), updated=day),
    ]


def all_sections() -> list[DigestSection]:
    rejected = DigestSection(
        'au:"Smith, J" AND (', [paper("2509.00001", title="Kept From Before")],
        note='Malformed query: unbalanced "(" in <au:"Smith, J" AND (> | error 400',
    )
    hostile = DigestSection('ti:"scene graph" AND cat:cs.CV', hostile_papers())
    return [*seed_sections(), hostile, rejected, DigestSection("Nothing Yet", [])]


def assert_golden(name: str, text: str) -> None:
    golden = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN") == "1":
        golden.write_bytes(text.encode())
    assert text.encode() == golden.read_bytes(), f"{golden} differs; UPDATE_GOLDEN=1 if intended"


def table_rows(text: str) -> list[list[str]]:
    """Each table row's four cells: a row that splits into anything else is broken."""
    rows = []
    for line in text.splitlines():
        if line.startswith("| **["):
            cells = [c.strip() for c in line.strip().removeprefix("|").removesuffix("|").split("|")]
            assert len(cells) == 4, line
            rows.append(cells)
    return rows


def title_cell(markup: str) -> tuple[str, str, str]:
    """(title as shown, link, authors as shown)."""
    m = re.fullmatch(r"\*\*\[(.*)\]\((\S*)\)\*\*(?:<br><sub>(.*)</sub>)?", markup)
    assert m, markup
    return html.unescape(m[1]), m[2], html.unescape(m[3] or "")


def folded(markup: str) -> tuple[str, str]:
    """(summary, body) of a <details> cell, as shown: a link shows its text."""
    m = re.fullmatch(r"<details><summary>(.*)</summary><p>(.*)</p></details>", markup)
    assert m, markup
    return html.unescape(shown(m[1])), html.unescape(shown(m[2]))


def shown(markup: str) -> str:
    """Markdown links `[text](<href>)` as the text they show."""
    return re.sub(r"\[([^\[\]]*)\]\(<[^<>]*>\)", r"\1", markup)


def section(text: str, keyword: str) -> str:
    return text.split(f"\n## {keyword}\n", 1)[1].split("\n## ", 1)[0]


# --- the look -------------------------------------------------------------------------------


def test_golden_digest(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    assert update_digest(readme, all_sections(), updated=UPDATED)
    assert_golden("digest.md", readme.read_text())


def test_intro_says_when_arxiv_announces_and_when_the_digest_was_updated() -> None:
    at = datetime(2025, 11, 13, 22, 30, tzinfo=timezone(timedelta(hours=-5)))  # 03:30 UTC on 14th
    text = render_digest([], updated=at)
    assert "Sunday to Thursday at 20:00 US Eastern" in text
    assert "Last update: 2025-11-14 (UTC)" in text


def test_rows_are_newest_first_by_first_version_dated_by_it_and_linked_versionless() -> None:
    old_but_revised = paper("2401.00001", version=5, published=datetime(2024, 1, 2, tzinfo=UTC),
                            updated=datetime(2025, 6, 1, tzinfo=UTC), title="Old revised")
    papers = [
        old_but_revised,
        paper("2503.00001", published=datetime(2025, 3, 1, 23, 59, tzinfo=UTC), title="March"),
        paper("2505.00001", published=datetime(2025, 5, 1, tzinfo=UTC), title="May"),
    ]
    rows = table_rows(render_digest([DigestSection("K", papers)], updated=UPDATED))
    assert [(title_cell(r[0])[0], r[1]) for r in rows] == [
        ("May", "2025-05-01"), ("March", "2025-03-01"), ("Old revised", "2024-01-02"),
    ]
    assert title_cell(rows[2][0])[1] == "https://arxiv.org/abs/2401.00001"


def test_keeps_only_the_newest_max_papers() -> None:
    start = datetime(2025, 1, 1, tzinfo=UTC)
    papers = [paper(f"2501.{n:05d}", title=f"P{n}", published=start + timedelta(days=n))
              for n in range(30)]
    rows = table_rows(render_digest([DigestSection("K", papers[::-1])], updated=UPDATED,
                                    max_papers=10))
    assert [title_cell(r[0])[0] for r in rows] == [f"P{n}" for n in range(29, 19, -1)]


def test_abstract_is_cut_at_a_word_boundary() -> None:
    abstract = " ".join(f"word{n:03d}" for n in range(200))  # 1,599 characters
    rows = table_rows(render_digest([DigestSection("K", [paper(abstract=abstract)])],
                                    updated=UPDATED, abstract_chars=100))
    _, shown = folded(rows[0][2])
    assert len(shown) <= 100
    assert shown.endswith("…")
    assert abstract.startswith(shown[:-1] + " ")


def test_cut() -> None:
    assert cut("short enough", 12) == "short enough"
    assert cut("one two three", 12) == "one two…"
    assert cut("one two, three", 10) == "one two…"  # no dangling comma
    assert cut("Published at ICML 2024. Code soon", 26) == "Published at ICML 2024…"
    assert cut("unbreakable-token-without-spaces", 10) == "unbreakab…"
    assert cut("anything", 0) == ""


def test_hostile_text_shows_literally_and_keeps_the_table_intact() -> None:
    text = render_digest([DigestSection("K", hostile_papers())], updated=UPDATED)
    rows = table_rows(text)
    assert len(rows) == 4
    title, link, _ = title_cell(rows[0][0])
    assert (title, link) == (HOSTILE_TITLE, "https://arxiv.org/abs/2510.00001")
    assert title_cell(rows[3][0])[1] == "https://arxiv.org/abs/hep-ex/0601001"
    assert rows[0][3] and html.unescape(rows[0][3]) == "8 pages | *draft*"
    _, abstract = folded(rows[1][2])
    assert abstract == " ".join(HOSTILE_ABSTRACT.replace("\x07", "").split())
    for row in rows:
        markup = re.sub(r"</?(details|summary|p|sub)>|<br>", "", "".join(row))
        assert not set("<>$*_[]`\\~") & set(re.sub(r"\[.*?\]\(\S*?\)|\*\*", "", markup))


def test_cell_escapes_with_entities() -> None:
    assert cell("a|b <c> & $d$ *e* _f_ [g] `h` \\i ~j\nk") == (
        "a&#124;b &lt;c&gt; &amp; &#36;d&#36; &#42;e&#42; &#95;f&#95; &#91;g&#93; &#96;h&#96; "
        "&#92;i &#126;j k"
    )


def test_short_author_list_under_the_title() -> None:
    rows = table_rows(render_digest([DigestSection("K", hostile_papers())], updated=UPDATED))
    assert title_cell(rows[2][0])[2] == (
        "Physicist 0000, Physicist 0001, Physicist 0002 et al. (3000 authors)"
    )
    assert len(rows[2][0]) < 300


def test_long_comments_fold_behind_a_summary_cut_at_a_word_boundary() -> None:
    papers = [
        paper("2501.00003", comment="", published=datetime(2025, 1, 3, tzinfo=UTC)),
        paper("2501.00002", comment="12 pages, 3 figures", published=datetime(2025, 1, 2,
                                                                              tzinfo=UTC)),
        paper("2501.00001", comment=LONG_COMMENT, published=datetime(2025, 1, 1, tzinfo=UTC)),
    ]
    rows = table_rows(render_digest([DigestSection("K", papers)], updated=UPDATED))
    assert [r[3] for r in rows[:2]] == ["", "12 pages, 3 figures"]
    summary, body = folded(rows[2][3])
    assert body == LONG_COMMENT
    assert summary == "Accepted at the Conference on…"


def test_contents_link_each_section_by_its_github_anchor() -> None:
    sections = [DigestSection(k, []) for k in (
        "Vision-Language Model", "vision language model", 'ti:"scene graph" AND cat:cs.CV',
    )]
    text = render_digest(sections, updated=UPDATED)
    assert "- [Vision-Language Model](#vision-language-model)\n" in text
    assert "- [vision language model](#vision-language-model-1)\n" in text
    assert '- [ti:"scene graph" AND cat:cs.CV](#tiscene-graph-and-catcscv)\n' in text
    assert "\n## vision language model\n" in text


def test_rejected_keyword_keeps_its_rows_under_a_note_quoting_arxiv() -> None:
    text = render_digest(all_sections(), updated=UPDATED)
    body = section(text, 'au:"Smith, J" AND (')
    note = [line for line in body.splitlines() if line.startswith(">")]
    assert len(note) == 1
    assert html.unescape(note[0]).endswith(
        'arXiv said: “Malformed query: unbalanced "(" in <au:"Smith, J" AND (> | error 400”'
    )
    assert "&lt;au:" in note[0] and "&#124;" in note[0]
    assert [title_cell(r[0])[0] for r in table_rows(body)] == ["Kept From Before"]
    assert "No papers yet." in section(text, "Nothing Yet")


# --- keeping under max_bytes ----------------------------------------------------------------


def many_papers(n: int) -> list[Paper]:
    start = datetime(2024, 1, 1, tzinfo=UTC)
    abstract = " ".join(["a sentence of several plain words."] * 30)
    return [paper(f"2401.{i:05d}", title=f"Paper {i}", abstract=abstract,
                  published=start + timedelta(days=i)) for i in range(n)]


def test_max_bytes_shortens_the_oldest_abstracts_first(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    readme = tmp_path / "README.md"
    sections = [DigestSection("K", many_papers(100))]
    full = len(render_digest(sections, updated=UPDATED).encode())
    with caplog.at_level(logging.WARNING, logger="bot.render.digest"):
        update_digest(readme, sections, updated=UPDATED, max_bytes=full - 20_000)
    assert readme.stat().st_size < full - 20_000
    shown = [len(folded(r[2])[1]) if r[2] else 0 for r in table_rows(readme.read_text())]
    assert len(shown) == 100
    assert shown == sorted(shown, reverse=True)  # newest rows keep the most
    assert shown[0] > 500 and shown[-1] < 200
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    assert "oldest" in caplog.records[0].getMessage()


def test_max_bytes_leaves_out_the_oldest_rows_when_abstracts_are_not_enough(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"# My project\n\n{'Some text. ' * 500}\n\n{START_MARKER}\n{END_MARKER}\n")
    sections = [DigestSection("Big", many_papers(100)), DigestSection("Small", many_papers(5))]
    with caplog.at_level(logging.WARNING, logger="bot.render.digest"):
        update_digest(readme, sections, updated=UPDATED, max_bytes=12_000)
    text = readme.read_text()
    assert len(text.encode()) < 12_000
    assert all(r[2] == "" for r in table_rows(text))
    assert len(table_rows(section(text, "Small"))) == 5  # the longest section gives rows first
    big = table_rows(section(text, "Big"))
    assert title_cell(big[0][0])[0] == "Paper 99"
    assert f"_{100 - len(big)} older papers are not shown" in section(text, "Big")
    assert len(caplog.records) == 1


_HOSTILE = ("| \\ ` * _ [ ] $ ~ & < >", "&amp; &#124;", "é ß 中文 😀 𝔘", "\x07bell\x7f",
            "see https://github.com/a/b_c. or www.example.org", "a://b www.", "…", "")


def fitting_papers(section: int, n: int) -> list[Paper]:
    """Rows whose cells escape, fold and link in every way, oldest first."""
    start = datetime(2024, 1, 1, tzinfo=UTC)
    comments = ("", "x" * 39, "y" * 40, "z" * 41, "a  b " * 9, "www.a.org " * 5, "12 pages")
    return [paper(f"24{section:02d}.{i:05d}", title=_HOSTILE[i % len(_HOSTILE)] * (i % 3),
                  abstract=f"Abstract {i} {_HOSTILE[i % 5]}" * 20,
                  authors=tuple(f"{_HOSTILE[i % 4]} N{j}" for j in range(i % 6)),
                  comment=comments[i % len(comments)] + _HOSTILE[(i + section) % 8],
                  published=start + timedelta(days=i)) for i in range(n)]


def test_fitted_digest_leaves_out_exactly_the_rows_measuring_them_all_would() -> None:
    """Fitting without abstracts measures only the newest rows; with `abstract_chars = 0` the
    same digest is fitted by measuring every row. At every budget where a row comes or goes
    (found from each fitted text's own size) both leave out the same rows, byte for byte."""
    sections = [DigestSection(f"K{k}", fitting_papers(k, n))
                for k, n in enumerate((14, 9, 14, 1, 0, 6))]
    bare = len(render_digest(sections, updated=UPDATED, abstract_chars=0).encode())
    assert render_digest(sections, updated=UPDATED, max_bytes=bare) == render_digest(
        sections, updated=UPDATED, max_bytes=bare, abstract_chars=0)  # all rows, no abstracts
    budget, budgets = bare - 1, 0
    while True:
        text = render_digest(sections, updated=UPDATED, max_bytes=budget)
        size = len(text.encode())
        assert size <= budget
        for edge in (budget, size):  # the last budget with these rows, the first without
            assert render_digest(sections, updated=UPDATED, max_bytes=edge) == render_digest(
                sections, updated=UPDATED, max_bytes=edge, abstract_chars=0)
        budgets += 1
        if not table_rows(text):
            break
        budget = size - 1
    assert budgets > 40  # a row at a time


def test_surrounding_text_over_max_bytes_is_refused(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    original = f"{'x' * 2_000}\n{START_MARKER}\n{END_MARKER}\n".encode()
    readme.write_bytes(original)
    with pytest.raises(DigestRefused, match="max_bytes"):
        update_digest(readme, [DigestSection("K", many_papers(3))], updated=UPDATED,
                      max_bytes=1_000)
    assert readme.read_bytes() == original
    with pytest.raises(DigestRefused, match="max_bytes"):
        write_digest(readme, "y" * 5_000, max_bytes=4_000)
    assert readme.read_bytes() == original


# --- the file -------------------------------------------------------------------------------


def test_missing_file_is_created_with_a_title_and_markers(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    assert write_digest(readme, "body\n")
    assert readme.read_text() == f"# Daily Papers\n\n{START_MARKER}\nbody\n{END_MARKER}\n"
    assert os.listdir(tmp_path) == ["README.md"]


def test_only_the_text_between_the_markers_is_replaced(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    before = f"# Mine\r\n\r\nMention `{START_MARKER}` in prose.\r\n  {START_MARKER}  \r\n".encode()
    after = f"{END_MARKER}\r\n\r\n## Licence ☺ \xff\n".encode("utf-8", "surrogateescape")
    after = after.replace("\xff".encode(), b"\xff")  # not UTF-8: kept byte for byte anyway
    readme.write_bytes(before + b"old digest\n" + after)
    readme.chmod(0o640)
    assert write_digest(readme, "new digest\n")
    assert readme.read_bytes() == before + b"new digest\n" + after
    assert readme.stat().st_mode & 0o777 == 0o640
    assert os.listdir(tmp_path) == ["README.md"]


def test_unchanged_content_is_not_written(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    assert update_digest(readme, all_sections(), updated=UPDATED)
    stat = readme.stat()
    os.utime(readme, ns=(stat.st_atime_ns, stat.st_mtime_ns - 10**9))  # an older mtime
    stat = readme.stat()
    assert not update_digest(readme, all_sections(), updated=UPDATED)
    assert (readme.stat().st_mtime_ns, readme.stat().st_ino) == (stat.st_mtime_ns, stat.st_ino)
    assert update_digest(readme, all_sections(), updated=UPDATED + timedelta(days=1))
    assert readme.stat().st_ino != stat.st_ino  # replaced through a new file, atomically
    assert os.listdir(tmp_path) == ["README.md"]


def test_a_whole_earlier_digest_gets_markers(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_bytes((FIXTURES / "seed-digest-README.md").read_bytes())
    assert update_digest(readme, seed_sections(), updated=UPDATED)
    text = readme.read_text()
    assert text.startswith(f"# Daily Papers\n\n{START_MARKER}\nThe project automatically")
    assert text.endswith(f"{END_MARKER}\n")
    assert text.count("# Daily Papers") == 1
    assert "arxiv.org/pdf/" not in text and "'Watch' button" not in text
    assert len(table_rows(text)) == 79
    assert write_digest(readme, "next\n")  # markers now: only the inside changes
    assert readme.read_text() == f"# Daily Papers\n\n{START_MARKER}\nnext\n{END_MARKER}\n"


@pytest.mark.parametrize(
    "content",
    [
        "# My project\n\nHand-written documentation.\n",
        "# Daily Papers\n\nLast update: 2025-01-01 but no table\n",
        f"# Project\n\n{START_MARKER}\nno end marker\n",
        f"# Project\n\n{END_MARKER}\n{START_MARKER}\n",
        f"{START_MARKER}\n{END_MARKER}\n{START_MARKER}\n{END_MARKER}\n",
    ],
)
def test_a_foreign_file_is_refused_and_left_unchanged(tmp_path: Path, content: str) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(content)
    mtime = readme.stat().st_mtime_ns
    with pytest.raises(DigestRefused) as refused:
        update_digest(readme, seed_sections(), updated=UPDATED)
    assert START_MARKER in str(refused.value) and END_MARKER in str(refused.value)
    assert readme.read_text() == content
    assert readme.stat().st_mtime_ns == mtime
    assert os.listdir(tmp_path) == ["README.md"]


def test_a_symlinked_readme_stays_a_symlink(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    target = tmp_path / "docs" / "README.md"
    link = tmp_path / "README.md"
    link.symlink_to(target)
    assert write_digest(link, "body\n")
    assert link.is_symlink()
    assert START_MARKER in target.read_text()
