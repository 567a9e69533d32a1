"""Apprise notifier (deliver stage): each `[[apprise.targets]]` entry is one subscriber on any
service the apprise library reaches, packed within what apprise says that service takes."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import apprise
from apprise import NotifyFormat

from notifiers.base import Delivery, Limits, Message, Notifier, Outcome
from notifiers.pacer import Pacer
from notifiers.packer import Piece, pack
from notifiers.text import cut, one_line
from storage.records import OutboxRow, Paper, Subscriber

log = logging.getLogger(__name__)

DEFAULT_BODY_CHARS = 1900  # a service that reports no body limit: Discord's 2000, with room
HEADER_CHARS = 48  # kept free for the header line when the service has no title
ABSTRACT_CHARS = 300
SEPARATOR = "\n\n"
SEND_TIMEOUT = 60.0  # s apprise may take for one message, its retries included
UNUSABLE_WAIT = 900.0  # s the rows of a target without a usable URL wait between looks
REDACTED = "[redacted]"
NOT_A_URL = "apprise cannot use its URL (an unknown service, or a part missing)"


@dataclass(frozen=True)
class AppriseLimits(Limits):
    """The channel's limits; each target's own interval comes from its service."""

    intervals: Mapping[str, float] = field(default_factory=dict)

    def recipient_interval(self, address: str) -> float:
        return self.intervals.get(address, self.per_recipient_interval)


@dataclass(frozen=True)
class Payload:
    title: str
    body: str


# -- rendering -----------------------------------------------------------------------------------

# Inline Markdown that arXiv text must not start (CommonMark and Discord honour the backslash),
# and what would make a line of its own a heading, quote or list.
_MD_INLINE = re.compile(r"([\\`*_\[\]<>~|])")
_MD_LINE_START = re.compile(r"^(\s*)([#>+=-]|\d+[.)])")
_MENTION = re.compile(r"@(everyone|here|room|channel|all)\b", re.IGNORECASE)


def defuse(text: str) -> str:
    """One line, and no mention that pings a whole room (Discord, Matrix, Mattermost)."""
    return _MENTION.sub("@\u200b\\1", one_line(text))


def markdown(text: str) -> str:
    """Outside text as literal Markdown text."""
    return _MD_LINE_START.sub(r"\1\\\2", _MD_INLINE.sub(r"\\\1", defuse(text)))


def plain(text: str) -> str:
    return defuse(text)


@dataclass(frozen=True)
class Style:
    """How one paper reads on a service: Markdown, or plain text for services without it."""

    escape: Callable[[str], str]
    is_markdown: bool

    def fit(self, text: str, limit: int | None) -> str:
        """`text` escaped, then cut to `limit` at a space (an escape never holds one)."""
        escaped = self.escape(text)
        return escaped if limit is None else cut(escaped, limit)

    def paper(self, paper: Paper, keywords: Sequence[str], *, abstract_chars: int = ABSTRACT_CHARS,
              field_chars: int | None = None, details: bool = True) -> str:
        title = self.fit(paper.title or paper.arxiv_id, field_chars)
        lines = ([f"**[{title}]({paper.abs_url})**"] if self.is_markdown
                 else [title, paper.abs_url])
        if details:
            meta = [self.fit(paper.authors_short() or "unknown authors", field_chars),
                    paper.published.strftime("%Y-%m-%d")]
            if paper.primary_category:
                meta.append(self.escape(paper.primary_category))
            if keywords:
                listed = self.fit(", ".join(keywords), field_chars)
                meta.append(f"_{listed}_" if self.is_markdown else listed)
            lines.append(" · ".join(meta))
        if details and abstract_chars > 0 and paper.abstract:
            lines.append(self.fit(paper.abstract, abstract_chars))
        return "\n".join(lines)


MARKDOWN = Style(markdown, is_markdown=True)
PLAIN = Style(plain, is_markdown=False)


def header(count: int, part: int = 1, parts: int = 1) -> str:
    noun = "paper" if count == 1 else "papers"
    return f"New on arXiv: {count} {noun}" + (f" ({part}/{parts})" if parts > 1 else "")


# -- one target ----------------------------------------------------------------------------------


def url_secrets(url: str) -> list[str]:
    """What to redact besides the whole URL: credentials, tokens in the host (Telegram's bot
    token, Discord's webhook id), path segments and query values that look like keys."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]  # a bot token may hold a colon: not a port
    pieces = [unquote(parts.username or ""), *(unquote(p) for p in parts.path.split("/")),
              *(v for _, v in parse_qsl(parts.query))]
    if "." not in host and not host.startswith(("localhost", "[")):
        pieces += [host, *host.split(":")]
    found = [url, unquote(url), unquote(parts.password or "")]
    return [p for p in found if p] + [p for p in pieces if _looks_secret(p)]


def _looks_secret(piece: str) -> bool:
    """A key, not a word: long, and not letters alone (so "webhooks" stays readable)."""
    return len(piece) >= 8 and not piece.isalpha()


@dataclass
class Target:
    """One named target: its apprise service and the limits that service reports."""

    name: str
    notifier: apprise.Apprise
    interval: float  # seconds between two messages, as the service asks (apprise's throttle)
    style: Style
    limits: Limits
    title_chars: int  # 0: the service has no title, the header opens the body
    secrets: tuple[str, ...]

    @classmethod
    def load(cls, name: str, url: str) -> Target | None:
        """None when apprise cannot use the URL (unknown scheme, missing parts)."""
        service = apprise.Apprise.instantiate(url)
        if service is None:
            return None
        body = service.body_maxlen if service.body_maxlen > 0 else DEFAULT_BODY_CHARS
        title_chars = max(0, service.title_maxlen)
        if service.overflow_amalgamate_title:  # the title counts against the body's length
            body -= min(title_chars, HEADER_CHARS)
        limits = Limits(max_chars=body, max_parts=service.body_max_line_count or None)
        markdown = service.resolve_format(NotifyFormat.MARKDOWN) == NotifyFormat.MARKDOWN
        notifier = apprise.Apprise(log_level=logging.WARNING)
        notifier.add(service)
        return cls(name, notifier, max(0.0, float(service.request_rate_per_sec)),
                   MARKDOWN if markdown else PLAIN, limits, title_chars, tuple(url_secrets(url)))

    def render(self, row: OutboxRow) -> Piece[str]:
        return self._piece(self.style.paper(row.paper, row.keywords))

    def shorten(self, row: OutboxRow, budget: int) -> Piece[str]:
        """A paper too long alone: drop the abstract, then the details, then cut the title."""
        paper, keywords = row.paper, row.keywords
        for text in (self.style.paper(paper, keywords, abstract_chars=ABSTRACT_CHARS // 3),
                     self.style.paper(paper, keywords, abstract_chars=0),
                     self.style.paper(paper, keywords, details=False)):
            if len(text) + len(SEPARATOR) <= budget:
                return self._piece(text)
        room = budget - len(SEPARATOR) - len(paper.abs_url) - 8  # link syntax, a newline
        return self._piece(self.style.paper(paper, keywords, field_chars=max(1, room),
                                            details=False))

    def _piece(self, text: str) -> Piece[str]:
        return Piece(text + SEPARATOR, len(text) + len(SEPARATOR), parts=text.count("\n") + 2)

    def messages(self, rows: Sequence[OutboxRow]) -> list[Message]:
        in_body = self.title_chars == 0
        groups = pack(rows, self.render, self.limits,
                      overhead=HEADER_CHARS + len(SEPARATOR) if in_body else 0,
                      overhead_parts=2 if in_body else 0, shorten=self.shorten)
        messages = []
        for part, group in enumerate(groups, start=1):
            head = cut(header(len(group), part, len(groups)), self.title_chars or HEADER_CHARS)
            body = "".join(piece.content for _, piece in group).rstrip("\n")
            payload = Payload("", f"{head}{SEPARATOR}{body}") if in_body else Payload(head, body)
            messages.append(Message(rows=tuple(row for row, _ in group), payload=payload,
                                    part=part, parts=len(groups)))
        return messages

    async def send(self, payload: Payload) -> Delivery:
        fmt = NotifyFormat.MARKDOWN if self.style.is_markdown else NotifyFormat.TEXT
        try:
            result = await self.notifier.async_notify(
                body=payload.body, title=payload.title, body_format=fmt, timeout=SEND_TIMEOUT)
        except Exception as exc:  # apprise reports service faults in its result; not this
            return Delivery(Outcome.RETRY, self.scrub(f"apprise failed: {exc}"))
        try:
            if result:
                return Delivery(Outcome.SENT)
            return Delivery(Outcome.RETRY, self._reason(result))
        finally:
            result.close()

    def _reason(self, result: Any) -> str:
        said = [e.message for e in result.logs() if e.level in ("WARNING", "ERROR", "CRITICAL")]
        if said:
            return self.scrub(said[-1])
        return f"the service did not take it ({result.status.name.lower()})"

    def scrub(self, text: str) -> str:
        """The target's URL and keys out of a reason that is stored and logged."""
        for secret in sorted(self.secrets, key=len, reverse=True):
            text = text.replace(secret, REDACTED)
        return text


# -- the notifier --------------------------------------------------------------------------------


class AppriseNotifier(Notifier):
    """Targets by name; a subscriber whose target has no usable URL keeps its rows waiting."""

    channel = "apprise"

    def __init__(self, urls: Mapping[str, str], unusable: Mapping[str, str] | None = None, *,
                 max_in_flight: int = 1) -> None:
        """`urls`: target name → apprise URL; `unusable`: target name → why it is skipped."""
        self.targets: dict[str, Target] = {}
        self.unusable = dict(unusable or {})
        for name, url in urls.items():
            target = Target.load(name, url)
            if target is None:
                self.unusable[name] = NOT_A_URL
                log.error("apprise target '%s' is skipped, its papers wait: %s", name,
                          self.unusable[name])
            else:
                self.targets[name] = target
        self.limits = AppriseLimits(
            max_in_flight=max_in_flight,
            intervals={name: t.interval for name, t in self.targets.items()})
        self.pacer = Pacer(self.limits)

    def pack(self, subscriber: Subscriber, rows: Sequence[OutboxRow]) -> list[Message]:
        target = self.targets.get(subscriber.address)
        if target is None:  # one look for all its rows, then they wait
            return [Message(rows=tuple(rows), payload=None)]
        return target.messages(rows)

    def ready_in(self, subscriber: Subscriber) -> float:
        return self.pacer.ready_in(subscriber.address)

    async def send(self, subscriber: Subscriber, message: Message) -> Delivery:
        target = self.targets.get(subscriber.address)
        if target is None or message.payload is None:
            why = self.unusable.get(subscriber.address,
                                    "config.toml has no [[apprise.targets]] entry of that name")
            return Delivery(Outcome.RETRY, f"target '{subscriber.address}' skipped: {why}",
                            retry_after=UNUSABLE_WAIT, rate_limited=True)
        await self.pacer.turn(subscriber.address)
        try:
            return await target.send(message.payload)
        finally:
            self.pacer.sent(subscriber.address)
