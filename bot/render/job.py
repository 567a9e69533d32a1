"""Feeding the render stage from the store: the curated keywords' windows, in config order, read
once for the Markdown digest, the HTML page and the static Atom feeds."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import Iterator, Sequence
from datetime import datetime
from functools import partial
from pathlib import Path

from bot.config import Config
from bot.fetch.keywords import KeywordError, parse_keyword
from bot.render.digest import (
    DigestRefused,
    DigestSection,
    render_views,
    section_views,
    write_digest,
)
from bot.render.feeds import feeds_problem, write_feed_files
from bot.render.files import write_problem
from bot.render.page import feeds_href, render_page, write_page
from storage import keywords as kw_repo
from storage import papers as paper_repo
from storage.records import Keyword, Paper
from storage.store import AsyncStore, Store


def public_keywords(store: Store, cfg: Config, texts: Sequence[str] | None = None) -> list[Keyword]:
    """Only `[arxiv] keywords` are public (`texts`: some of them), in config order, each once;
    subscriber keywords stay private."""
    found: dict[int, Keyword] = {}
    for text in cfg.arxiv.keywords if texts is None else texts:
        try:
            canonical = parse_keyword(text).canonical
        except KeywordError:
            continue
        kw = kw_repo.by_canonical(store.db, canonical)
        if kw is not None:
            found.setdefault(kw.id, kw)
    return list(found.values())


def digest_sections(store: Store, cfg: Config,
                    texts: Sequence[str] | None = None) -> list[DigestSection]:
    """Each public keyword's window (see public_keywords)."""
    return [DigestSection(keyword=kw.display, note=kw.rejected,
                          papers=paper_repo.window(store.db, kw.id, cfg.arxiv.max_papers))
            for kw in public_keywords(store, cfg, texts)]


def public_newest(store: Store, cfg: Config, limit: int) -> list[tuple[Paper, list[str]]]:
    """The newest papers of every public keyword together (all.atom), without reading every
    window whole."""
    ids = [kw.id for kw in public_keywords(store, cfg)]
    return paper_repo.newest_of(store.db, ids, limit)


def write_digest_sync(store: Store, cfg: Config, now: datetime) -> list[Path]:
    """Every file of the render stage from one read of the store; the paths that changed."""
    return write_outputs(digest_sections(store, cfg), cfg, now)


async def write_digest_from_store(store: AsyncStore, cfg: Config, now: datetime) -> list[Path]:
    """Read on the store's thread, render and write on a worker thread (off the event loop)."""
    sections = await store.run(lambda s: digest_sections(s, cfg))
    return await asyncio.to_thread(write_outputs, sections, cfg, now)


def outputs(cfg: Config) -> list[Path]:
    """The files the render stage keeps ([digest] path, html_path; the feeds_dir folder)."""
    d = cfg.digest
    return [p for p in (d.path, d.html_path, d.feeds_dir) if p is not None]


def output_problem(cfg: Config, path: Path) -> str | None:
    """Why one of `outputs` cannot be written, in the operator's words; None when it can."""
    d = cfg.digest
    if path == d.feeds_dir:
        return feeds_problem(path)
    if path == d.html_path:
        return write_problem(path, what="the digest page", key="html_path")
    return write_problem(path, what="the digest", key="path")


def write_outputs(sections: Sequence[DigestSection], cfg: Config, now: datetime) -> list[Path]:
    """The Markdown digest, the HTML page and the feed files from the same rows, each written
    whole or left as it was; the paths that changed. One that cannot be written does not keep
    the others from being written: its refusal is raised after."""
    with gc_paused():
        return _write_outputs(sections, cfg, now)


def _write_outputs(sections: Sequence[DigestSection], cfg: Config,
                   now: datetime) -> list[Path]:
    views = section_views(sections, cfg.arxiv.max_papers, cfg.digest.abstract_chars)
    changed: list[Path] = []
    refused: list[DigestRefused] = []
    d = cfg.digest
    if d.path is not None:
        render = partial(render_views, views, updated=now.date(), max_papers=cfg.arxiv.max_papers,
                         abstract_chars=d.abstract_chars)
        with _collect(refused):
            if write_digest(d.path, render, max_bytes=d.max_bytes):
                changed.append(d.path)
    if d.html_path is not None:
        with _collect(refused):
            html = render_page(views, updated=now.date(), max_papers=cfg.arxiv.max_papers,
                               feeds=feeds_href(d.html_path, d.feeds_dir, cfg.web.public_url))
            if write_page(d.html_path, html):
                changed.append(d.html_path)
    if d.feeds_dir is not None:
        with _collect(refused):
            if write_feed_files(d.feeds_dir, sections, cfg.web.public_url):
                changed.append(d.feeds_dir)
    if refused:
        raise refused[0]
    return changed


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Python's cyclic garbage collector waits while a render makes its objects (some 200,000
    rows, cells and strings for 100 keywords, none of them cyclic garbage): it would otherwise
    walk every live object of the process several times per render (5-10 % of its time)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@contextlib.contextmanager
def _collect(refused: list[DigestRefused]) -> Iterator[None]:
    try:
        yield
    except DigestRefused as exc:
        refused.append(exc)
