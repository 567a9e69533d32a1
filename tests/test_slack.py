"""Slack deliver/render stage: Block Kit digests, the packer's limits, escaping, Slack's answers.

Rendering is compared with tests/golden/slack-*.json (`UPDATE_GOLDEN=1 pytest` rewrites them
after an intended change). Sending runs against the loopback FakeSlack.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import re
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest

from bot.faces.slack import (
    COMMANDS,
    EVENTS_PATH,
    ReplayCache,
    parse_command,
    reply_bodies,
    reply_body,
    slack_help,
    unescape,
)
from notifiers.base import Outcome
from notifiers.slack import LIMITS, SlackNotifier, block_texts, headline, render_digest
from storage.records import OutboxRow, Paper, Subscriber
from tests.fakes.slack_server import FakeSlack, blocks_refusal

GOLDEN = Path(__file__).parent / "golden"
MANIFEST = Path(__file__).parent.parent / "deploy" / "slack-app-manifest.yml"
HOSTILE_TITLE = "<!channel> *Bold* _claims_ & <https://evil.example|click> > everything"
LATEX_ABSTRACT = ("We bound $\\sum_i x_i^*$ by *two* and _three_ :tada: <!here> & more. "
                  "Then the rest of a long abstract follows with many words " * 4).strip()
NAMES = ("Ada Lovelace", "Alan Turing", "Grace Hopper", "Edsger Dijkstra", "Barbara Liskov")


def paper(n: int, *, title: str | None = None, abstract: str | None = None,
          authors: tuple[str, ...] = NAMES[:2]) -> Paper:
    published = datetime(2025, 11, 10, 12, tzinfo=UTC) - timedelta(hours=n)
    return Paper(arxiv_id=f"2511.{n:05d}", version=1,
                 title=title or f"A Study of Vision Language Models, Part {n}",
                 abstract=abstract or f"Abstract number {n} about video understanding.",
                 authors=authors, published=published, updated=published,
                 primary_category="cs.CV", categories=("cs.CV", "cs.AI"))


def row(n: int, p: Paper, keywords: tuple[str, ...] = ("vision language model",)) -> OutboxRow:
    return OutboxRow(id=n, subscriber_id=1, paper=p, keywords=keywords)


def five_rows() -> list[OutboxRow]:
    both = ("vision language model", "video understanding")
    return [
        row(1, paper(1, authors=NAMES)),
        row(2, paper(2, title=HOSTILE_TITLE, abstract=LATEX_ABSTRACT), both),
        row(3, paper(3, authors=("Solo Author",))),
        row(4, paper(4), ("video understanding",)),
        row(5, paper(5, abstract="Short & <sweet>.")),
    ]


def big_rows(count: int = 60) -> list[OutboxRow]:
    """Papers as large as arXiv allows: long titles, many authors, long abstracts."""
    long_title = "Scaling " + " ".join(f"word{i}" for i in range(60))
    many = tuple(f"Author Number {i} With A Long Family Name" for i in range(40))
    return [row(i, paper(i, title=f"{long_title} {i}", abstract="x " * 1000, authors=many))
            for i in range(1, count + 1)]


def as_json(messages: list[Any]) -> str:
    data = [{"part": m.part, "parts": m.parts, "rows": m.row_ids, "text": m.payload.text,
             "blocks": m.payload.blocks, "fallback": m.payload.fallback} for m in messages]
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def check_golden(name: str, text: str) -> None:
    golden = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN") == "1":
        golden.write_text(text, encoding="utf-8")
    expected = golden.read_text(encoding="utf-8")
    assert text == expected, f"{golden} differs; UPDATE_GOLDEN=1 if intended"


def all_strings(messages: list[Any]) -> list[str]:
    return [s for m in messages
            for s in [m.payload.text, m.payload.fallback, *block_texts(m.payload.blocks)]]


# -- rendering ---------------------------------------------------------------------------------


def test_digest_blocks_match_golden() -> None:
    check_golden("slack-digest.json", as_json(render_digest(five_rows())))


def test_digest_reads_as_a_channel_sees_it() -> None:
    (message,) = render_digest(five_rows())
    blocks = message.payload.blocks
    assert blocks[0] == {"type": "header", "text": {
        "type": "plain_text", "text": "5 new papers · vision language model, video understanding",
        "emoji": False}}
    assert message.payload.text == "5 new papers · vision language model, video understanding"
    sections = [b for b in blocks if b["type"] == "section"]
    assert len(sections) == 5
    assert sections[0]["text"]["text"] == (
        "<https://arxiv.org/abs/2511.00001|A Study of Vision Language Models, Part 1>\n"
        "Ada Lovelace, Alan Turing, Grace Hopper et al. (5 authors) · 2025-11-10 · cs.CV")
    assert blocks[-1]["type"] == "context"  # the context line closes the message


def test_abstracts_are_plain_text_so_latex_cannot_format() -> None:
    (message,) = render_digest(five_rows())
    abstract = message.payload.blocks[4]
    assert abstract["type"] == "context"
    element = abstract["elements"][0]
    assert element["type"] == "plain_text" and element["emoji"] is False
    assert element["text"].startswith("We bound $\\sum_i x_i^*$ by *two* and _three_")
    assert element["text"].endswith("…") and len(element["text"]) <= 280


def test_hostile_title_cannot_ping_or_break_the_link() -> None:
    messages = render_digest([row(1, paper(1, title=HOSTILE_TITLE, abstract="<!everyone>"))])
    for text in all_strings(messages):
        if text == "<!everyone>":  # plain_text: shown literally, never parsed as a mention
            continue
        assert "<!" not in text and "<https://evil" not in text
    section = messages[0].payload.blocks[1]["text"]["text"]
    assert section.startswith(
        "<https://arxiv.org/abs/2511.00001|&lt;!channel&gt; *Bold* _claims_ &amp; "
        "&lt;https://evil.example|click&gt; &gt; everything>")
    assert messages[0].payload.blocks[2]["elements"][0] == {
        "type": "plain_text", "text": "<!everyone>", "emoji": False}


def test_oversized_title_is_cut_without_splitting_an_entity() -> None:
    huge = paper(1, title="&" * 10_000, authors=tuple("<x>" * 100 for _ in range(3)))
    (message,) = render_digest([row(1, huge)])
    section = message.payload.blocks[1]["text"]["text"]
    assert len(section) <= LIMITS.max_part_chars
    title = section.split("|", 1)[1].split(">\n")[0]
    assert title.endswith("&amp;…") and title.replace("&amp;", "").strip("…") == ""


def test_sixty_paper_digest_stays_within_slack_limits() -> None:
    rows = big_rows(60)
    messages = render_digest(rows)
    assert len(messages) > 1
    assert [m.part for m in messages] == list(range(1, len(messages) + 1))
    assert all(m.parts == len(messages) for m in messages)
    assert [r for m in messages for r in m.row_ids] == [r.id for r in rows]  # whole, in order
    for m in messages:
        blocks = m.payload.blocks
        assert len(blocks) <= 50
        for block in blocks:
            if block["type"] == "section":
                assert len(block["text"]["text"]) <= 3000
        assert sum(len(t) for t in block_texts(blocks)) <= 11_500  # well under 13,000
        assert len(m.payload.fallback) < 40_000
    assert messages[0].payload.blocks[0]["text"]["text"].startswith("60 new papers")
    assert messages[1].payload.blocks[0]["text"]["text"].endswith(f"(2/{len(messages)})")


def test_many_small_papers_are_bounded_by_blocks() -> None:
    rows = [row(i, paper(i)) for i in range(1, 61)]
    messages = render_digest(rows)
    assert max(len(m.payload.blocks) for m in messages) == 50
    assert sum(len(m.rows) for m in messages) == 60


def test_headline_fits_a_header_block() -> None:
    assert headline(1, ["x"]) == "1 new paper · x"
    long = headline(3, [f"keyword number {i}" for i in range(30)], 2, 9)
    assert len(long) <= 150 and long.endswith("… (2/9)")


# -- commands text -----------------------------------------------------------------------------


@pytest.mark.parametrize(("command", "wire", "expected"), [
    ("/papers", "", ("help", "")),
    ("/papers", "  ", ("help", "")),
    ("/papers", "subscribe vision language model", ("subscribe", "vision language model")),
    ("/papers", "SUBSCRIBE  Video  Understanding ", ("subscribe", "Video  Understanding")),
    ("/papers", "list", ("list", "")),
    ("/subscribe", "ti:&quot;x&quot; AND abs:y", ("subscribe", "ti:&quot;x&quot; AND abs:y")),
    ("/subscribe", "R&amp;D &lt;agents&gt;", ("subscribe", "R&D <agents>")),
    ("/subscribe", "“vision language” ‘model’", ("subscribe", "\"vision language\" 'model'")),
    ("/unsubscribe", "<https://arxiv.org|arxiv> <#C1|general>", ("unsubscribe", "arxiv general")),
    ("/latest", "<mailto:a@b.org|a@b.org>", ("latest", "a@b.org")),
    ("/list", "", ("list", "")),
    ("/papers", "frobnicate now", ("frobnicate", "now")),
])
def test_command_text_is_unescaped(command: str, wire: str, expected: tuple[str, str]) -> None:
    assert parse_command(command, wire) == expected


def test_unescape_keeps_unlabelled_links() -> None:
    assert unescape("<https://example.org/a_b>") == "https://example.org/a_b"
    assert unescape("&amp;lt;") == "&lt;"  # one level only: what the user typed


def test_help_speaks_slack() -> None:
    text = slack_help()
    assert "/help" not in text and "/start" not in text
    assert "/subscribe KEYWORD" in text and "/papers alone shows this help" in text


def test_reply_body_escapes_and_renders_papers() -> None:
    from bot.faces.commands import Reply

    body = reply_body(Reply("Subscribed to <!channel> & more", papers=[paper(1)]))
    assert body["response_type"] == "ephemeral"
    assert body["text"] == "Subscribed to &lt;!channel&gt; &amp; more"
    assert body["blocks"][0]["text"]["text"] == body["text"]
    assert body["blocks"][1]["text"]["text"].startswith("<https://arxiv.org/abs/2511.00001|")


def test_a_long_reply_is_packed_into_messages_slack_accepts() -> None:
    """Replies go through the shared packer: sections within 3000 characters, split between
    lines, every message within Slack's limits, nothing left out."""
    from bot.faces.commands import Reply

    lines = [f"• keyword {i} & " + "x" * 150 for i in range(60)]
    papers = [paper(i, title=f"Title {i} " + "long " * 390) for i in range(1, 6)]
    bodies = reply_bodies(Reply("\n".join(lines), papers))
    assert len(bodies) > 1 and bodies[0]["text"].startswith("• keyword 0 &amp; xxx")
    for body in bodies:
        assert blocks_refusal(body["blocks"]) is None, body["blocks"]
        assert sum(len(t) for t in block_texts(body["blocks"])) <= LIMITS.max_chars
    sections = [b["text"]["text"] for body in bodies for b in body["blocks"]
                if b["type"] == "section"]
    said = [t for t in sections if not t.startswith("<https://arxiv.org/")]
    assert "\n".join(said) == "\n".join(lines).replace("&", "&amp;")
    linked = [t.split("|")[0] for t in sections if t.startswith("<https://arxiv.org/")]
    assert linked == [f"<https://arxiv.org/abs/2511.{i:05d}" for i in range(1, 6)]


# -- sending -----------------------------------------------------------------------------------


SUB = Subscriber(id=1, channel="slack", address="C0PAPERS")


async def send_all(notifier: SlackNotifier, rows: list[OutboxRow]) -> list[Outcome]:
    outcomes = []
    for message in notifier.pack(SUB, rows):
        outcomes.append((await notifier.send(SUB, message)).outcome)
    return outcomes


async def test_a_large_digest_continues_in_the_first_messages_thread() -> None:
    async with FakeSlack() as fake:
        notifier = SlackNotifier(fake.api_url, fake.bot_token)
        notifier.limits = dataclasses.replace(LIMITS, per_recipient_interval=0)
        outcomes = await send_all(notifier, big_rows(60))
        posts = fake.posts_to("C0PAPERS")
    assert outcomes == [Outcome.SENT] * len(posts) and len(posts) > 1
    assert posts[0].thread_ts is None
    assert {p.thread_ts for p in posts[1:]} == {posts[0].ts}
    assert all(p.unfurl_links is False and p.unfurl_media is False for p in posts)
    shown = [b["text"]["text"] for p in posts for b in p.blocks or [] if b["type"] == "section"]
    assert len(shown) == 60


async def test_one_message_per_second_per_channel() -> None:
    async with FakeSlack() as fake:
        notifier = SlackNotifier(fake.api_url, fake.bot_token)
        for i in range(1, 4):
            await notifier.post("C0PAPERS", f"note {i}")
        await notifier.post("C0OTHER", "elsewhere")
        arrivals = fake.arrivals("C0PAPERS")
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    assert len(gaps) == 2 and min(gaps) >= 0.95


@pytest.mark.parametrize(("error", "outcome"), [
    ("not_in_channel", Outcome.PAUSED),
    ("channel_not_found", Outcome.GONE),
    ("is_archived", Outcome.GONE),
    ("account_inactive", Outcome.GONE),
    ("invalid_auth", Outcome.BROKEN),
    ("internal_error", Outcome.RETRY),
    ("restricted_action", Outcome.FAILED),
])
async def test_slack_refusals_become_outcomes(error: str, outcome: Outcome) -> None:
    async with FakeSlack() as fake:
        notifier = SlackNotifier(fake.api_url, fake.bot_token)
        fake.fail(error, channel="C0PAPERS")
        (message,) = notifier.pack(SUB, five_rows())
        delivery = await notifier.send(SUB, message)
        assert delivery.outcome is outcome and delivery.reason == error
        assert fake.posts == []


async def test_rate_limit_is_retried_after_slacks_delay() -> None:
    async with FakeSlack() as fake:
        notifier = SlackNotifier(fake.api_url, fake.bot_token)
        fake.rate_limit(retry_after=7, channel="C0PAPERS")
        (message,) = notifier.pack(SUB, five_rows())
        delivery = await notifier.send(SUB, message)
    assert delivery.outcome is Outcome.RETRY and delivery.retry_after == 7


async def test_a_retry_after_date_or_fraction_is_read_like_arxivs() -> None:
    """One Retry-After parser: an HTTP date or decimal seconds from Slack's edge count too."""
    when = datetime.now(UTC) + timedelta(seconds=120)
    async with FakeSlack() as fake:
        notifier = SlackNotifier(fake.api_url, fake.bot_token)
        notifier.limits = dataclasses.replace(LIMITS, per_recipient_interval=0)
        fake.rate_limit(retry_after=format_datetime(when, usegmt=True), channel="C0PAPERS")
        fake.rate_limit(retry_after="2.5", channel="C0PAPERS")
        (message,) = notifier.pack(SUB, five_rows())
        dated = await notifier.send(SUB, message)
        fraction = await notifier.send(SUB, message)
    assert dated.outcome is Outcome.RETRY and dated.retry_after is not None
    assert 100 < dated.retry_after <= 120
    assert fraction.retry_after == 2.5


@pytest.mark.parametrize(("status", "content_type"), [
    (502, "text/html"), (405, "text/plain"), (200, "text/plain"), (503, "application/json"),
])
async def test_an_answer_that_is_not_json_is_a_passing_fault(status: int,
                                                             content_type: str) -> None:
    """An edge proxy's page instead of the Web API's JSON: the rows are retried later."""
    async with FakeSlack() as fake:
        notifier = SlackNotifier(fake.api_url, fake.bot_token)
        notifier.limits = dataclasses.replace(LIMITS, per_recipient_interval=0)
        fake.not_json(status, content_type=content_type, method="auth.test")
        assert await notifier.identity() is None and notifier.refused is None
        assert await notifier.identity() is not None  # asked again once Slack answers
        fake.not_json(status, content_type=content_type, channel="C0PAPERS")
        (message,) = notifier.pack(SUB, five_rows())
        first = await notifier.send(SUB, message)
        again = await notifier.send(SUB, message)
    assert first.outcome is Outcome.RETRY and f"http {status}" in first.reason
    assert again.outcome is Outcome.SENT


async def test_refused_blocks_fall_back_once_to_text() -> None:
    async with FakeSlack() as fake:
        notifier = SlackNotifier(fake.api_url, fake.bot_token)
        fake.fail("invalid_blocks", channel="C0PAPERS")
        (message,) = notifier.pack(SUB, five_rows())
        delivery = await notifier.send(SUB, message)
        (post,) = fake.posts
    assert delivery.outcome is Outcome.SENT
    assert post.blocks is None
    assert post.text.startswith("*5 new papers · vision language model, video understanding*\n")
    assert "• <https://arxiv.org/abs/2511.00002|&lt;!channel&gt;" in post.text


async def test_refused_twice_fails_without_blaming_the_channel() -> None:
    async with FakeSlack() as fake:
        notifier = SlackNotifier(fake.api_url, fake.bot_token)
        fake.fail("msg_too_long", channel="C0PAPERS", times=2)
        (message,) = notifier.pack(SUB, five_rows())
        delivery = await notifier.send(SUB, message)
        assert len(fake.calls_to("chat.postMessage")) == 2
    assert delivery.outcome is Outcome.FAILED
    assert delivery.counts_against_recipient is False


async def test_identity_and_refused_token(caplog: pytest.LogCaptureFixture) -> None:
    async with FakeSlack() as fake:
        identity = await SlackNotifier(fake.api_url, fake.bot_token).identity()
        assert identity is not None and identity.team_id == fake.team_id
        bad = SlackNotifier(fake.api_url, "xoxb-wrong")
        await bad.start()
        (message,) = bad.pack(SUB, five_rows())
        delivery = await bad.send(SUB, message)
        assert fake.posts == []
    assert delivery.outcome is Outcome.BROKEN and "invalid_auth" in delivery.reason
    (line,) = [r for r in caplog.records if r.levelname == "ERROR"]
    assert "Slack refused SLACK_BOT_TOKEN (invalid_auth)" in line.getMessage()


def test_manifest_matches_the_code() -> None:
    """The app manifest registers exactly the commands the face handles, at its path."""
    text = MANIFEST.read_text(encoding="utf-8")
    assert re.findall(r"- command: (\S+)", text) == list(COMMANDS)
    urls = re.findall(r"(?:url|request_url): (\S+)", text)
    assert urls and all(u.endswith(EVENTS_PATH) for u in urls)
    for scope in ("chat:write", "chat:write.public", "commands", "channels:read", "groups:read"):
        assert re.search(rf"^\s+- {re.escape(scope)}\s", text, re.M), scope
    assert "- member_joined_channel" in text


def test_the_replay_cache_refuses_a_signature_inside_the_window_and_forgets_it_after() -> None:
    clock = [1_000_000.0]
    cache = ReplayCache(window=300, clock=lambda: clock[0])
    assert cache.first_time("v0=a", 1_000_000)
    assert not cache.first_time("v0=a", 1_000_000)
    assert cache.first_time("v0=b", 1_000_290)  # signed ten seconds ahead of our clock
    clock[0] += 301
    assert cache.first_time("v0=a", 1_000_000)  # stale by now: Slack's check refuses it
    assert not cache.first_time("v0=b", 1_000_290)  # still inside its own window
    clock[0] += 300
    assert cache.first_time("v0=b", 1_000_290)
    assert len(cache._seen) <= 2
