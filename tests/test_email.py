"""Email rendering (golden text and HTML parts), headers, the 90 KB budget, unsubscribe tokens,
the unsubscribe page, and the address check.

`UPDATE_GOLDEN=1 pytest tests/test_email.py` rewrites tests/golden/email-* after an intended change.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from hypothesis import given
from hypothesis import strategies as st

from bot.config import AddressError, ConfigError, EmailConfig, WebConfig, normalize_address
from bot.faces.email import EmailFace, public_url_warning
from bot.faces.signup_tokens import SignupTokens
from bot.faces.tokens import Claim, InvalidToken, Signer
from bot.faces.unsubscribe import UnsubscribePage
from bot.fetch.keywords import parse_keyword
from notifiers.email import HTML_MAX_BYTES, EmailNotifier, SmtpSettings, message_id
from storage import subscribers as sub_repo
from storage.records import OutboxRow, Paper, Subscriber
from storage.store import AsyncStore
from tests.conftest import Clock, KeywordFactory, SubscriberFactory

GOLDEN = Path(__file__).parent / "golden"
FIXTURES = Path(__file__).parent / "fixtures"
PUBLIC = "https://papers.example.org"
SECRET = "test-secret-for-golden-files"
NOW = datetime(2025, 11, 13, 6, 30, tzinfo=UTC)
SENDER = "Daily Papers <papers@example.org>"
ALICE = Subscriber(id=7, channel="email", address="alice@example.org")
HOSTILE = '<script>alert("x")</script> & <b>bold</b> \'quoted\''


def links(signer: Signer):
    def make(address: str, keyword: str | None) -> str:
        token = signer.token(address) if keyword is None else signer.keyword_token(address, keyword)
        return f"{PUBLIC}/unsubscribe?t={token}"

    return make


def notifier(signer: Signer | None = None) -> EmailNotifier:
    """With [web] signup on: every mail also links the reader's preferences page."""
    signer = signer or Signer(SECRET)
    n = EmailNotifier(SmtpSettings(host="smtp.example.org", sender=SENDER),
                      links=links(signer), now=lambda: NOW)
    n.manage = SignupTokens(signer, PUBLIC).preferences_url
    return n


def seed_papers() -> list[Paper]:
    """Fixed papers from the recorded seed data, with authors (the seed has none)."""
    items = json.loads((FIXTURES / "seed-papers.json").read_text(encoding="utf-8"))
    names = ["Ada Lovelace", "Alan Turing", "Grace Hopper", "Edsger Dijkstra", "Barbara Liskov"]
    papers = []
    for i, item in enumerate(items[:4]):
        when = datetime.fromisoformat(item["updated"].replace("Z", "+00:00"))
        papers.append(Paper(
            arxiv_id=item["id"], version=item["version"], title=item["title"],
            abstract=item["summary"], authors=tuple(names[: 2 + i]), published=when,
            updated=when, primary_category="cs.CV", categories=("cs.CV",),
            comment=item["comment"]))
    return papers


def golden_rows() -> list[OutboxRow]:
    a, b, c, d = seed_papers()
    hostile = Paper(arxiv_id="2511.00001", version=2, title=HOSTILE,
                    abstract=f"An abstract with {HOSTILE} inside.", authors=("Mallory <m@x>",),
                    published=NOW - timedelta(days=1), updated=NOW, primary_category="cs.CR",
                    comment="Accepted <i>somewhere</i> & more")
    return [
        OutboxRow(11, ALICE.id, hostile, ("Vision Language Model",)),
        OutboxRow(12, ALICE.id, a, ("Video Anomaly Detection",)),
        OutboxRow(13, ALICE.id, b, ("Video Anomaly Detection", "Vision Language Model")),
        OutboxRow(14, ALICE.id, c, ("Video Anomaly Detection",)),
        OutboxRow(15, ALICE.id, d, ("Video Anomaly Detection",)),
    ]


def parts(msg: EmailMessage) -> tuple[str, str]:
    text = msg.get_body(("plain",))
    html = msg.get_body(("html",))
    assert text is not None and html is not None
    return text.get_content(), html.get_content()


def assert_golden(name: str, text: str) -> None:
    golden = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN") == "1":
        golden.write_bytes(text.encode())
    assert text.encode() == golden.read_bytes(), f"{golden} differs; UPDATE_GOLDEN=1 if intended"


class Links(HTMLParser):
    """Every <a href> with its text, as a mail client would show them."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[tuple[str, str]] = []
        self._href: str | None = None
        self._text = ""
        self.scripts = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._href, self._text = dict(attrs).get("href"), ""
        if tag == "script":
            self.scripts += 1

    def handle_data(self, data: str) -> None:
        if self._href is not None:
            self._text += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._href is not None:
            self.links.append((self._href, self._text))
            self._href = None


def html_links(html: str) -> Links:
    parser = Links()
    parser.feed(html)
    return parser


def token_of(url: str) -> str:
    assert url.startswith(f"{PUBLIC}/unsubscribe?t="), url
    return parse_qs(urlparse(url).query)["t"][0]


# --- rendering --------------------------------------------------------------------------------


def test_golden_parts() -> None:
    [message] = notifier().pack(ALICE, golden_rows())
    text, html = parts(message.payload)
    assert_golden("email-basic.txt", text)
    assert_golden("email-basic.html", html)


def test_one_multipart_message_for_the_whole_batch() -> None:
    rows = golden_rows()
    messages = notifier().pack(ALICE, rows)
    assert len(messages) == 1
    msg = messages[0].payload
    assert messages[0].row_ids == [r.id for r in rows]
    assert msg.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]


def test_papers_grouped_by_keyword_each_paper_once() -> None:
    [message] = notifier().pack(ALICE, golden_rows())
    text, html = parts(message.payload)
    assert text.index("== Video Anomaly Detection (4 new) ==") < text.index(
        "== Vision Language Model (1 new) ==")
    for paper in seed_papers():
        assert text.count(f"* {paper.title}") == 1
        assert html.count(f">{paper.title}</a>") == 1
    assert "Also matches: Vision Language Model" in text


def test_outside_text_is_escaped_in_html_and_plain_in_text() -> None:
    [message] = notifier().pack(ALICE, golden_rows())
    text, html = parts(message.payload)
    parsed = html_links(html)
    assert parsed.scripts == 0
    assert "<script>" not in html and "<b>bold</b>" not in html and "<i>somewhere</i>" not in html
    assert "&lt;script&gt;" in html
    titles = [t for h, t in parsed.links
              if h.endswith("/abs/2511.00001") and t != "arXiv:2511.00001"]
    assert titles == [HOSTILE]  # a reader sees the text as written, nothing runs
    assert f"* {HOSTILE}" in text


def test_subject_counts_papers_and_names_the_biggest_keyword() -> None:
    n = notifier()
    [message] = n.pack(ALICE, golden_rows())
    assert message.payload["Subject"] == "5 new papers: Video Anomaly Detection and 1 more"
    one = golden_rows()[1]
    [single] = n.pack(ALICE, [one])
    assert single.payload["Subject"] == "1 new paper: Video Anomaly Detection"
    three = [OutboxRow(i, ALICE.id, p, (kw,)) for i, (p, kw) in enumerate(zip(
        seed_papers()[:3], ["video understanding", "b kw", "c kw"], strict=True))]
    three[1] = OutboxRow(1, ALICE.id, three[1].paper, ("video understanding", "b kw"))
    [msg3] = n.pack(ALICE, three)
    assert msg3.payload["Subject"] == "3 new papers: video understanding and 2 more"


def test_headers() -> None:
    signer = Signer(SECRET)
    [message] = notifier(signer).pack(ALICE, golden_rows())
    msg = message.payload
    assert msg["From"] == SENDER
    assert msg["To"] == "alice@example.org"
    assert msg["Date"] == "Thu, 13 Nov 2025 06:30:00 +0000"
    assert msg["Auto-Submitted"] == "auto-generated"
    assert msg["List-Id"] == "Daily Papers <daily-papers.example.org>"
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    unsubscribe = str(msg["List-Unsubscribe"])
    assert unsubscribe.startswith("<") and unsubscribe.endswith(">")
    assert signer.verify(token_of(unsubscribe[1:-1])) == Claim("alice@example.org")
    assert re.fullmatch(r"<daily-papers\.[0-9a-f]{32}@example\.org>", msg["Message-ID"])


def test_message_id_is_the_same_for_the_same_subscriber_and_rows() -> None:
    rows = golden_rows()
    first = notifier().pack(ALICE, rows)[0].payload["Message-ID"]
    again = notifier().pack(ALICE, list(reversed(rows)))[0].payload["Message-ID"]
    assert first == again == message_id(ALICE.id, [r.id for r in rows], "example.org")
    assert notifier().pack(ALICE, rows[:-1])[0].payload["Message-ID"] != first
    bob = Subscriber(id=8, channel="email", address="bob@example.org")
    assert notifier().pack(bob, rows)[0].payload["Message-ID"] != first


def test_unsubscribe_links_top_and_bottom_of_both_parts_and_beside_each_keyword() -> None:
    signer = Signer(SECRET)
    [message] = notifier(signer).pack(ALICE, golden_rows())
    text, html = parts(message.payload)
    everything = str(message.payload["List-Unsubscribe"])[1:-1]
    lines = text.splitlines()
    assert everything in "\n".join(lines[:3]) and everything in "\n".join(lines[-3:])
    anchors = html_links(html).links
    assert anchors[0][0] == everything and anchors[-1][0] == everything
    per_keyword = [(h, t) for h, t in anchors if t == "unsubscribe from this keyword"]
    claims = [signer.verify(token_of(h)) for h, _ in per_keyword]
    assert claims == [
        Claim("alice@example.org", parse_keyword("Video Anomaly Detection").canonical),
        Claim("alice@example.org", parse_keyword("Vision Language Model").canonical)]
    for claim in claims:
        url = f"{PUBLIC}/unsubscribe?t={signer.token(claim.address, claim.keyword)}"
        assert url in text


def big_batch(n: int, abstract_chars: int = 1900) -> list[OutboxRow]:
    words = ("lorem ipsum dolor sit amet consectetur adipiscing elit " * 40)[:abstract_chars]
    start = datetime(2025, 11, 1, tzinfo=UTC)
    return [OutboxRow(i + 1, ALICE.id, Paper(
        arxiv_id=f"2511.{i:05d}", version=1, title=f"Paper number {i} about video",
        abstract=words, authors=("A. Author", "B. Author", "C. Author", "D. Author"),
        published=start - timedelta(minutes=i), updated=start, primary_category="cs.CV"),
        ("video understanding" if i % 3 else "vision language model",)) for i in range(n)]


def test_large_batch_shortens_abstracts_first() -> None:
    rows = big_batch(60)
    [message] = notifier().pack(ALICE, rows)
    _, html = parts(message.payload)
    assert len(html.encode()) < HTML_MAX_BYTES
    assert "more paper" not in html
    for row in rows:
        assert f">{row.paper.title}</a>" in html
    assert "…" in html and rows[0].paper.abstract not in html


def test_huge_batch_stays_under_90kb_and_sums_up_the_rest() -> None:
    rows = big_batch(400)
    [message] = notifier().pack(ALICE, rows)
    text, html = parts(message.payload)
    assert len(html.encode()) < HTML_MAX_BYTES
    assert message.row_ids == [r.id for r in rows]  # the summed-up papers count as delivered
    shown = sum(f">{r.paper.title}</a>" in html for r in rows)
    hidden = [int(n) for n in re.findall(r"\+ (\d+) more papers?</a>", html)]
    assert shown > 20 and shown + sum(hidden) == 400
    assert [int(n) for n in re.findall(r"^\+ (\d+) more", text, re.M)] == hidden
    more_links = [h for h, t in html_links(html).links if "more paper" in t]
    assert more_links and all(h.startswith("https://arxiv.org/search/?query=") for h in more_links)
    assert message.payload["Subject"].startswith("400 new papers: ")


# --- tokens ---------------------------------------------------------------------------------


def test_token_round_trip_and_scope() -> None:
    signer = Signer(SECRET)
    assert signer.verify(signer.token("a@example.org")) == Claim("a@example.org")
    kw = parse_keyword("Video Understanding").canonical
    assert signer.verify(signer.token("a@example.org", kw)) == Claim("a@example.org", kw)
    token = signer.token("ü@bü.org", "ti:x AND au:y")
    assert re.fullmatch(r"[A-Za-z0-9_\-.]+", token)  # survives URLs and the log redactor
    assert signer.verify(token) == Claim("ü@bü.org", "ti:x AND au:y")


def _swap_payload(token: str, other: str) -> str:
    return other.split(".")[0] + "." + token.split(".")[1]


@pytest.mark.parametrize("forge", [
    lambda s: Signer("another key").token("a@example.org"),
    lambda s: _swap_payload(s.token("a@example.org"), s.token("b@example.org")),
    lambda s: _swap_payload(s.token("a@example.org", "video"), s.token("a@example.org")),
    lambda s: s.token("a@example.org")[:-1],
    lambda s: s.token("a@example.org") + "A",
    lambda s: s.token("a@example.org").split(".")[0],
    lambda s: "",
    lambda s: "not-a-token",
    lambda s: "." * 3,
    lambda s: "é" + s.token("a@example.org"),
    lambda s: "A" * 5000,
])
def test_forged_tokens_are_refused(forge) -> None:
    signer = Signer(SECRET)
    with pytest.raises(InvalidToken):
        signer.verify(forge(signer))


@given(st.integers(min_value=0, max_value=10_000), st.characters(codec="ascii"))
def test_any_single_character_change_is_refused(position: int, char: str) -> None:
    signer = Signer(SECRET)
    token = signer.token("a@example.org", "video understanding")
    i = position % len(token)
    altered = token[:i] + char + token[i + 1:]
    if altered != token:
        with pytest.raises(InvalidToken):
            signer.verify(altered)


# --- addresses, config ----------------------------------------------------------------------


def test_normalize_address() -> None:
    assert normalize_address("  Alice.Smith@Example.ORG ") == "Alice.Smith@example.org"
    for bad, words in [("alice", "@-sign"), ("alice@", "after the @-sign"),
                       ("Bob <bob@example.org>", "display name"), ("a@b..org", "period"),
                       ("a b@example.org", "invalid characters"), ("", "")]:
        with pytest.raises(AddressError) as info:
            normalize_address(bad)
        assert "is not a usable email address" in info.value.message and words in info.value.message


def test_face_needs_a_sender_address() -> None:
    with pytest.raises(ConfigError, match=r"email\.sender"):
        EmailFace(EmailConfig(host="smtp.example.org"), WebConfig(), "")
    face = EmailFace(EmailConfig(host="smtp.example.org", username="me@example.org"), WebConfig(),
                     "pw")
    assert face.notifier.settings.sender == "me@example.org"


def test_public_url_warning() -> None:
    assert public_url_warning(WebConfig(public_url="https://papers.example.org")) is None
    assert "not https" in (public_url_warning(WebConfig(public_url="http://papers.example.org"))
                           or "")
    assert "names this machine" in (public_url_warning(WebConfig(public_url="https://localhost:8"))
                                    or "")


# --- the unsubscribe page -----------------------------------------------------------------------


@pytest.fixture
async def page(store: AsyncStore, clock: Clock) -> AsyncIterator[str]:
    signer = Signer(SECRET)
    app = web.Application()
    app.add_routes(UnsubscribePage(lambda: store, lambda: signer, clock.now).routes())
    async with TestServer(app, host="127.0.0.1", port=0) as server:
        yield str(server.make_url("/unsubscribe"))


async def test_page_confirms_then_unsubscribes_one_keyword(
        page: str, store: AsyncStore, add_keyword: KeywordFactory,
        add_subscriber: SubscriberFactory) -> None:
    evil = await add_keyword('"<b>evil</b>" OR ti:x')
    video = await add_keyword("video understanding")
    sub = await add_subscriber("email", "alice@example.org", evil, video)
    token = Signer(SECRET).token(sub.address, evil.canonical)
    async with aiohttp.ClientSession() as http:
        async with http.get(page, params={"t": token}) as resp:
            body = await resp.text()
            assert resp.status == 200
        assert "alice@example.org" in body and "&lt;b&gt;evil&lt;/b&gt;" in body
        assert "<b>evil" not in body and 'id="confirm"' in body
        assert len(await store.call(sub_repo.subscriptions, sub.id)) == 2  # GET changes nothing
        async with http.post(page, params={"t": token},
                             data={"List-Unsubscribe": "One-Click"}) as resp:
            done = await resp.text()
            assert resp.status == 200
    assert "is unsubscribed" in done and "&lt;b&gt;evil&lt;/b&gt;" in done
    left = await store.call(sub_repo.subscriptions, sub.id)
    assert [kw.display for kw, _ in left] == ["video understanding"]
    assert await store.call(sub_repo.is_suppressed, "email", sub.address, evil.canonical)


async def test_a_link_to_a_keyword_gone_since_the_mail_still_stops_it(
        page: str, store: AsyncStore, add_keyword: KeywordFactory) -> None:
    token = Signer(SECRET).token("alice@example.org", "graph neural networks")
    async with aiohttp.ClientSession() as http, http.post(page, params={"t": token}) as resp:
        assert resp.status == 200
        assert "is unsubscribed" in await resp.text()
    # config.toml brings the keyword back later: alice is not subscribed to it again
    assert await store.call(sub_repo.is_suppressed, "email", "alice@example.org",
                            "graph neural networks")


async def test_page_all_scope_stops_everything(
        page: str, store: AsyncStore, add_keyword: KeywordFactory,
        add_subscriber: SubscriberFactory) -> None:
    video = await add_keyword("video understanding")
    sub = await add_subscriber("email", "alice@example.org", video)
    token = Signer(SECRET).token(sub.address)
    async with aiohttp.ClientSession() as http, http.post(page, data={"t": token}) as resp:
        assert resp.status == 200
        assert "from every Daily Papers email" in await resp.text()
    assert await store.call(sub_repo.subscriptions, sub.id) == []
    assert await store.call(sub_repo.is_suppressed, "email", sub.address, video.canonical)


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_page_refuses_forged_tokens_and_changes_nothing(
        method: str, page: str, store: AsyncStore, add_keyword: KeywordFactory,
        add_subscriber: SubscriberFactory) -> None:
    video = await add_keyword("video understanding")
    sub = await add_subscriber("email", "alice@example.org", video)
    forged = Signer("guessed key").token(sub.address)
    async with aiohttp.ClientSession() as http:
        for params in ({"t": forged}, {}, {"t": forged[:-2]}):
            async with http.request(method, page, params=params) as resp:
                assert resp.status == 400
                assert "not valid" in await resp.text()
    assert len(await store.call(sub_repo.subscriptions, sub.id)) == 1
    assert not await store.call(sub_repo.is_suppressed, "email", sub.address, video.canonical)
