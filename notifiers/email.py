"""Email notifier (deliver stage): one multipart mail per subscriber per batch, sent over SMTP.

Papers are grouped by keyword; the HTML part stays under 90 KB (shorter abstracts, then
"+ N more papers"). One connection is reused across a batch and closed when idle.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import ssl
import textwrap
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, getaddresses
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import aiosmtplib
import jinja2
from markupsafe import Markup

from notifiers.base import Delivery, Limits, Message, Notifier, Outcome
from notifiers.pacer import Pacer
from notifiers.packer import Piece, pack
from notifiers.text import cut, one_line
from storage.records import OutboxRow, Subscriber

log = logging.getLogger(__name__)

HTML_MAX_BYTES = 90_000  # Gmail clips HTML parts past ~102 KB; keep a margin
SHORT_ABSTRACT = 300  # characters, the second try when full abstracts do not fit
COMMENT_CHARS = 200
IDLE_CLOSE = 15.0  # seconds an unused connection stays open after a batch
WINDOW = 60.0  # max_per_minute is counted over a sliding minute

# Linked when a batch is too big for one mail: the keyword's newest papers on arXiv.
MORE_URL = "https://arxiv.org/search/?query={q}&searchtype=all&order=-announced_date_first"

UnsubscribeLinks = Callable[[str, str | None], str]  # (address, keyword display | None) → URL
ManageLink = Callable[[str], str]  # address → its preferences page (with [web] signup on)
FeedLink = Callable[[Subscriber], str]  # subscriber → its private Atom feed


@dataclass(frozen=True)
class SmtpSettings:
    """What the notifier needs from [email]; the password comes from SMTP_PASSWORD."""

    host: str
    sender: str
    port: int = 587
    security: str = "starttls"  # "starttls", "tls" or "none"
    username: str = ""
    password: str = ""
    return_path: str = ""
    max_per_minute: int = 60
    max_bounces: int = 3
    max_in_flight: int = 1
    ca_file: str = ""
    timeout: float = 60.0


# --- rendering ------------------------------------------------------------------------------


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html.j2",),
                                            default_for_string=False),
        undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["wrap_indent"] = lambda text: textwrap.fill(
        text, 76, initial_indent="  ", subsequent_indent="  ", break_on_hyphens=False)
    return env


_ENV = _environment()


@dataclass
class Entry:
    """One paper as shown: under its first keyword, naming the subscriber's others."""

    row: OutboxRow
    also: list[str]
    html: Markup = field(default_factory=Markup)
    text: str = ""

    def render(self, abstract_chars: int | None) -> Entry:
        p = self.row.paper
        values = {
            "p": p, "date": p.published.date().isoformat(), "also": self.also,
            "abstract": _abstract(p.abstract, abstract_chars),
            "comment": cut(one_line(p.comment), COMMENT_CHARS),
        }
        self.html = Markup(_ENV.get_template("email-paper.html.j2").render(values))
        self.text = _ENV.get_template("email-paper.txt.j2").render(values)
        return self


@dataclass
class Section:
    keyword: str
    unsubscribe: str
    entries: list[Entry] = field(default_factory=list)
    more: int = 0

    @property
    def total(self) -> int:
        return len(self.entries) + self.more

    @property
    def more_url(self) -> str:
        return MORE_URL.format(q=quote_plus(self.keyword))


def keyword_order(rows: Sequence[OutboxRow]) -> list[str]:
    """The batch's keywords, those with the most papers first."""
    counts: dict[str, int] = {}
    for row in rows:
        for kw in row.keywords:
            counts[kw] = counts.get(kw, 0) + 1
    return sorted(counts, key=lambda k: (-counts[k], k.casefold(), k))


def sections_of(rows: Sequence[OutboxRow], links: Callable[[str | None], str]) -> list[Section]:
    """One section per keyword; a paper sits under its first keyword in `keyword_order`."""
    order = keyword_order(rows)
    rank = {k: i for i, k in enumerate(order)}
    by_kw: dict[str, Section] = {}
    newest = sorted(rows, key=lambda r: (r.paper.published, r.paper.arxiv_id), reverse=True)
    for row in newest:
        mine = sorted(set(row.keywords) or {"?"}, key=lambda k: rank.get(k, len(rank)))
        section = by_kw.get(mine[0]) or by_kw.setdefault(mine[0], Section(mine[0], links(mine[0])))
        section.entries.append(Entry(row, mine[1:]))
    return sorted(by_kw.values(), key=lambda s: rank.get(s.keyword, len(rank)))


def subject_of(rows: Sequence[OutboxRow], sections: Sequence[Section]) -> str:
    """ "3 new papers: video understanding and 2 more" (more keywords)."""
    n = len(rows)
    keywords = {k for r in rows for k in r.keywords}
    head = f"{n} new {'paper' if n == 1 else 'papers'}"
    if not sections:
        return head
    others = len(keywords) - 1
    return f"{head}: {sections[0].keyword}" + (f" and {others} more" if others > 0 else "")


@dataclass
class Rendered:
    subject: str
    text: str
    html: str
    sections: list[Section]


class EmailRenderer:
    """Renders one subscriber's batch into the two parts, within the HTML byte budget."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits

    def render(self, address: str, rows: Sequence[OutboxRow], links: UnsubscribeLinks,
               manage: ManageLink | None = None, feed: str = "") -> Rendered:
        sections = sections_of(rows, lambda kw: links(address, kw))
        subject = subject_of(rows, sections)
        context = {"address": address, "subject": subject, "heading": _heading(len(rows), address),
                   "unsubscribe_all": links(address, None),
                   "manage": manage(address) if manage else "", "feed": feed,
                   "keywords": keyword_order(rows)}
        self._fit(sections, context, len(rows))
        context["sections"] = sections
        return Rendered(subject, _ENV.get_template("email.txt.j2").render(context),
                        _ENV.get_template("email.html.j2").render(context), sections)

    def _fit(self, sections: list[Section], context: dict[str, Any], n: int) -> None:
        """Full abstracts when all fit; else short ones, and the rest summed up per keyword."""
        frame = [Section(s.keyword, s.unsubscribe, more=n) for s in sections]
        overhead = _bytes(_ENV.get_template("email.html.j2").render(context, sections=frame))
        entries = [e for s in sections for e in s.entries]
        for chars in (None, SHORT_ABSTRACT):
            groups = pack(entries, lambda e, c=chars: _piece(e.render(c)), self.limits,
                          overhead=overhead, shorten=lambda e, _max: _piece(e.render(0)))
            if len(groups) == 1:
                return
        shown = {id(e) for e, _ in groups[0]}
        for s in sections:
            kept = [e for e in s.entries if id(e) in shown]
            s.more = len(s.entries) - len(kept)
            s.entries = kept


def _abstract(text: str, chars: int | None) -> str:
    """None: whole; 0: none (a paper too big even so); else cut at a word boundary."""
    if chars is None:
        return text
    return cut(one_line(text), chars) if chars > 0 else ""


def _piece(entry: Entry) -> Piece[Entry]:
    return Piece(entry, _bytes(entry.html) + 1)  # +1: the newline the main template adds


def _bytes(text: str) -> int:
    return len(text.encode("utf-8"))


def _heading(n: int, address: str) -> str:
    return f"{n} new {'paper' if n == 1 else 'papers'} from arXiv for {address}"


# --- the message ----------------------------------------------------------------------------


def domain_of(sender: str) -> str:
    address = getaddresses([sender])[0][1]
    return address.rpartition("@")[2].lower() or "localhost"


def message_id(subscriber_id: int, row_ids: Sequence[int], domain: str) -> str:
    """The same subscriber and rows give the same id, so a resend after a crash is one mail."""
    key = f"{subscriber_id}:{','.join(map(str, sorted(row_ids)))}"
    return f"<daily-papers.{hashlib.sha256(key.encode()).hexdigest()[:32]}@{domain}>"


def build_message(settings: SmtpSettings, sub: Subscriber, rows: Sequence[OutboxRow],
                  rendered: Rendered, unsubscribe_all: str, now: datetime) -> EmailMessage:
    domain = domain_of(settings.sender)
    msg = EmailMessage()
    msg["From"] = settings.sender
    msg["To"] = sub.address
    msg["Subject"] = rendered.subject
    msg["Date"] = format_datetime(now.astimezone(UTC))
    msg["Message-ID"] = message_id(sub.id, [r.id for r in rows], domain)
    msg["Auto-Submitted"] = "auto-generated"
    msg["List-Id"] = f"Daily Papers <daily-papers.{domain}>"
    msg["List-Unsubscribe"] = f"<{unsubscribe_all}>"
    msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    msg.set_content(rendered.text)
    msg.add_alternative(rendered.html, subtype="html")
    return msg


def note_message(settings: SmtpSettings, sub: Subscriber, subject: str, text: str,
                 unsubscribe_all: str, now: datetime, manage: str = "",
                 feed: str = "") -> EmailMessage:
    """A one-off plain-text note (e.g. arXiv refused a keyword)."""
    msg = plain_message(settings, sub.address, subject, now)
    msg["List-Id"] = f"Daily Papers <daily-papers.{domain_of(settings.sender)}>"
    msg["List-Unsubscribe"] = f"<{unsubscribe_all}>"
    msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    footer = f"Unsubscribe from everything: {unsubscribe_all}\n"
    if manage:
        footer += f"Manage your subscription: {manage}\n"
    if feed:
        footer += f"Your private Atom feed: {feed}\n"
    msg.set_content(f"{text}\n\n--\n{footer}")
    return msg


def plain_message(settings: SmtpSettings, address: str, subject: str,
                  now: datetime) -> EmailMessage:
    """The headers of a one-off mail; the caller sets the content. Alone (no list headers) it
    is what someone who is not subscribed gets: the sign-up confirmation."""
    msg = EmailMessage()
    msg["From"] = settings.sender
    msg["To"] = address
    msg["Subject"] = subject
    msg["Date"] = format_datetime(now.astimezone(UTC))
    msg["Message-ID"] = f"<daily-papers.note.{time.time_ns()}@{domain_of(settings.sender)}>"
    msg["Auto-Submitted"] = "auto-generated"
    return msg


# --- SMTP answers -------------------------------------------------------------------------------

_ENHANCED = re.compile(r"^\s*([245])\.(\d{1,3})\.(\d{1,3})\b")
_RECIPIENT_CODES = {550, 551, 553}  # mailbox unknown / not local / name not allowed


def smtp_reason(code: int, text: str) -> str:
    """An SMTP answer on one line, for logs and the row's last_error."""
    return f"{code} {' '.join(text.split())}".strip()


def classify(code: int, text: str, sub: Subscriber, max_bounces: int) -> Delivery:
    """What an SMTP refusal means for the row and the recipient."""
    reason = smtp_reason(code, text)
    if 400 <= code < 500:
        return Delivery(Outcome.RETRY, reason)
    enhanced = _ENHANCED.match(text)
    policy = enhanced is not None and enhanced.group(2) == "7"
    mailbox = enhanced is not None and enhanced.group(2) == "1"
    if not policy and (mailbox or code in _RECIPIENT_CODES):
        if sub.permanent_failures + 1 >= max_bounces:
            return Delivery(Outcome.GONE, f"hard bounce ({max_bounces}×): {reason}")
        return Delivery(Outcome.FAILED, f"bounce: {reason}")
    log.warning("email to %s refused by the SMTP server (%s); that mail is dropped, the "
                "address is kept", sub.address, reason)
    return Delivery(Outcome.FAILED, f"refused: {reason}", counts_against_recipient=False)


# --- connections and pace -----------------------------------------------------------------------


class SmtpAuthFailed(Exception):
    """Our login is refused: the channel must stop until the operator fixes it."""


class _Pool:
    """Up to `size` open SMTP connections, reused between messages and closed when idle."""

    def __init__(self, settings: SmtpSettings, tls_context: ssl.SSLContext | None) -> None:
        self.settings = settings
        self.tls_context = tls_context
        self.idle: list[aiosmtplib.SMTP] = []
        self.slots = asyncio.Semaphore(settings.max_in_flight)
        self.opened = 0
        self._timer: asyncio.TimerHandle | None = None
        self._closing: set[asyncio.Task[None]] = set()

    def _client(self) -> aiosmtplib.SMTP:
        s = self.settings
        return aiosmtplib.SMTP(
            hostname=s.host, port=s.port, username=s.username or None,
            password=s.password if s.username else None, use_tls=s.security == "tls",
            start_tls=s.security == "starttls", tls_context=self.tls_context,
            timeout=s.timeout)

    async def acquire(self) -> aiosmtplib.SMTP:
        await self.slots.acquire()
        try:
            while self.idle:
                client = self.idle.pop()
                if client.is_connected:
                    return client
            client = self._client()
            try:
                await client.connect()
            except (aiosmtplib.SMTPAuthenticationError, aiosmtplib.SMTPNotSupported) as exc:
                client.close()
                raise SmtpAuthFailed(_login_problem(self.settings, exc)) from None
            self.opened += 1
            return client
        except BaseException:
            self.slots.release()
            raise

    def release(self, client: aiosmtplib.SMTP, reusable: bool) -> None:
        self.slots.release()
        if reusable and client.is_connected:
            self.idle.append(client)
            self._arm()
        else:
            client.close()

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_later(IDLE_CLOSE, self._close_idle)

    def _close_idle(self) -> None:
        self._timer = None
        idle, self.idle = self.idle, []
        for client in idle:
            task = asyncio.create_task(_quit(client))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._close_idle()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)


def _cause(exc: BaseException | None, kind: type[ssl.SSLCertVerificationError],
           ) -> ssl.SSLCertVerificationError | None:
    """aiosmtplib wraps the TLS failure in SMTPConnectError."""
    while exc is not None:
        if isinstance(exc, kind):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


async def _quit(client: aiosmtplib.SMTP) -> None:
    try:
        await client.quit(timeout=5)
    except (aiosmtplib.SMTPException, OSError):
        client.close()


def _login_problem(settings: SmtpSettings, exc: Exception) -> str:
    if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
        return (f"SMTP login as {settings.username!r} at {settings.host}:{settings.port} refused "
                f"({exc.code} {exc.message}); check email.username and SMTP_PASSWORD")
    return (f"SMTP server {settings.host}:{settings.port} does not offer login ({exc}); "
            f"check email.security (usually \"starttls\" on 587, \"tls\" on 465)")


def tls_context_for(ca_file: str) -> ssl.SSLContext:
    """The system's trust store, plus `ca_file` (a private relay's CA) when given."""
    ctx = ssl.create_default_context()
    if ca_file:
        ctx.load_verify_locations(cafile=ca_file)
    return ctx


# --- the notifier ---------------------------------------------------------------------------


class EmailNotifier(Notifier):
    channel = "email"

    def __init__(self, settings: SmtpSettings, *, links: UnsubscribeLinks | None = None,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC),
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
                 tls_context: ssl.SSLContext | None = None) -> None:
        self.settings = settings
        self.links = links  # set by the email face once the unsubscribe key is known
        self.manage: ManageLink | None = None  # the preferences page, with [web] signup on
        self.feed: FeedLink | None = None  # the private feed, set by the email face
        self.now = now
        self.limits = Limits(max_chars=HTML_MAX_BYTES, overall_rate=settings.max_per_minute / 60,
                             rate_window=WINDOW, max_in_flight=settings.max_in_flight)
        self.renderer = EmailRenderer(self.limits)
        self._tls = tls_context
        self._pacer = Pacer(self.limits, clock=clock, sleep=sleep)
        self._pool: _Pool | None = None

    @property
    def max_permanent_failures(self) -> int:
        """Hard bounces before the dispatcher deactivates an address ([email] max_bounces)."""
        return self.settings.max_bounces

    @property
    def connections_opened(self) -> int:
        return self._pool.opened if self._pool else 0

    def _links(self) -> UnsubscribeLinks:
        if self.links is None:
            raise RuntimeError("EmailNotifier.links is not set (the email face sets it at start)")
        return self.links

    def pack(self, subscriber: Subscriber, rows: Sequence[OutboxRow]) -> list[Message]:
        """Always one message: papers beyond the HTML budget are summed up, and count as sent."""
        links = self._links()
        rendered = self.renderer.render(subscriber.address, rows, links, self.manage,
                                        self.feed(subscriber) if self.feed else "")
        msg = build_message(self.settings, subscriber, rows, rendered,
                            links(subscriber.address, None), self.now())
        return [Message(rows=tuple(rows), payload=msg)]

    async def send(self, subscriber: Subscriber, message: Message) -> Delivery:
        return await self.deliver(subscriber, message.payload)

    async def tell(self, subscriber: Subscriber, subject: str, text: str) -> Delivery:
        """A one-off note outside the outbox; best effort."""
        manage = self.manage(subscriber.address) if self.manage else ""
        feed = self.feed(subscriber) if self.feed else ""
        msg = note_message(self.settings, subscriber, subject, text,
                           self._links()(subscriber.address, None), self.now(), manage, feed)
        return await self.deliver(subscriber, msg)

    async def mail(self, address: str, subject: str, text: str) -> Delivery:
        """A plain mail to someone not subscribed (the sign-up confirmation); best effort."""
        msg = plain_message(self.settings, address, subject, self.now())
        msg.set_content(text)
        return await self.deliver(Subscriber(0, self.channel, address), msg, priority=True)

    async def deliver(self, subscriber: Subscriber, msg: EmailMessage, *,
                      priority: bool = False) -> Delivery:
        """`priority`: a mail someone is waiting for (a sign-up link), never behind a send-out."""
        await self._pacer.turn(subscriber.address, priority=priority)
        if self._pool is None:
            self._pool = _Pool(self.settings, self._tls or tls_context_for(self.settings.ca_file))
        try:
            client = await self._pool.acquire()
        except SmtpAuthFailed as exc:
            return Delivery(Outcome.BROKEN, str(exc))
        except (aiosmtplib.SMTPException, OSError) as exc:
            return self._unreachable(exc)
        reusable = False
        try:
            await client.send_message(msg, sender=self._envelope_sender(),
                                      recipients=[subscriber.address])
            reusable = True
            return Delivery(Outcome.SENT)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            reusable = True
            refused = exc.recipients[0]
            return classify(refused.code, refused.message, subscriber, self.settings.max_bounces)
        except aiosmtplib.SMTPSenderRefused as exc:  # our MAIL FROM: no recipient's fault
            reusable = exc.code != 421
            reason = smtp_reason(exc.code, exc.message)
            if 400 <= exc.code < 500:
                return Delivery(Outcome.RETRY, f"sender refused for now: {reason}")
            return Delivery(Outcome.BROKEN, f"the SMTP server refused our sender address "
                            f"{exc.sender!r} ({reason}); check [email] sender and return_path")
        except aiosmtplib.SMTPResponseException as exc:
            reusable = exc.code != 421
            return classify(exc.code, exc.message, subscriber, self.settings.max_bounces)
        except (aiosmtplib.SMTPNotSupported, ValueError) as exc:  # e.g. no SMTPUTF8 on the relay
            reusable = True
            log.warning("email to %s cannot be sent: %s", subscriber.address, exc)
            return Delivery(Outcome.FAILED, f"cannot send: {exc}", counts_against_recipient=False)
        except (aiosmtplib.SMTPException, OSError) as exc:
            return Delivery(Outcome.RETRY, f"SMTP connection lost: {exc or type(exc).__name__}")
        finally:
            self._pool.release(client, reusable)

    def _envelope_sender(self) -> str:
        return self.settings.return_path or getaddresses([self.settings.sender])[0][1]

    def _unreachable(self, exc: Exception) -> Delivery:
        cert = _cause(exc, ssl.SSLCertVerificationError)
        if cert is not None:
            return Delivery(Outcome.BROKEN, f"the certificate of SMTP server "
                            f"{self.settings.host} is not trusted ({cert.verify_message}); "
                            f"set email.ca_file for a private CA")
        return Delivery(Outcome.RETRY, f"cannot reach SMTP server {self.settings.host}:"
                        f"{self.settings.port}: {exc or type(exc).__name__}")

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()

