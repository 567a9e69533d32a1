"""Hostile arXiv data through the render stage: markup, template syntax, Slack mentions, TeX,
bidi controls, a 10,000-character abstract, 3,000 authors and an empty title, rendered into the
README digest, Telegram HTML, Slack blocks and both email parts.

Golden files (`tests/golden/hostile-*`) pin the exact output; `UPDATE_GOLDEN=1 pytest
tests/test_hostile_data.py` rewrites them after an intended change. Structural checks say what
must hold whatever the golden files contain, and the local Telegram and Slack servers (which
enforce the services' own rules) must accept every message.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, date, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import lxml.html
from telegram import Bot

from bot.faces.tokens import Signer
from bot.render.digest import DigestSection, render_digest
from notifiers.email import HTML_MAX_BYTES, EmailNotifier, SmtpSettings
from notifiers.slack import SlackNotifier
from notifiers.slack import render_digest as slack_render
from notifiers.telegram import TELEGRAM_LIMITS, UNLIMITED, TelegramNotifier, sendout_bot
from storage.records import OutboxRow, Paper, Subscriber
from tests.fakes.slack_server import FakeSlack
from tests.fakes.telegram_server import MAX_TEXT_UTF16, FakeTelegram, utf16_len, visible_text

GOLDEN = Path(__file__).parent / "golden"
WHEN = datetime(2025, 11, 13, 12, 0, tzinfo=UTC)
UPDATED = date(2025, 11, 14)

MARKUP = ("</b><script>alert(1)</script> | {{ config.secret }} {% raw %} $x_i^*$ <!channel> "
          "<!here|here> <@U0ADMIN> *bold* _it_ ~s~ `code` [x](javascript:alert(1)) &amp; \\ "
          "<a href=\"javascript:alert(2)\">click</a> <img src=x onerror=alert(3)>")
RTL = "\u202eevil\u202c and \u200fمرحبا\u200f and \u2067isolated\u2069"
LONG_ABSTRACT = ("We study <b>x</b> & $y_i$ | {{z}} <!channel>. " * 400)[:10_000]
AUTHORS = (*(f"Author{i} Family{i}" for i in range(3_000 - 2)), "Mallory </b><script>",
           "<!everyone> Eve")
KEYWORD = "hostile <!here> & | {{kw}} $x$"


def paper(n: int, **fields: Any) -> Paper:
    base: dict[str, Any] = dict(
        arxiv_id=f"2511.{n:05d}", version=1, title=f"Plain title {n}", abstract="An abstract.",
        authors=("Ada Lovelace", "Alan Turing"), published=WHEN, updated=WHEN,
        primary_category="cs.CR", categories=("cs.CR",))
    return Paper(**{**base, **fields})


PAPERS = [
    paper(1, title=f"Markup in the title {MARKUP}", abstract=f"Markup in the abstract {MARKUP}",
          comment=f"Comment with {MARKUP}\nand a second line"),
    paper(2, title=f"Right-to-left {RTL} in the title", abstract=f"Bidi {RTL} in the abstract"),
    paper(3, title="A 10,000-character abstract", abstract=LONG_ABSTRACT),
    paper(4, title="Three thousand authors", authors=AUTHORS),
    paper(5, title="", abstract="", authors=()),  # arXiv sometimes sends empty fields
]
SUBSCRIBER = {c: Subscriber(id=9, channel=c, address=a) for c, a in
              (("telegram", "4242"), ("slack", "C0HOSTILE"), ("email", "reader@example.org"))}


def rows(channel: str) -> list[OutboxRow]:
    return [OutboxRow(100 + i, 9, p, (KEYWORD, "second keyword")) for i, p in enumerate(PAPERS)]


def many_rows() -> list[OutboxRow]:
    """Forty hostile papers: a send-out that must be split, with escaping that inflates HTML."""
    papers = [replace(PAPERS[i % len(PAPERS)], arxiv_id=f"2512.{i:05d}") for i in range(40)]
    return [OutboxRow(200 + i, 9, p, (KEYWORD,)) for i, p in enumerate(papers)]


def assert_golden(name: str, text: str) -> None:
    golden = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN") == "1":
        golden.write_bytes(text.encode("utf-8", "surrogateescape"))
    assert text.encode() == golden.read_bytes(), f"{golden} differs; UPDATE_GOLDEN=1 if intended"


# --- README digest -------------------------------------------------------------------------------


def digest() -> str:
    sections = [DigestSection(KEYWORD, PAPERS),
                DigestSection("Rejected <b>|</b>", PAPERS[:1],
                              note=f"arXiv said: {MARKUP}\nsecond line")]
    return render_digest(sections, updated=UPDATED, max_bytes=500_000)


def table_rows(text: str) -> list[list[str]]:
    rows = []
    for line in text.splitlines():
        if line.startswith("| **["):
            cells = line.strip().removeprefix("|").removesuffix("|").split("|")
            assert len(cells) == 4, line[:300]  # a `|` in the data would make more cells
            rows.append([c.strip() for c in cells])
    return rows


def test_digest_golden() -> None:
    assert_golden("hostile-digest.md", digest())


def test_digest_is_safe_markdown() -> None:
    text = digest()
    rows = table_rows(text)
    assert len(rows) == len(PAPERS) + 1  # every paper one row, each row one line
    for raw in ("<script", "<!channel", "<!here", "<@U0", "<img", "<a href=\"javascript",
                "](javascript:"):  # `{{` and `{%` mean nothing to Markdown: left as they are
        assert raw not in text, raw
    allowed = {"details", "summary", "p", "br", "sub", "/details", "/summary", "/p", "/sub"}
    tags = set(re.findall(r"<(/?[a-zA-Z]+)", text.split("<!-- ", 1)[0]))
    assert tags <= allowed, tags - allowed
    long_row = next(r for r in rows if "10,000" in r[0])
    assert len(long_row[2]) < 1_500  # the abstract is cut near [digest] abstract_chars
    many = next(r for r in rows if "Three thousand" in r[0])
    assert "et al. (3000 authors)" in many[0] and "Author2997" not in many[0]
    empty = next(r for r in rows if "2511.00005" in r[0])
    assert empty[0].startswith("**[") and "](https://arxiv.org/abs/2511.00005)**" in empty[0]


# --- Telegram --------------------------------------------------------------------------------------


def telegram_messages() -> list[str]:
    notifier = TelegramNotifier(Bot("1:golden"), TELEGRAM_LIMITS)
    return [m.payload for m in notifier.pack(SUBSCRIBER["telegram"], rows("telegram"))]


def test_telegram_golden() -> None:
    assert_golden("hostile-telegram.html", "\n\n<!-- next message -->\n\n".join(
        telegram_messages()) + "\n")


def test_telegram_html_is_safe_and_within_limits() -> None:
    notifier = TelegramNotifier(Bot("1:golden"), TELEGRAM_LIMITS)
    messages = [*telegram_messages(),
                *(m.payload for m in notifier.pack(SUBSCRIBER["telegram"], many_rows()))]
    shown = []
    for html in messages:
        text = visible_text(html)  # raises like Telegram when the entities do not parse
        assert utf16_len(text) <= MAX_TEXT_UTF16
        assert "<script" not in html and "<img" not in html
        assert set(re.findall(r"<(/?[a-z]+)", html)) <= {"b", "/b", "a", "/a", "i", "/i"}
        links = re.findall(r'<a href="([^"]*)">', html)  # real tags; escaped text starts "&lt;"
        assert links and all(h.startswith("https://arxiv.org/abs/") for h in links), links
        shown.append(text)
    everything = "\n".join(shown)
    assert "Markup in the title </b><script>alert(1)</script> | {{ config.secret }}" in everything
    assert "et al. (3000 authors)" in everything and "Author2997" not in everything
    assert "https://arxiv.org/abs/2511.00005" in "".join(messages)  # the empty title's link


# --- Slack ----------------------------------------------------------------------------------------


def slack_messages() -> list[dict[str, Any]]:
    return [{"text": m.payload.text, "blocks": m.payload.blocks, "fallback": m.payload.fallback}
            for m in slack_render(rows("slack"))]


def texts(node: Any, kind: str | None = None) -> Iterator[tuple[str, str]]:
    """(type, text) of every text object in blocks."""
    if isinstance(node, list):
        for item in node:
            yield from texts(item, kind)
    elif isinstance(node, dict):
        if isinstance(node.get("text"), str) and node.get("type") in ("mrkdwn", "plain_text"):
            yield node["type"], node["text"]
        for value in node.values():
            if isinstance(value, (list, dict)):
                yield from texts(value, kind)


def test_slack_golden() -> None:
    assert_golden("hostile-slack.json",
                  json.dumps(slack_messages(), indent=1, ensure_ascii=False) + "\n")


def test_slack_blocks_cannot_mention_or_link_elsewhere() -> None:
    many = [{"text": m.payload.text, "blocks": m.payload.blocks, "fallback": m.payload.fallback}
            for m in slack_render(many_rows())]
    assert len(many) > 1
    for message in [*slack_messages(), *many]:
        assert len(message["blocks"]) <= 50
        mrkdwn = [t for k, t in texts(message["blocks"]) if k == "mrkdwn"]
        for text in [*mrkdwn, message["text"], message["fallback"]]:
            # The only `<…>` left is our own link to the abstract page.
            for m in re.finditer(r"<([^>]*)>", text):
                assert m[1].startswith("https://arxiv.org/abs/"), (m[0], text[:200])
            assert "<!" not in text and "<@" not in text
        for kind, text in texts(message["blocks"]):
            assert len(text) <= 3000, (kind, len(text))
    shown = json.dumps(slack_messages(), ensure_ascii=False)
    assert "&lt;!channel&gt;" in shown  # shown as text, not as a mention
    assert "et al. (3000 authors)" in shown and "Author2997" not in shown


# --- email -----------------------------------------------------------------------------------------


def email_message() -> EmailMessage:
    signer = Signer("hostile-golden-secret")

    def link(address: str, keyword: str | None) -> str:
        token = signer.token(address) if keyword is None else signer.keyword_token(address,
                                                                                     keyword)
        return f"https://papers.example.org/unsubscribe?t={token}"

    notifier = EmailNotifier(SmtpSettings(host="smtp.example.org",
                                          sender="Daily Papers <papers@example.org>"),
                             links=link, now=lambda: WHEN)
    [message] = notifier.pack(SUBSCRIBER["email"], rows("email"))
    return message.payload


def parts() -> tuple[str, str]:
    msg = email_message()
    text, html = msg.get_body(("plain",)), msg.get_body(("html",))
    assert isinstance(text, EmailMessage) and isinstance(html, EmailMessage)
    return text.get_content(), html.get_content()


def test_email_golden() -> None:
    text, html = parts()
    assert_golden("hostile-email.txt", text)
    assert_golden("hostile-email.html", html)


def test_email_html_has_no_active_content() -> None:
    text, html = parts()
    assert len(html.encode()) <= HTML_MAX_BYTES
    tree = lxml.html.fromstring(html)
    assert tree.xpath("//script | //img | //iframe | //object | //form") == []
    assert not [a for el in tree.iter() if isinstance(el.tag, str)
                for a in el.attrib if a.lower().startswith("on")]
    hrefs = tree.xpath("//a/@href")
    assert hrefs and all(h.startswith("https://") for h in hrefs), hrefs
    shown = tree.text_content()
    assert "</b><script>alert(1)</script>" in shown  # the title, shown as text
    assert "{{ config.secret }}" in shown and "{% raw %}" in shown  # not run as a template
    for part in (text, shown):
        assert "et al. (3000 authors)" in part and "Author2997" not in part
    assert "\n" not in str(email_message()["Subject"])  # no header injection from a keyword


# --- the services themselves accept every message ----------------------------------------------------


async def test_telegram_and_slack_accept_every_hostile_message() -> None:
    async with FakeTelegram(token="1:hostile") as telegram, FakeSlack() as slack:
        tg = TelegramNotifier(sendout_bot("1:hostile", telegram.base_url), UNLIMITED)
        sl = SlackNotifier(slack.api_url, slack.bot_token)
        await tg.start()
        try:
            for notifier in (tg, sl):
                sub = SUBSCRIBER[notifier.channel]
                for batch in (rows(notifier.channel), many_rows()):
                    for message in notifier.pack(sub, batch):
                        delivery = await notifier.send(sub, message)
                        assert delivery.outcome.value == "sent", (notifier.channel, delivery)
        finally:
            await tg.close()
            await sl.close()
    assert len(telegram.sent) > 2 and len(slack.posts) > 2  # the forty were split
    assert all(utf16_len(m.visible_text) <= MAX_TEXT_UTF16 for m in telegram.sent)
    assert all(c.status == 200 for c in telegram.calls_to("sendMessage"))
    assert slack.posts and all(c.error is None for c in slack.calls_to("chat.postMessage"))
    assert all(p.blocks for p in slack.posts)  # the blocks went, not the text fallback
