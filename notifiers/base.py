"""The one small interface every channel implements (deliver stage), with its limits as data.

The dispatcher asks a notifier to pack a subscriber's due rows into messages (through the
shared packer) and to send each message; the answer says what to do with the rows.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar

from storage.records import OutboxRow, Subscriber


class Outcome(StrEnum):
    SENT = "sent"  # the service took it: mark the rows sent
    RETRY = "retry"  # transient: try these rows again after `retry_after` seconds
    FAILED = "failed"  # this message can never go (too long, refused content)
    GONE = "gone"  # the recipient is gone (blocked bot, unknown channel, hard bounce)
    PAUSED = "paused"  # the recipient cannot take messages until it acts (bot not in channel)
    BROKEN = "broken"  # our credentials are refused: stop this channel, keep the rows


@dataclass(frozen=True)
class Delivery:
    outcome: Outcome
    reason: str = ""
    retry_after: float | None = None
    counts_against_recipient: bool = True  # FAILED: False for content/policy refusals (552, 554)
    rate_limited: bool = False  # RETRY: the service asked us to slow down; not an attempt
    whole_address: bool = False  # GONE: every subscriber at the address (all forum topics)


@dataclass(frozen=True)
class Limits:
    """What one message may hold and how fast a channel may send, declared per notifier."""

    max_chars: int | None = None  # per message, in the notifier's own unit
    max_parts: int | None = None  # e.g. Slack blocks per message
    max_part_chars: int | None = None  # e.g. characters per Slack section
    max_papers: int | None = None  # papers per message
    per_recipient_interval: float = 0.0  # seconds between two messages to one recipient
    overall_rate: float | None = None  # messages per second for the whole channel
    rate_window: float | None = None  # seconds overall_rate is counted over; None: even spacing
    max_in_flight: int = 1

    def recipient_interval(self, address: str) -> float:
        """Seconds between two messages to this recipient."""
        return self.per_recipient_interval


@dataclass(frozen=True)
class Message:
    """One message to send: the rows it covers (marked together) and the channel's payload."""

    rows: tuple[OutboxRow, ...]
    payload: Any
    part: int = 1
    parts: int = 1

    @property
    def row_ids(self) -> list[int]:
        return [r.id for r in self.rows]


class Notifier(ABC):
    channel: ClassVar[str]
    limits: Limits

    async def start(self) -> None:
        """Open connections; raise with an operator message when credentials are refused."""

    async def close(self) -> None:
        """Release connections; called once at shutdown."""

    @abstractmethod
    def pack(self, subscriber: Subscriber, rows: Sequence[OutboxRow]) -> list[Message]:
        """Split the due rows into messages on paper boundaries, within `limits`."""

    @abstractmethod
    async def send(self, subscriber: Subscriber, message: Message) -> Delivery:
        """Deliver one message; never raises for service answers, only reports them."""

    def ready_in(self, subscriber: Subscriber) -> float:
        """Seconds until a message to this recipient would not wait on its own limit (Telegram's
        1/s per chat, Slack's per channel). The dispatcher serves others meanwhile."""
        return 0.0
