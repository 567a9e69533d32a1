"""/digest and /timezone, channel-agnostic: what a reader is told, what changes in the store (and
what a refusal leaves alone), the group admin rule, /list and /help naming the settings."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.app import App
from bot.config import Config, Secrets
from bot.deliver.schedule import due_at_factory
from bot.faces.commands import Chat, Commands, help_text, subscribe_address
from bot.fetch.arxiv import ArxivClient
from storage import outbox, polls
from storage import subscribers as sub_repo
from storage.records import Paper, Subscriber
from storage.store import AsyncStore
from tests.conftest import Clock

CHAT = Chat("telegram", "42")
MEMBER = Chat("telegram", "-100500", is_group=True, may_change=False)


@pytest.fixture
def cfg(tmp_path: Path) -> Config:
    cfg = Config()
    cfg.arxiv.api_url = "http://127.0.0.1:9/never-asked"
    cfg.arxiv.keywords = []
    cfg.storage.path = tmp_path / "papers.db"
    cfg.digest.path = None
    return cfg


@pytest.fixture
def clock() -> Clock:
    return Clock(datetime(2025, 11, 3, 6, 30, tzinfo=UTC))  # Monday 15:30 in Tokyo


@pytest.fixture
async def app(cfg: Config, clock: Clock) -> AsyncIterator[App]:
    store = await AsyncStore(cfg.storage.path).open()
    client = ArxivClient(cfg.arxiv.api_url, request_interval=0.0, max_attempts=1)
    woken: list[int] = []
    try:
        app = App(cfg, Secrets(), store, client, now=clock.now)
        app.wake_dispatcher = lambda: woken.append(1)
        app.woken = woken  # type: ignore[attr-defined]
        yield app
    finally:
        await client.aclose()
        await store.close()


@pytest.fixture
def commands(app: App) -> Commands:
    return Commands(app, channel="telegram")


async def stored(app: App, chat: Chat = CHAT) -> Subscriber | None:
    return await app.store.call(sub_repo.find, chat.channel, chat.address, chat.topic)


async def test_digest_alone_shows_the_channels_default_and_how_to_change_it(
        commands: Commands, app: App) -> None:
    reply = await commands.handle(CHAT, "digest", "")
    assert reply.text == (
        "Papers arrive here as soon as a poll finds new papers (this channel's default). "
        "Change it with /digest instant, /digest daily 08:00 or /digest weekly mon 08:00, and "
        "the zone with /timezone Europe/Berlin.")
    assert await stored(app) is None  # showing creates nothing


async def test_timezone_then_daily_digest_is_stored_and_confirmed_in_local_time(
        commands: Commands, app: App) -> None:
    reply = await commands.handle(CHAT, "timezone", "tokyo")
    assert reply.text.startswith("Done: papers arrive here as soon as a poll finds new papers")
    assert reply.text.endswith("Time zone: Asia/Tokyo.")
    reply = await commands.handle(CHAT, "digest", "Daily 9:00")
    assert reply.text == ("Done: papers arrive here as one digest a day at 09:00 (Asia/Tokyo "
                          "time); the next on Tuesday 4 November at 09:00.")
    sub = await stored(app)
    assert sub is not None and (sub.digest_time, sub.timezone) == ("daily 09:00", "Asia/Tokyo")
    reply = await commands.handle(CHAT, "digest", "weekly mon 16:00")
    assert reply.text.endswith("as one digest a week, Monday at 16:00 (Asia/Tokyo time); the "
                               "next on Monday 3 November at 16:00.")
    assert reply.announce == ("Papers now arrive in this channel as one digest a week, Monday "
                              "at 16:00 (Asia/Tokyo time).")
    shown = await commands.handle(CHAT, "timezone", "")
    assert shown.text.startswith("Papers arrive here as one digest a week, Monday at 16:00 "
                                 "(Asia/Tokyo time);")


@pytest.mark.parametrize(("verb", "arg", "says"), [
    ("digest", "hourly", "'hourly' is not a cadence; use instant, daily HH:MM"),
    ("digest", "daily 24:00", "'24:00' is not a time of day like 08:00"),
    ("digest", "weekly someday 08:00", "'someday' is not a day"),
    ("timezone", "Berln", "'Berln' is not a time zone I know. Did you mean Europe/Berlin?"),
    ("timezone", "Mars/Olympus", "'Mars/Olympus' is not a time zone I know."),
    ("timezone", "x" * 3000, "is not a time zone I know"),
])
async def test_a_bad_value_is_answered_and_changes_nothing(
        commands: Commands, app: App, verb: str, arg: str, says: str) -> None:
    await commands.handle(CHAT, "digest", "daily 08:00")
    before = await stored(app)
    reply = await commands.handle(CHAT, verb, arg)
    assert says in reply.text
    assert len(reply.text) < 300
    assert await stored(app) == before
    fresh = Chat("telegram", "77")
    await commands.handle(fresh, verb, arg)
    assert await stored(app, fresh) is None


async def test_default_goes_back_to_the_channels_setting(
        commands: Commands, app: App, cfg: Config) -> None:
    cfg.telegram.digest_time = "daily 07:30"
    await commands.handle(CHAT, "digest", "instant")
    reply = await commands.handle(CHAT, "digest", "default")
    assert "as one digest a day at 07:30 (UTC time) (this channel's default)" in reply.text
    sub = await stored(app)
    assert sub is not None and sub.digest_time is None


async def test_in_groups_only_admins_change_the_settings_but_anyone_sees_them(
        commands: Commands, app: App) -> None:
    for verb, arg in (("digest", "weekly mon 08:00"), ("timezone", "Europe/Berlin")):
        reply = await commands.handle(MEMBER, verb, arg)
        assert reply.text == "Only administrators of this group can change its subscriptions."
    assert (await commands.handle(MEMBER, "digest", "")).text.startswith("Papers arrive here")
    assert await stored(app, MEMBER) is None


async def test_list_shows_keywords_cadence_and_zone(commands: Commands, app: App) -> None:
    await app.store.run(lambda s: subscribe_address(s, app.cfg, "telegram", "42",
                                                    "graph neural networks", app.now()))
    await commands.handle(CHAT, "timezone", "Europe/Berlin")
    await commands.handle(CHAT, "digest", "weekly fri 18:00")
    reply = await commands.handle(CHAT, "list", "")
    assert reply.text == (
        "1 keyword followed here:\n"
        '• graph neural networks — ti:"graph neural networks" OR abs:"graph neural networks"')
    assert reply.note.startswith(  # after the keywords, with arXiv's rhythm
        "Papers arrive here as one digest a week, Friday at 18:00 (Europe/Berlin time); the "
        "next on Friday 7 November at 18:00.\narXiv announces")


async def test_a_change_moves_the_papers_already_waiting_and_wakes_the_dispatcher(
        commands: Commands, app: App, clock: Clock) -> None:
    result = await app.store.run(lambda s: subscribe_address(
        s, app.cfg, "telegram", "42", "graph neural networks", clock.now()))
    kw = result.keyword
    await app.store.call(polls.commit_poll, kw, [], baseline=True, now=clock.now(),
                         max_papers=100, notify_floor=clock.now(), total_results=0)
    await commands.handle(CHAT, "digest", "daily 08:00")
    news = [Paper(arxiv_id=f"2511.0000{n}", version=1, title="t", abstract="a", authors=("A",),
                  published=clock.now(), updated=clock.now()) for n in (1, 2)]
    await app.store.call(polls.commit_poll, kw, news, baseline=False, now=clock.now(),
                         max_papers=100, notify_floor=clock.now() - timedelta(days=14),
                         total_results=2)
    await app.store.call(outbox.release, clock.now(), due_at_factory(app.cfg, clock.now))
    sub = await stored(app)
    assert sub is not None
    assert await app.store.call(outbox.due_rows, sub.id, clock.now()) == []
    woken = len(app.woken)  # type: ignore[attr-defined]
    reply = await commands.handle(CHAT, "digest", "instant")
    assert reply.text == ("Done: papers arrive here as soon as a poll finds new papers. "
                          "2 papers already waiting follow this setting.")
    assert len(app.woken) == woken + 1  # type: ignore[attr-defined]
    assert len(await app.store.call(outbox.due_rows, sub.id, clock.now())) == 2


def test_help_lists_digest_and_timezone() -> None:
    text = help_text()
    assert "/digest — when papers arrive: /digest instant, /digest daily 08:00" in text
    assert "/timezone ZONE — the zone of those times, e.g. /timezone Europe/Berlin" in text
    assert "video anomaly detection -surveillance" in text
