"""The chat commands (the pipeline's entrance for subscribers), channel-agnostic: what a user
is told and what changes in the store, against a real store and the local arXiv server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.app import App
from bot.config import Config, Secrets
from bot.faces.commands import (
    Chat,
    ChatThrottle,
    ChatTurns,
    CommandError,
    Commands,
    Reply,
    Verdict,
    subscribe_address,
    unsubscribe_address,
)
from bot.fetch.arxiv import ArxivClient
from bot.sync import sync_config
from storage import keywords as kw_repo
from storage import subscribers as sub_repo
from storage.records import Paper
from storage.store import AsyncStore, Store
from tests.fakes.arxiv_server import FakeArxiv, Fault

NOW = datetime.now(UTC)
CHAT = Chat("telegram", "42")
GROUP = Chat("telegram", "-100500", is_group=True)


def paper(n: int, title: str, *, days_ago: float = 1.0) -> Paper:
    published = NOW - timedelta(days=days_ago)
    return Paper(arxiv_id=f"2511.{n:05d}", version=1, title=title,
                 abstract=f"We study {title.lower()} in depth.", authors=("Ada Lovelace",),
                 published=published, updated=published, primary_category="cs.CV",
                 categories=("cs.CV",))


CORPUS = [paper(i, f"Video anomaly detection part {i}", days_ago=i) for i in range(1, 8)]
CORPUS += [paper(100 + i, f"Graph neural networks {i}", days_ago=i) for i in range(1, 3)]


@pytest.fixture
async def arxiv() -> AsyncIterator[FakeArxiv]:
    async with FakeArxiv(papers=list(CORPUS)) as fake:
        yield fake


@pytest.fixture
def cfg(tmp_path: Path, arxiv: FakeArxiv) -> Config:
    cfg = Config()
    cfg.arxiv.api_url = arxiv.url
    cfg.arxiv.request_interval = 0.0
    cfg.arxiv.keywords = ["Graph Neural Networks"]
    cfg.storage.path = tmp_path / "papers.db"
    cfg.digest.path = None
    return cfg


@pytest.fixture
async def app(cfg: Config) -> AsyncIterator[App]:
    store = await AsyncStore(cfg.storage.path).open()
    client = ArxivClient(cfg.arxiv.api_url, request_interval=0.0, max_attempts=2)
    try:
        yield App(cfg, Secrets(), store, client)
    finally:
        await client.aclose()
        await store.close()


@pytest.fixture
def commands(app: App) -> Commands:
    return Commands(app, channel="telegram", max_subscriptions=3)


async def followed(app: App, chat: Chat = CHAT) -> list[str]:
    def run(store: Store) -> list[str]:
        sub = sub_repo.find(store.db, chat.channel, chat.address, chat.topic)
        return [k.display for k, _ in sub_repo.subscriptions(store.db, sub.id)] if sub else []

    return await app.store.run(run)


async def keyword_count(app: App) -> int:
    return len(await app.store.call(kw_repo.all_keywords))


async def finish(reply: Reply) -> Reply:
    assert reply.followup is not None
    return await reply.followup


# -- /subscribe --------------------------------------------------------------------------------


async def test_first_subscribe_answers_at_once_then_shows_the_three_newest(
    commands: Commands, app: App, arxiv: FakeArxiv
) -> None:
    reply = await commands.handle(CHAT, "subscribe", "  Video   Anomaly Detection ")
    assert "Subscribed to 'Video Anomaly Detection'" in reply.text
    assert 'ti:"video anomaly detection" OR abs:"video anomaly detection"' in reply.text
    assert "first look at arXiv is under way" in reply.text
    assert reply.papers == []
    assert not arxiv.requests, "the reply must not wait for arXiv"
    later = await finish(reply)
    assert [p.title for p in later.papers] == [
        "Video anomaly detection part 1", "Video anomaly detection part 2",
        "Video anomaly detection part 3"]
    assert await followed(app) == ["Video Anomaly Detection"]
    assert reply.announce == "This channel now follows 'Video Anomaly Detection'."


async def test_known_keyword_shows_its_stored_papers_without_polling(
    commands: Commands, arxiv: FakeArxiv
) -> None:
    await finish(await commands.handle(CHAT, "subscribe", "video anomaly detection"))
    polls = len(arxiv.requests)
    reply = await commands.handle(GROUP, "subscribe", "VIDEO anomaly  detection")
    assert reply.followup is None
    assert "Subscribed to 'video anomaly detection'" in reply.text
    assert len(reply.papers) == 3
    assert len(arxiv.requests) == polls
    again = await commands.handle(GROUP, "subscribe", "video anomaly detection")
    assert again.text.startswith("Already subscribed")
    assert again.announce is None


async def test_first_look_reports_arxivs_refusal_and_stops_polling_it(
    commands: Commands, app: App, arxiv: FakeArxiv
) -> None:
    arxiv.push(Fault("error_feed", message="incorrect id format for 1234"))
    later = await finish(await commands.handle(CHAT, "subscribe", "all:weird"))
    assert "arXiv refused 'all:weird': incorrect id format for 1234" in later.text
    kw = (await app.store.call(kw_repo.all_keywords))[-1]
    assert kw.rejected == "incorrect id format for 1234"
    assert kw not in await app.store.call(kw_repo.to_poll)


async def test_first_look_reports_arxiv_unavailable(commands: Commands, arxiv: FakeArxiv) -> None:
    arxiv.push(503, 503, 503, 503)
    later = await finish(await commands.handle(CHAT, "subscribe", "graph transformers"))
    assert later.text.startswith("arXiv did not answer the first look for 'graph transformers'")
    assert later.papers == []


@pytest.mark.parametrize(("text", "says"), [
    ("", "Which keyword?"),
    ("   ", "Which keyword?"),
    ("x" * 500, "2 to 200 characters"),
    ("video\x07anomaly", "U+0007"),
    ('video "anomaly', "quote"),
    ("video “anomaly", "quote"),
    ("a", "2 to 200 characters"),
])
async def test_bad_keywords_get_a_clear_answer_and_change_nothing(
    commands: Commands, app: App, text: str, says: str
) -> None:
    before = await keyword_count(app)
    reply = await commands.handle(CHAT, "subscribe", text)
    assert says in reply.text
    assert reply.followup is None
    assert await followed(app) == []
    assert await keyword_count(app) == before
    assert await app.store.call(sub_repo.find, "telegram", "42") is None


async def test_too_many_keywords_for_one_chat(commands: Commands, app: App) -> None:
    for text in ("alpha beta", "gamma delta", "epsilon zeta"):
        await finish(await commands.handle(CHAT, "subscribe", text))
    reply = await commands.handle(CHAT, "subscribe", "eta theta")
    assert "already follows 3 keywords" in reply.text
    assert len(await followed(app)) == 3
    again = await commands.handle(CHAT, "subscribe", "Alpha Beta")  # no new room needed
    assert again.text.startswith("Already subscribed")


async def test_a_full_instance_refuses_new_keywords(
    commands: Commands, app: App, cfg: Config
) -> None:
    cfg.arxiv.max_keywords = 1
    await finish(await commands.handle(CHAT, "subscribe", "alpha beta"))
    reply = await commands.handle(CHAT, "subscribe", "gamma delta")
    assert "This instance is full" in reply.text
    assert await followed(app) == ["alpha beta"]


async def test_chats_not_allowed_and_non_admins_change_nothing(app: App) -> None:
    commands = Commands(app, channel="telegram", allowed=lambda chat: chat.address == "42")
    reply = await commands.handle(Chat("telegram", "7"), "subscribe", "alpha beta")
    assert "not on its list of allowed chats" in reply.text
    member = Chat("telegram", "42", is_group=True, may_change=False)
    reply = await commands.handle(member, "subscribe", "alpha beta")
    assert reply.text == "Only administrators of this group can change its subscriptions."
    assert (await commands.handle(member, "list", "")).text.startswith("No keywords")
    assert await keyword_count(app) == 0


# -- /unsubscribe, /list, /latest, /help ----------------------------------------------------


async def test_unsubscribe_lists_then_stops_one_then_all(commands: Commands, app: App) -> None:
    assert "Nothing to unsubscribe" in (await commands.handle(CHAT, "unsubscribe", "")).text
    for text in ("alpha beta", "Gamma Delta"):
        await finish(await commands.handle(CHAT, "subscribe", text))
    bare = await commands.handle(CHAT, "unsubscribe", "")
    assert "• Gamma Delta" in bare.text and "• alpha beta" in bare.text
    reply = await commands.handle(CHAT, "unsubscribe", "gamma   DELTA")
    assert reply.text == "Unsubscribed from 'Gamma Delta'."
    missing = await commands.handle(CHAT, "unsubscribe", "omega")
    assert missing.text == "Not subscribed to 'omega'. Followed here: 'alpha beta'."
    assert (await commands.handle(CHAT, "unsubscribe", "all")).text == (
        "Unsubscribed from all 1 keyword.")
    assert await followed(app) == []


async def test_list_shows_keywords_and_queries(commands: Commands) -> None:
    assert "No keywords are followed here" in (await commands.handle(CHAT, "list", "")).text
    await finish(await commands.handle(CHAT, "subscribe", "ti:transformer AND cat:cs.CV"))
    reply = await commands.handle(CHAT, "list", "")
    assert reply.text == ("1 keyword followed here:\n"
                          "• ti:transformer AND cat:cs.CV — ti:transformer AND cat:cs.CV")


async def test_latest_shows_five_newest_of_followed_or_curated_keywords_only(
    commands: Commands, app: App
) -> None:
    await finish(await commands.handle(CHAT, "subscribe", "video anomaly detection"))
    reply = await commands.handle(CHAT, "latest", "Video Anomaly Detection")
    assert reply.text == "The 5 newest papers for 'video anomaly detection':"
    assert [p.arxiv_id for p in reply.papers] == [f"2511.{i:05d}" for i in range(1, 6)]
    assert (await commands.handle(CHAT, "latest", "")).papers == reply.papers  # the only one
    other = await commands.handle(GROUP, "latest", "video anomaly detection")
    assert "is not followed here" in other.text and not other.papers  # private to CHAT
    await app.store.run(lambda s: sync_config(s, app.cfg, NOW))
    curated = await commands.handle(GROUP, "latest", "graph neural networks")
    assert curated.text == "No papers are stored for 'Graph Neural Networks' yet."


async def test_help_start_and_unknown_commands(commands: Commands) -> None:
    help_reply = await commands.handle(CHAT, "help", "")
    assert "/subscribe KEYWORD" in help_reply.text and "/latest KEYWORD" in help_reply.text
    assert (await commands.handle(CHAT, "start", "")).text == help_reply.text
    unknown = await commands.handle(CHAT, "frobnicate", "x")
    assert unknown.text.startswith("Unknown command '/frobnicate'.")
    assert "/subscribe KEYWORD" in unknown.text


@pytest.mark.parametrize(("verb", "answer"), [
    ("list", "• alpha beta"),
    ("start", "/subscribe KEYWORD"),  # what "Restart" sends after unblocking the bot
    ("frobnicate", "Unknown command '/frobnicate'."),
])
async def test_a_chat_that_comes_back_with_any_command_is_active_again(
    commands: Commands, app: App, verb: str, answer: str
) -> None:
    await finish(await commands.handle(CHAT, "subscribe", "alpha beta"))
    sub = await app.store.call(sub_repo.find, "telegram", "42")
    await app.store.call(sub_repo.deactivate, sub.id, "the user blocked the bot")
    reply = await commands.handle(CHAT, verb, "")
    assert reply.text.startswith("Welcome back")
    assert answer in reply.text
    assert (await app.store.call(sub_repo.find, "telegram", "42")).active


# -- the synchronous core (the CLI's) -------------------------------------------------------


async def test_core_functions_refuse_with_command_errors(app: App, cfg: Config) -> None:
    def run(store: Store) -> None:
        result = subscribe_address(store, cfg, "telegram", "-1001", "Alpha  Beta", NOW)
        assert result.created_keyword and result.new_subscription
        assert not subscribe_address(store, cfg, "telegram", "-1001", "alpha beta",
                                     NOW).new_subscription
        with pytest.raises(CommandError, match="Not subscribed to 'omega'"):
            unsubscribe_address(store, "telegram", "-1001", "omega", NOW)
        with pytest.raises(CommandError, match="2 to 200"):
            subscribe_address(store, cfg, "telegram", "-1001", "x", NOW)
        assert unsubscribe_address(store, "telegram", "-1001", None, NOW) == (
            "Unsubscribed from all 1 keyword.")
        with pytest.raises(CommandError, match="Nothing to unsubscribe"):
            unsubscribe_address(store, "telegram", "-1001", None, NOW)

    await app.store.run(run)


def test_throttle_warns_once_then_stays_silent_until_the_minute_passes() -> None:
    clock = [0.0]
    throttle = ChatThrottle(limit=10, period=60, clock=lambda: clock[0])
    assert [throttle.check("42") for _ in range(10)] == [Verdict.OK] * 10
    assert throttle.check("42") is Verdict.WARN
    assert throttle.check("42") is Verdict.DROP
    assert throttle.check("7") is Verdict.OK  # other chats are not affected
    clock[0] = 60.0
    assert throttle.check("42") is Verdict.OK


async def test_one_chat_s_commands_take_turns_while_other_chats_go_at_once() -> None:
    turns = ChatTurns()
    log: list[str] = []
    release = asyncio.Event()

    async def command(chat: str, name: str, wait: bool = False) -> None:
        async with turns.place(chat):
            log.append(f"{name} starts")
            if wait:
                await release.wait()
            log.append(f"{name} ends")

    first = asyncio.create_task(command("42", "subscribe", wait=True))
    second = asyncio.create_task(command("42", "unsubscribe"))
    await asyncio.sleep(0)
    await command("7", "list")  # another chat is not held
    assert log == ["subscribe starts", "list starts", "list ends"]
    release.set()
    await asyncio.gather(first, second)
    assert log[3:] == ["subscribe ends", "unsubscribe starts", "unsubscribe ends"]
    assert turns._lines == {}  # quiet chats are forgotten
