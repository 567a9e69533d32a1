"""Slack channel digests (deliver → render stage): Block Kit through the shared packer.

One digest message per subscriber batch; a batch larger than one message continues in the
first message's thread. Slack's answers become the dispatcher's outcomes.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.http_retry.builtin_async_handlers import AsyncConnectionErrorRetryHandler
from slack_sdk.web.async_client import AsyncWebClient

from notifiers.base import Delivery, Limits, Message, Notifier, Outcome
from notifiers.pacer import Pacer
from notifiers.packer import Piece, pack
from notifiers.retry_after import parse_retry_after
from notifiers.text import cut, split_lines
from storage.records import OutboxRow, Paper, Subscriber

log = logging.getLogger(__name__)

SECTION_CHARS = 3000  # a section block's text

# Block Kit ceilings (slack_sdk/models/blocks/blocks.py and Slack's docs). The total is kept
# well under the undocumented ~13,200 characters at which Slack answers msg_blocks_too_long.
LIMITS = Limits(
    max_chars=11_000,
    max_parts=50,
    max_part_chars=SECTION_CHARS,
    per_recipient_interval=1.0,  # chat.postMessage: about one message per second per channel
)
HEADER_CHARS = 150
ABSTRACT_CHARS = 280
TITLE_CHARS = 2000  # escaped; together with the authors line still under max_part_chars
AUTHORS_CHARS = 600
FOOTER = "Daily Papers · `/papers list` shows this channel's keywords · `/papers help`"

NOT_JSON = "not_json"  # our code for an answer that is not the Web API's (an edge proxy's page)

# Answers that say our rendering is wrong: fall back once to plain text.
RENDER_ERRORS = frozenset({
    "invalid_blocks", "invalid_blocks_format", "msg_too_long", "msg_blocks_too_long", "no_text",
})
ERROR_OUTCOMES = {
    "not_in_channel": Outcome.PAUSED,
    "channel_not_found": Outcome.GONE,
    "is_archived": Outcome.GONE,
    "account_inactive": Outcome.GONE,
    "invalid_auth": Outcome.BROKEN,
    "not_authed": Outcome.BROKEN,
    "token_revoked": Outcome.BROKEN,
    "token_expired": Outcome.BROKEN,
    "missing_scope": Outcome.BROKEN,
    "ratelimited": Outcome.RETRY,
    "internal_error": Outcome.RETRY,
    "fatal_error": Outcome.RETRY,
    "service_unavailable": Outcome.RETRY,
    "request_timeout": Outcome.RETRY,
}
_AUTH_ERRORS = frozenset(k for k, v in ERROR_OUTCOMES.items() if v is Outcome.BROKEN)


def escape(text: str) -> str:
    """Slack's three control characters; also defuses `<!channel>` and `<@U…>` in echoed text."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def escape_cut(text: str, limit: int) -> str:
    """Escape, keeping at most `limit` characters without splitting an entity."""
    return escape(cut(text, limit, escaped_len))


def escaped_len(text: str) -> int:
    return len(escape(text))


@dataclass
class Thread:
    """Shared by the parts of one digest: the first message's ts, which the rest reply to."""

    ts: str | None = None


@dataclass
class SlackPayload:
    text: str  # the notification text shown beside the blocks
    blocks: list[dict[str, Any]]
    fallback: str  # the whole message as text, when Slack refuses the blocks
    thread: Thread = field(default_factory=Thread)


# -- rendering ---------------------------------------------------------------------------------


def paper_line(paper: Paper) -> str:
    """Title as link text, then authors · date · category, all escaped for mrkdwn."""
    title = escape_cut(paper.title, TITLE_CHARS)
    details = [escape_cut(paper.authors_short(), AUTHORS_CHARS) if paper.authors else "",
               paper.published.date().isoformat(), escape(paper.primary_category)]
    return f"<{escape(paper.abs_url)}|{title}>\n" + " · ".join(d for d in details if d)


def paper_blocks(paper: Paper) -> list[dict[str, Any]]:
    """A section for the paper and the abstract's start as plain_text, so `*`, `_`, `$` stay."""
    blocks: list[dict[str, Any]] = [_section(paper_line(paper))]
    abstract = cut(paper.abstract, ABSTRACT_CHARS)
    if abstract:
        blocks.append({"type": "context", "elements": [
            {"type": "plain_text", "text": abstract, "emoji": False}]})
    return blocks


def render_paper(paper: Paper) -> Piece[list[dict[str, Any]]]:
    blocks = paper_blocks(paper)
    return Piece(blocks, size=sum(len(t) for t in block_texts(blocks)), parts=len(blocks))


def block_texts(node: Any) -> list[str]:
    """Every text string inside blocks: what Slack counts against its total."""
    if isinstance(node, list):
        return [t for item in node for t in block_texts(item)]
    if not isinstance(node, dict):
        return []
    return [t for k, v in node.items()
            for t in ([v] if k == "text" and isinstance(v, str) else block_texts(v))]


def headline(count: int, keywords: Sequence[str], part: int = 1, parts: int = 1) -> str:
    """"5 new papers · vision language model, video understanding", within a header's 150."""
    noun = "paper" if count == 1 else "papers"
    suffix = f" ({part}/{parts})" if part > 1 else ""  # the first message reads as the whole
    head = f"{count} new {noun}"
    listed = ", ".join(keywords)
    if listed:
        head += " · " + listed
    if len(head) + len(suffix) > HEADER_CHARS:
        head = head[: HEADER_CHARS - len(suffix) - 1].rstrip(" ,·") + "…"
    return head + suffix


def matched_keywords(rows: Sequence[OutboxRow]) -> list[str]:
    seen: dict[str, None] = {}
    for row in rows:
        for kw in row.keywords:
            seen.setdefault(kw, None)
    return list(seen)


def digest_payload(papers: Sequence[Paper], blocks: list[dict[str, Any]], head: str,
                   part: int, parts: int, thread: Thread) -> SlackPayload:
    footer = FOOTER
    if parts > 1:
        more = " · continued in the thread" if part == 1 else ""
        footer = f"Part {part} of {parts}{more} · {FOOTER}"
    all_blocks = [
        {"type": "header", "text": {"type": "plain_text", "text": head, "emoji": False}},
        *blocks,
        {"type": "context", "elements": [{"type": "mrkdwn", "text": footer}]},
    ]
    lines = [f"*{escape(head)}*", *(f"• {paper_line(p)}".replace("\n", " — ") for p in papers)]
    return SlackPayload(text=escape(head), blocks=all_blocks, fallback="\n".join(lines),
                        thread=thread)


def render_digest(rows: Sequence[OutboxRow], limits: Limits = LIMITS) -> list[Message]:
    """Pack rows into messages on paper boundaries; parts after the first go in its thread."""
    groups = pack(rows, lambda row: render_paper(row.paper), limits,
                  overhead=HEADER_CHARS + len(FOOTER) + 50, overhead_parts=2)
    keywords = matched_keywords(rows)
    thread = Thread()
    messages = []
    for i, group in enumerate(groups, start=1):
        head = headline(len(rows), keywords, i, len(groups))
        blocks = [b for _, piece in group for b in piece.content]
        payload = digest_payload([r.paper for r, _ in group], blocks, head, i, len(groups),
                                 thread)
        messages.append(Message(tuple(r for r, _ in group), payload, i, len(groups)))
    return messages


def pack_reply(text: str, papers: Sequence[Paper], limits: Limits = LIMITS) -> list[SlackPayload]:
    """A command's reply as messages, through the shared packer like a digest: its text in
    sections of at most `max_part_chars`, split between lines, then its papers."""
    parts = split_lines(text, limits.max_part_chars or SECTION_CHARS, escaped_len)
    items = [(escape(part), Piece([_section(escape(part))], escaped_len(part))) for part in parts]
    items += [("", render_paper(paper)) for paper in papers]
    messages = []
    for group in pack(items, lambda item: item[1], limits):
        blocks = [block for (_, piece), _ in group for block in piece.content]
        said = "\n".join(part for (part, _), _ in group if part)
        lines = "\n".join(b["text"]["text"] for b in blocks if b["type"] == "section")
        messages.append(SlackPayload(text=said or lines, blocks=blocks, fallback=lines))
    return messages


def _section(mrkdwn: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": mrkdwn}}


# -- sending -----------------------------------------------------------------------------------


class SlackWebClient(AsyncWebClient):
    """slack_sdk's client with one rule added for every Web API call (ours, bolt's, Socket
    Mode's): an answer that is not the Web API's JSON (an HTML 502 from Slack's edge, a
    plain-text 405, a garbled body) fails like any refusal, as SlackApiError with the error
    `not_json`, a passing fault; the SDK alone would raise AttributeError on some of them."""

    async def _request(self, *, http_verb: str, api_url: str,
                       req_args: dict[str, Any]) -> dict[str, Any]:
        try:
            answer = await super()._request(http_verb=http_verb, api_url=api_url,
                                            req_args=req_args)
        except SlackApiError as exc:  # a JSON content type with a body that is not JSON
            if not isinstance(exc.response, aiohttp.ClientResponse):
                raise
            answer = {"data": None, "headers": exc.response.headers,
                      "status_code": exc.response.status}
        data = answer.get("data")
        if not isinstance(data, dict) or "ok" not in data:
            answer = {**answer, "data": {"ok": False, "error": NOT_JSON}}
        return answer


def error_of(exc: SlackApiError) -> str:
    """Slack's error code in a refusal, e.g. "channel_not_found"."""
    return str(exc.response.get("error") or "")


@dataclass(frozen=True)
class Identity:
    """Who the bot token is (auth.test): the face checks team_id and the bot's own user."""

    team_id: str
    user_id: str
    bot_id: str


class SlackNotifier(Notifier):
    channel = "slack"

    def __init__(self, api_url: str, bot_token: str, *, max_in_flight: int = 1) -> None:
        self.pacer = Pacer(dataclasses.replace(LIMITS, max_in_flight=max_in_flight))
        # Connection errors are retried once; a 429 is not waited out here but goes back to the
        # dispatcher as RETRY, and command acks (3 s) must never sleep behind one.
        self.client = SlackWebClient(token=bot_token, base_url=api_url, retry_handlers=[
            AsyncConnectionErrorRetryHandler(max_retry_count=1)])
        self._identity: Identity | None = None
        self.refused: str | None = None  # set when Slack refused the token at auth.test

    @property
    def limits(self) -> Limits:
        return self.pacer.limits

    @limits.setter
    def limits(self, limits: Limits) -> None:
        self.pacer.limits = limits

    async def start(self) -> None:
        """auth.test; a refused token is logged once here and stops the channel (BROKEN)."""
        await self.identity()

    async def identity(self) -> Identity | None:
        """auth.test once; None while Slack cannot be reached or refuses the token."""
        if self._identity is None and self.refused is None:
            try:
                answer = await self.client.auth_test()
            except SlackApiError as exc:
                error = error_of(exc)
                if error in _AUTH_ERRORS:
                    self.refused = (f"Slack refused SLACK_BOT_TOKEN ({error}): use the app's "
                                    "Bot User OAuth Token (xoxb-…)")
                    log.error("slack: %s; Slack stays off until the daemon restarts",
                              self.refused)
                else:
                    log.warning("slack: auth.test failed: %s", error)
                return None
            except (aiohttp.ClientError, TimeoutError, OSError, SlackClientError) as exc:
                log.warning("slack: cannot reach Slack for auth.test: %s", exc)
                return None
            self._identity = Identity(str(answer.get("team_id", "")),
                                      str(answer.get("user_id", "")),
                                      str(answer.get("bot_id", "")))
        return self._identity

    def pack(self, subscriber: Subscriber, rows: Sequence[OutboxRow]) -> list[Message]:
        return render_digest(rows, self.limits)

    async def send(self, subscriber: Subscriber, message: Message) -> Delivery:
        payload: SlackPayload = message.payload
        if self.refused:
            return Delivery(Outcome.BROKEN, self.refused)
        thread_ts = payload.thread.ts if message.part > 1 else None
        delivery, ts = await self.post(subscriber.address, payload.text, payload.blocks,
                                       thread_ts=thread_ts)
        if delivery.outcome is Outcome.FAILED and delivery.reason in RENDER_ERRORS:
            log.error("slack: %s for %d papers to %s: our blocks are wrong; sending text",
                      delivery.reason, len(message.rows), subscriber.address)
            delivery, ts = await self.post(subscriber.address, payload.fallback, None,
                                           thread_ts=thread_ts)
            if delivery.outcome is Outcome.FAILED:
                log.error("slack: the text fallback was refused too: %s", delivery.reason)
                delivery = Delivery(Outcome.FAILED, delivery.reason,
                                    counts_against_recipient=False)
        if delivery.outcome is Outcome.SENT and message.part == 1:
            payload.thread.ts = ts
        return delivery

    async def post(self, channel: str, text: str, blocks: list[dict[str, Any]] | None = None,
                   *, thread_ts: str | None = None) -> tuple[Delivery, str | None]:
        """chat.postMessage at about one message per second per channel; never raises."""
        kwargs: dict[str, Any] = {"channel": channel, "text": text, "unfurl_links": False,
                                  "unfurl_media": False}
        if blocks is not None:
            kwargs["blocks"] = blocks
        if thread_ts:
            kwargs["thread_ts"] = thread_ts
        await self.pacer.turn(channel)
        try:
            answer = await self.client.chat_postMessage(**kwargs)
        except SlackApiError as exc:
            return delivery_for(exc), None
        except (aiohttp.ClientError, TimeoutError, OSError, SlackClientError) as exc:
            return Delivery(Outcome.RETRY, f"cannot reach Slack: {exc}"), None
        finally:
            self.pacer.sent(channel)
        return Delivery(Outcome.SENT), str(answer.get("ts") or "") or None

    def ready_in(self, subscriber: Subscriber) -> float:
        return self.pacer.ready_in(subscriber.address)


def delivery_for(exc: SlackApiError) -> Delivery:
    """Map one Slack refusal to what the dispatcher should do with the rows."""
    response = exc.response
    error = error_of(exc) or f"http {response.status_code}"
    if response.status_code == 429 or error == "ratelimited":
        return Delivery(Outcome.RETRY, "ratelimited", retry_after=retry_after(response.headers),
                        rate_limited=True)
    if error == NOT_JSON:
        return Delivery(Outcome.RETRY, f"Slack answered http {response.status_code} without "
                        "its JSON", retry_after=retry_after(response.headers))
    outcome = ERROR_OUTCOMES.get(error)
    if outcome is None:
        outcome = Outcome.RETRY if response.status_code >= 500 else Outcome.FAILED
    return Delivery(outcome, error)


def retry_after(headers: Any) -> float | None:
    """Slack's Retry-After, from whichever header mapping the SDK handed over."""
    for key, value in dict(headers or {}).items():
        if key.lower() == "retry-after":
            return parse_retry_after(value[0] if isinstance(value, list) else str(value))
    return None
