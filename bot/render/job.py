"""Feeding the digest writer from the store: the curated keywords' windows, in config order."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime

from bot.config import Config
from bot.fetch.keywords import KeywordError, parse_keyword
from bot.render.digest import DigestSection, update_digest
from storage import keywords as kw_repo
from storage import papers as paper_repo
from storage.store import AsyncStore, Store


def digest_sections(store: Store, cfg: Config,
                    texts: Sequence[str] | None = None) -> list[DigestSection]:
    """Only `[arxiv] keywords` are public (`texts`: some of them); subscriber keywords stay
    private."""
    sections = []
    seen: set[int] = set()
    for text in cfg.arxiv.keywords if texts is None else texts:
        try:
            canonical = parse_keyword(text).canonical
        except KeywordError:
            continue
        kw = kw_repo.by_canonical(store.db, canonical)
        if kw is None or kw.id in seen:
            continue
        seen.add(kw.id)
        window = paper_repo.window(store.db, kw.id, cfg.arxiv.max_papers)
        sections.append(DigestSection(keyword=kw.display, papers=window, note=kw.rejected))
    return sections


def write_digest_sync(store: Store, cfg: Config, now: datetime) -> bool:
    assert cfg.digest.path is not None
    return update_digest(
        cfg.digest.path, digest_sections(store, cfg), updated=now.date(),
        max_papers=cfg.arxiv.max_papers, abstract_chars=cfg.digest.abstract_chars,
        max_bytes=cfg.digest.max_bytes,
    )


async def write_digest_from_store(store: AsyncStore, cfg: Config, now: datetime) -> bool:
    """Read on the store's thread, render and write on a worker thread (off the event loop)."""
    sections = await store.run(lambda s: digest_sections(s, cfg))
    assert cfg.digest.path is not None
    return await asyncio.to_thread(
        update_digest, cfg.digest.path, sections, updated=now.date(),
        max_papers=cfg.arxiv.max_papers, abstract_chars=cfg.digest.abstract_chars,
        max_bytes=cfg.digest.max_bytes,
    )
