"""The running daemon's shared context, handed to every face (Telegram, Slack, email, web).

A face is one way people reach the service; it may bring a notifier (deliver stage), command
handling, and HTTP routes on the daemon's web server.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

from aiohttp import web

from bot.config import Config, Secrets
from bot.fetch.arxiv import ArxivClient
from bot.logs import StoreFaults
from bot.poll.keyword import PollSettings, poll_keyword
from notifiers.base import Notifier
from storage.records import Keyword, PollOutcome
from storage.store import AsyncStore


def _clock() -> Callable[[], datetime]:
    """The wall clock, or one that starts at $DAILY_PAPERS_NOW (ISO time, UTC if no offset)
    and runs on from there: how a schedule is tried on a chosen day (and end-to-end tests
    show a Saturday without waiting for one)."""
    start = os.environ.get("DAILY_PAPERS_NOW", "").strip()
    if not start:
        return lambda: datetime.now(UTC)
    try:
        when = datetime.fromisoformat(start)
    except ValueError:
        raise SystemExit(f"error: DAILY_PAPERS_NOW must be an ISO time, not {start!r}") from None
    when = when if when.tzinfo else when.replace(tzinfo=UTC)
    began = time.monotonic()
    return lambda: (when + timedelta(seconds=time.monotonic() - began)).astimezone(UTC)


_NOW = _clock()


def utcnow() -> datetime:
    return _NOW()


@dataclass
class App:
    cfg: Config
    secrets: Secrets
    store: AsyncStore
    client: ArxivClient
    now: Callable[[], datetime] = utcnow
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    wake_dispatcher: Callable[[], None] = lambda: None
    warnings: list[str] = field(default_factory=list)
    unsubscribe_secret: str = ""
    store_faults: StoreFaults = field(
        default_factory=lambda: StoreFaults(logging.getLogger("bot.store")))

    @property
    def poll_settings(self) -> PollSettings:
        return PollSettings(self.cfg.arxiv.max_papers, self.cfg.arxiv.notify_max_age_days)

    async def poll_now(self, kw: Keyword) -> PollOutcome:
        """A just-subscribed keyword's first poll, ahead of the cycle's queue (priority lane).

        Raises the arXiv errors (ArxivRejected, ArxivUnavailable) for the caller to report.
        """
        return await poll_keyword(self.client, self.store, kw, self.poll_settings, self.now,
                                  interactive=True)


class Face(Protocol):
    """One channel's presence in the daemon."""

    name: str
    notifier: Notifier | None

    def routes(self) -> list[web.RouteDef]:
        """HTTP routes this face serves on the [web] server (may be empty)."""
        ...

    async def start(self, app: App) -> None: ...

    async def stop(self) -> None: ...
