"""Start-up sync of config.toml into the store: curated keywords and channel subscriptions.

Suppressions win over config; each conflict is logged once per start.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from bot.config import Config
from bot.fetch.keywords import KeywordError, parse_keyword
from storage import keywords as kw_repo
from storage import subscribers as sub_repo
from storage.records import Keyword
from storage.store import Store

log = logging.getLogger(__name__)


class SyncError(Exception):
    """A keyword in config.toml is invalid: the operator must fix the file."""


def keyword_for(store: Store, text: str, now: datetime, max_keywords: int,
                where: str) -> Keyword:
    try:
        parsed = parse_keyword(text)
    except KeywordError as exc:
        raise SyncError(f"{where}: keyword {text!r}: {exc.message}") from None
    kw, _ = kw_repo.ensure(store.db, parsed.display, parsed.canonical, parsed.query, now,
                           max_keywords=max_keywords)
    return kw


def sync_config(store: Store, cfg: Config, now: datetime, *, slack_on: bool = False,
                email_on: bool = False,
                email_address: Callable[[str], str] | None = None) -> list[str]:
    """Returns the suppression conflicts (already logged). Channels that are off are left alone."""
    limit = cfg.arxiv.max_keywords
    curated = [keyword_for(store, t, now, limit, f"{cfg.path}: arxiv.keywords[{i}]")
               for i, t in enumerate(cfg.arxiv.keywords)]
    kw_repo.set_config_keywords(store.db, {k.id for k in curated})
    conflicts: list[str] = []
    slack: dict[str, list[Keyword]] = {}
    for i, ch in enumerate(cfg.slack.channels):
        where = f"{cfg.path}: slack.channels[{i}].keywords"
        slack.setdefault(ch.channel, []).extend(
            keyword_for(store, t, now, limit, where) for t in ch.keywords)
    if slack_on:
        conflicts += sub_repo.sync_config(store.db, "slack", slack, now)
    email: dict[str, list[Keyword]] = {}
    for i, sub in enumerate(cfg.email.subscribers):
        where = f"{cfg.path}: email.subscribers[{i}]"
        address = email_address(sub.address) if email_address else sub.address
        email.setdefault(address, []).extend(
            keyword_for(store, t, now, limit, where) for t in sub.keywords)
    if email_on:
        conflicts += sub_repo.sync_config(store.db, "email", email, now)
    for line in conflicts:
        log.warning("config.toml subscribes %s, but the recipient stopped it; not re-created",
                    line)
    return conflicts

