"""The running daemon's shared context, handed to every face (Telegram, Slack, email, web).

A face is one way people reach the service; it may bring a notifier (deliver stage), command
handling, and HTTP routes on the daemon's web server.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from bot.config import Config, Secrets
from bot.fetch.arxiv import ArxivClient
from bot.logs import StoreFaults
from bot.poll.clock import utcnow
from bot.poll.keyword import PollSettings, poll_keyword
from notifiers.base import Notifier
from storage.records import Keyword, PollOutcome
from storage.store import AsyncStore

if TYPE_CHECKING:  # aiohttp's server is imported only where the web server starts
    from aiohttp import web


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
    serves_web: bool = False  # the [web] server is listening: feed URLs can be handed out
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
