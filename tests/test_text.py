"""The one word cutter and line splitter every channel and the digest share (notifiers/text.py)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from notifiers.slack import escape, escape_cut
from notifiers.text import cut, one_line, split_lines, utf16_len

WORDY = st.text(alphabet=st.sampled_from([*"ab ,.-&<\n", "é", "😀", "𝔸"]), max_size=80)


def test_cut_counts_utf16_units_when_asked() -> None:
    emoji = "😀" * 10  # 20 UTF-16 units, 10 characters
    assert cut(emoji, 10) == emoji
    assert cut(emoji, 10, utf16_len) == "😀" * 4 + "…"
    assert cut("ab 😀😀 cd", 7, utf16_len) == "ab…"  # the word that does not fit is left out


def test_cut_ends_at_a_word_and_mid_word_only_without_a_space() -> None:
    assert cut("one two three", 9) == "one two…"  # the space right after "two" ends a word
    assert cut("one two - three", 11) == "one two…"  # no dangling dash
    assert cut("unbreakable", 5) == "unbr…"
    assert cut("anything", 1) == "…"


@given(WORDY, st.integers(min_value=0, max_value=40))
def test_cut_never_exceeds_the_limit_and_keeps_a_prefix(text: str, limit: int) -> None:
    for unit in (len, utf16_len):
        short = cut(text, limit, unit)
        assert unit(short) <= limit
        if short != text:
            assert text.startswith(short.removesuffix("…"))


def test_escape_cut_counts_escaped_characters_and_never_splits_an_entity() -> None:
    assert escape_cut("a&b", 3) == "a…"  # "a&amp;" would be 6
    assert escape_cut("<<<<", 9) == "&lt;&lt;…"
    assert len(escape_cut("x & y " * 100, 50)) <= 50


@given(WORDY, st.integers(min_value=1, max_value=30))
def test_split_lines_loses_nothing_and_keeps_every_piece_within_budget(
        text: str, budget: int) -> None:
    for unit in (len, utf16_len):
        pieces = split_lines(text, budget, unit)
        assert all(unit(p) <= budget or len(p) == 1 for p in pieces)
        assert "".join("".join(p.split()) for p in pieces) == "".join(text.split())


def test_split_lines_splits_between_lines_then_between_words() -> None:
    assert split_lines("alpha\nbeta\ngamma", 11) == ["alpha\nbeta", "gamma"]
    assert split_lines("alpha beta gamma delta", 11) == ["alpha beta", "gamma delta"]
    assert split_lines("  \n\n", 10) == []


def test_one_line_collapses_whitespace_and_drops_control_characters() -> None:
    assert one_line(" a\n\tb\x00c  d ") == "a bc d"
    assert escape(one_line("x < y")) == "x &lt; y"
