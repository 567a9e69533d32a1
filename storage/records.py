"""The records that flow through the pipeline: arXiv paper, keyword, subscriber, outbox row.

Defined once here and imported by `bot/` and `notifiers/`; storage turns rows into these.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True, slots=True)
class Paper:
    """One arXiv paper at its latest known version. Datetimes are timezone-aware UTC."""

    arxiv_id: str  # without version: "2511.00524" or "astro-ph/0601001"
    version: int
    title: str  # whitespace collapsed
    abstract: str  # whitespace collapsed
    authors: tuple[str, ...]
    published: datetime  # first version's submission time
    updated: datetime  # this version's time
    primary_category: str = ""
    categories: tuple[str, ...] = ()
    comment: str = ""
    journal_ref: str = ""
    doi: str = ""

    @property
    def abs_url(self) -> str:
        """The versionless abstract page: it always shows the newest version."""
        return f"https://arxiv.org/abs/{self.arxiv_id}"

    @property
    def pdf_url(self) -> str:
        return f"https://arxiv.org/pdf/{self.arxiv_id}v{self.version}"

    def authors_short(self) -> str:
        """"A, B, C et al. (N authors)": author lists everywhere they are shown."""
        n = len(self.authors)
        if n <= 3:
            return ", ".join(self.authors)
        return f"{', '.join(self.authors[:3])} et al. ({n} authors)"


@dataclass(frozen=True, slots=True)
class Feed:
    """One page of an arXiv API answer."""

    total_results: int
    start_index: int
    items_per_page: int
    entries: tuple[Paper, ...]
    dropped: int = 0  # entries whose values could not be represented (logged when parsed)

    @property
    def size(self) -> int:
        """Entries arXiv sent, the dropped ones included: what the page-length checks count."""
        return len(self.entries) + self.dropped


@dataclass(frozen=True, slots=True)
class Keyword:
    """A watched keyword: what people typed, its identity and the query sent to arXiv."""

    id: int
    display: str
    canonical: str
    query: str
    in_config: bool = False
    baseline_query: str | None = None
    baseline_max_papers: int | None = None
    last_poll: datetime | None = None
    last_success: datetime | None = None
    last_error: str | None = None
    consecutive_failures: int = 0
    rejected: str | None = None  # arXiv's message when it refused the query; not polled again
    last_total: int | None = None
    empty_since: datetime | None = None  # first unconfirmed empty answer of a baseline


@dataclass(frozen=True, slots=True)
class Subscriber:
    """One recipient on one channel. The same person on two channels is two subscribers."""

    id: int
    channel: str  # "telegram", "slack", "email"
    address: str  # chat id, channel id or email address
    topic: str | None = None  # Telegram forum topic id
    active: bool = True
    inactive_reason: str | None = None
    digest_time: str | None = None  # own cadence ("daily 08:00", "weekly mon 08:00", "instant")
    timezone: str | None = None  # own IANA zone; None: the channel's
    permanent_failures: int = 0
    last_digest_date: str | None = None  # local date (ISO) of the last daily digest sent
    last_digest_week: str | None = None  # local ISO week ("2025-W43") of the last weekly one
    config_digest: str | None = None  # what config.toml last set: applied again only when it
    config_timezone: str | None = None  # changes, so a reader's own later choice stays
    feed_epoch: int = 0  # signed into the private feed URL; raised to revoke every older URL


@dataclass(frozen=True, slots=True)
class DigestMark:
    """The local date (daily) or ISO week (weekly) a digest was sent for: none goes twice."""

    date: str | None = None
    week: str | None = None


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """One (subscriber, paper) notification that must be delivered exactly once."""

    id: int
    subscriber_id: int
    paper: Paper
    keywords: tuple[str, ...]  # display texts of the subscriber's matching keywords
    attempts: int = 0
    created_at: datetime | None = None
    due_at: datetime | None = None  # the cycle end or the digest time it was released for


@dataclass(frozen=True, slots=True)
class AnnouncementRecord:
    """What one expected arXiv announcement (named by its New York date) brought."""

    day: str  # New York date, ISO
    expected_at: datetime
    state: str  # "pending", "seen", "missed" (nothing new anywhere), "failed", "unchecked"
    new_papers: int = 0  # papers from its submission window found after it
    attempts: int = 0  # rounds that tried to read it
    reached: int = 0  # of those, rounds in which arXiv answered
    visible_at: datetime | None = None  # when its papers were first found
    last_attempt: datetime | None = None
    settled_at: datetime | None = None


@dataclass(slots=True)
class PollOutcome:
    """What one keyword's poll found: written in one transaction, then reported."""

    keyword: Keyword
    new_papers: list[Paper] = field(default_factory=list)
    stored: int = 0
    baseline: bool = False
    error: str | None = None
    rejected: bool = False
    waiting_confirmation: bool = False
    changed: bool = False  # something the digest shows may differ
    published: tuple[datetime, ...] = ()  # first-version dates of what arXiv answered
