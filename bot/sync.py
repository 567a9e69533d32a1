"""Start-up sync of config.toml into the store: curated keywords and channel subscriptions.

Suppressions win over config; each conflict is logged once per start.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from datetime import datetime

from bot.config import AddressError, ChannelConfig, Config, Recipient
from bot.deliver.cadence import parse_cadence
from bot.deliver.schedule import due_at_factory
from bot.fetch.keywords import KeywordError, parse_keyword
from storage import keywords as kw_repo
from storage import subscribers as sub_repo
from storage.records import Keyword, Subscriber
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


def sync_config(store: Store, cfg: Config, now: datetime,
                on: Collection[str] = ()) -> list[str]:
    """Returns the suppression conflicts (already logged). Only the channels named in `on` get
    their config subscriptions; channels that are off are left alone."""
    limit = cfg.arxiv.max_keywords
    curated = [keyword_for(store, t, now, limit, f"{cfg.path}: arxiv.keywords[{i}]")
               for i, t in enumerate(cfg.arxiv.keywords)]
    kw_repo.set_config_keywords(store.db, {k.id for k in curated})
    conflicts: list[str] = []
    due_at = due_at_factory(cfg, lambda: now)
    for name, section in cfg.channel_sections().items():
        wanted = _wanted(store, cfg, name, section, now, normalize=name in on)
        if name in on:
            conflicts += sub_repo.sync_config(store.db, name, wanted, now)
            for r in section.recipients():
                _apply_settings(store, name, section.address(r.address), r, due_at)
            moved = sub_repo.retime_defaults(store.db, name, str(parse_cadence(
                section.digest_time)), section.timezone, due_at)
            if moved:
                log.info("[%s] digest_time or timezone changed: %d waiting notifications follow "
                         "it", name, moved)
    for line in conflicts:
        log.warning("config.toml subscribes %s, but the recipient stopped it; not re-created",
                    line)
    return conflicts


def _apply_settings(store: Store, channel: str, address: str, r: Recipient,
                    due_at: Callable[[Subscriber], datetime]) -> None:
    """A recipient's `digest`/`timezone` from config.toml, applied when config's value changed
    since the last start: a cadence the reader chose since then stays theirs."""
    sub = sub_repo.find(store.db, channel, address)
    if sub is None:
        return
    digest = str(parse_cadence(r.digest)) if r.digest else None
    changes: dict[str, str | None] = {}
    for column, mirror, value in (("digest_time", "config_digest", digest),
                                  ("timezone", "config_timezone", r.timezone or None)):
        last = getattr(sub, mirror)
        if value == last:
            continue
        changes[mirror] = value
        if value is not None or getattr(sub, column) == last:  # a removed value: the reader's
            changes[column] = value                            # own choice, if any, stays
    if changes:
        sub_repo.change_settings(store.db, sub.id, changes, due_at)


def _wanted(store: Store, cfg: Config, name: str, section: ChannelConfig, now: datetime, *,
            normalize: bool) -> dict[str, list[Keyword]]:
    """Address → keywords of the recipients config.toml subscribes on one channel."""
    wanted: dict[str, list[Keyword]] = {}
    for r in section.recipients():
        where = f"{cfg.path}: {name}.{r.where}"
        try:
            address = section.address(r.address) if normalize else r.address
        except AddressError as exc:
            raise SyncError(f"{where}.{r.address_key}: {exc.message}") from None
        wanted.setdefault(address, []).extend(
            keyword_for(store, t, now, cfg.arxiv.max_keywords, f"{where}.keywords")
            for t in r.keywords)
    return wanted
