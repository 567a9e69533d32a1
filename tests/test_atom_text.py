"""The Atom parser's two readings of one layout: from the text, and from the tree, alike."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pytest

from bot.fetch.atom import parse_feed
from bot.fetch.atom_text import read_text
from bot.fetch.errors import ArxivBadAnswer
from bot.fetch.safexml import screen
from storage.records import Feed
from tests.fakes.arxiv_server import render_feed, seed_corpus

FIXTURES = Path(__file__).parent / "fixtures"
OLD = (FIXTURES / "old-format-multi-entry-cat-and-query.xml").read_bytes()
NEW = (FIXTURES / "new-format-multi-entry-doi-journalref.xml").read_bytes()


def _server_page(fmt: str) -> bytes:
    """A page of the local arXiv server (what the end-to-end tests and bench_parse read),
    with every optional field and the references XML predefines in values."""
    papers = [dataclasses.replace(p, comment="Tables & <figures> \"quoted\"",
                                  journal_ref="J. Phys. 1 (2020)", doi="10.1/x.y")
              if i % 3 == 0 else p for i, p in enumerate(seed_corpus())]
    return render_feed(papers, total=79, start=0, items_per_page=100, fmt=fmt)


def _by_tree(data: bytes, monkeypatch: pytest.MonkeyPatch) -> Feed:
    with monkeypatch.context() as patched:
        patched.setattr("bot.fetch.atom.read_text", lambda data: None)
        return parse_feed(data)


@pytest.mark.parametrize("page", [NEW, OLD, _server_page("new"), _server_page("old")],
                         ids=["arxiv-new", "arxiv-old", "local-server-new", "local-server-old"])
def test_the_text_reading_gives_what_the_tree_gives(page: bytes,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    # the shortcut is taken for these pages, and the tree (forced) reads them alike
    assert read_text(screen(page, "Atom")) is not None
    from_text = parse_feed(page)
    from_tree = _by_tree(page, monkeypatch)
    assert len(from_tree.entries) >= 2
    assert from_text == from_tree


@pytest.mark.parametrize("old, new, from_text", [
    # arXiv's own layout is read from its text; anything else from the page's tree
    (b"<title>Testing Deep", b"<title><!-- c -->Testing Deep", False),
    (b"<title>Testing Deep", b"<title><![CDATA[Testing]]> Deep", False),
    (b"<title>Testing Deep", b"<title>&#84;esting Deep", False),
    (b"<title>Testing Deep", b"<title>Testing &amp; Deep", True),
    (b"\n    <author>\n      <name>Arnaud Gotlieb</name>",
     b"\n    <author>\n      <name>Arnaud Gotlieb</name>"
     b"\n      <arxiv:affiliation>Simula</arxiv:affiliation>", False),
    (b"<entry>\n    <id>http://arxiv.org/abs/2202.12139v1</id>",
     b"<entry xml:lang='en'>\n    <id>http://arxiv.org/abs/2202.12139v1</id>", False),
    (b"\n    <id>http://arxiv.org/abs/2202.12139v1</id>",
     b"\r\n    <id>http://arxiv.org/abs/2202.12139v1</id>", False),
    (b"evolves.", b"evolves  (see\nhttps://arxiv.org/schemas/atom).", False),
    (b"evolves.", b"evolves  (see\nhttp://arxiv.org/schemas/atom).", True),
    (b"<?xml version='1.0' encoding='UTF-8'?>", b'<?xml version="1.0" encoding="UTF-8"?>',
     True),
], ids=["comment", "cdata", "reference", "predefined-entity", "affiliation", "attribute",
        "crlf", "https-namespace-in-text", "spaces-and-line-break", "double-quotes"])
def test_the_same_page_written_differently_gives_the_same_papers(
        old: bytes, new: bytes, from_text: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    data = NEW.replace(old, new, 1)
    assert data != NEW
    assert (read_text(screen(data, "Atom")) is not None) is from_text
    assert parse_feed(data) == _by_tree(data, monkeypatch)
    assert len(parse_feed(data).entries) == 10


def test_an_entry_out_of_range_is_dropped_alike_with_the_same_warning(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    data = NEW.replace(b"2405.13786v1", b"2405.13786v99999", 1)
    assert read_text(screen(data, "Atom")) is not None
    with caplog.at_level(logging.WARNING, logger="bot.fetch.atom"):
        from_text = parse_feed(data)
        told = caplog.messages[:]
        caplog.clear()
        assert from_text == _by_tree(data, monkeypatch)
        assert caplog.messages == told == ["arXiv entry dropped: 2405.13786: version 99999 is "
                                           "out of range"]
    assert (len(from_text.entries), from_text.dropped) == (9, 1)


def test_a_bad_date_is_a_bad_answer_alike(monkeypatch: pytest.MonkeyPatch) -> None:
    data = NEW.replace(b"<published>2022-02-24T15:05:19Z", b"<published>2022-13-24T15:05:19Z")
    assert read_text(screen(data, "Atom")) is not None
    with pytest.raises(ArxivBadAnswer, match="invalid date '2022-13-24T15:05:19Z'"):
        parse_feed(data)
    with pytest.raises(ArxivBadAnswer, match="invalid date '2022-13-24T15:05:19Z'"):
        _by_tree(data, monkeypatch)
