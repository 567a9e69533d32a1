"""End to end through the Slack face: the real `daily-papers run` process, signed slash commands
on its web server (or Socket Mode), digests posted to the fake Slack, papers from the fake arXiv.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.faces.slack import WORKING
from storage.records import Paper
from tests.fakes import zygote
from tests.fakes.arxiv_server import FakeArxiv
from tests.fakes.daemon import e2e_config_head, free_port
from tests.fakes.slack_server import (
    FakeSlack,
    SlackPost,
    blocks_refusal,
    slack_escape,
    slack_signature,
)

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
SECRET = "8f14e45fceea167a5a36dedd4bea2543"
CHANNEL = "C0PAPERS1"
KEYWORD = "vision language model"


def new_paper(n: int, *, title: str | None = None) -> Paper:
    published = datetime.now(UTC) - timedelta(minutes=n)
    return Paper(arxiv_id=f"2599.{n:05d}", version=1,
                 title=title or f"A Vision Language Model That Reads Paper {n}",
                 abstract=f"We present vision language model number {n}. It reads $x_i^*$.",
                 authors=("Ada Lovelace", "Alan Turing"), published=published,
                 updated=published, primary_category="cs.CV", categories=("cs.CV",))


def digests(fake: FakeSlack, channel: str = CHANNEL) -> list[SlackPost]:
    """Digest messages (with a header block), not command announcements."""
    return [p for p in fake.posts_to(channel)
            if p.blocks and p.blocks[0]["type"] == "header"]


def papers_shown(posts: list[SlackPost]) -> list[str]:
    return [b["text"]["text"].split("|", 1)[0].removeprefix("<") for p in posts
            for b in p.blocks or [] if b["type"] == "section"]


@dataclass
class Daemon:
    """The running `python -m bot run` process and what it logged."""

    proc: zygote.Process
    url: str
    lines: list[str] = field(default_factory=list)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def _pump(self) -> None:
        assert self.proc.stderr is not None
        async for raw in self.proc.stderr:
            self.lines.append(raw.decode(errors="replace").rstrip())
            self._changed.set()
        self._changed.set()

    async def wait_log(self, needle: str, count: int = 1, timeout: float = 20) -> None:
        """Until `count` logged lines contain `needle`."""
        async with asyncio.timeout(timeout):
            while sum(needle in line for line in self.lines) < count:
                if self.proc.returncode is not None:
                    raise AssertionError("daemon exited:\n" + "\n".join(self.lines))
                self._changed.clear()
                await self._changed.wait()

    async def cycles(self, n: int) -> None:
        """Wait for `n` more poll cycles to end."""
        done = sum("cycle:" in line for line in self.lines)
        await self.wait_log("cycle:", done + n)

    async def stop(self) -> int:
        if self.proc.returncode is None:
            self.proc.terminate()
        async with asyncio.timeout(60):
            return await self.proc.wait()


def write_config(tmp: Path, arxiv: FakeArxiv, slack: FakeSlack, port: int,
                 slack_extra: str = "") -> Path:
    path = tmp / "config.toml"
    path.write_text(f"""{e2e_config_head(arxiv.url)}
[slack]
api_url = "{slack.api_url}"
{slack_extra}

[web]
host = "127.0.0.1"
port = {port}
public_url = "http://127.0.0.1:{port}"
""", encoding="utf-8")
    return path


@contextlib.asynccontextmanager
async def daemon(tmp: Path, arxiv: FakeArxiv, slack: FakeSlack, *, http: bool = True,
                 socket_mode: bool = False, slack_extra: str = "",
                 bot_token: str | None = None) -> AsyncIterator[Daemon]:
    port = free_port()
    config = write_config(tmp, arxiv, slack, port, slack_extra)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SLACK_", "TELEGRAM_", "SMTP_", "DAILY_PAPERS_"))}
    env["SLACK_BOT_TOKEN"] = bot_token or slack.bot_token
    if http:
        env["SLACK_SIGNING_SECRET"] = SECRET
    if socket_mode:
        env["SLACK_APP_TOKEN"] = slack.app_token
    env["PYTHONPATH"] = str(ROOT)
    proc = await zygote.spawn("bot", "--config", str(config), "run", cwd=tmp, env=env,
                              stdin=zygote.DEVNULL, stdout=zygote.DEVNULL, stderr=zygote.PIPE)
    d = Daemon(proc, f"http://127.0.0.1:{port}")
    pump = asyncio.create_task(d._pump())
    try:
        await d.wait_log("web server listening")
        try:
            yield d
        finally:
            print("\n".join(d.lines))  # shown by pytest when the test fails
        assert await d.stop() == 0, "\n".join(d.lines)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await pump


async def command(d: Daemon, fake: FakeSlack, cmd: str, text: str = "", *,
                  channel: str = CHANNEL, team_id: str | None = None,
                  timestamp: int | None = None,
                  sign: Callable[[bytes, dict[str, str]], dict[str, str]] | None = None,
                  ) -> tuple[int, Any]:
    body, headers = fake.signed_command_request(
        SECRET, cmd, slack_escape(text), channel_id=channel, team_id=team_id or fake.team_id,
        timestamp=timestamp)
    if sign is not None:
        headers = sign(body, headers)
    async with aiohttp.ClientSession() as session, session.post(
            f"{d.url}/slack/events", data=body, headers=headers) as resp:
        json_reply = resp.status == 200 and resp.content_type == "application/json"
        payload = await resp.json(content_type=None) if json_reply else await resp.text()
        return resp.status, payload


async def bot_joined(d: Daemon, fake: FakeSlack, channel: str = CHANNEL) -> int:
    """The Events API's member_joined_channel for the bot itself, signed like Slack does."""
    body = json.dumps({
        "token": "legacy", "team_id": fake.team_id, "api_app_id": "A0001",
        "type": "event_callback", "event_id": "Ev0001", "event_time": int(time.time()),
        "event": {"type": "member_joined_channel", "user": fake.user_id, "channel": channel,
                  "channel_type": "C", "team": fake.team_id, "event_ts": f"{time.time():.6f}"},
    }).encode()
    ts = str(int(time.time()))
    headers = {"Content-Type": "application/json", "X-Slack-Request-Timestamp": ts,
               "X-Slack-Signature": slack_signature(SECRET, ts, body)}
    async with aiohttp.ClientSession() as session, session.post(
            f"{d.url}/slack/events", data=body, headers=headers) as resp:
        return resp.status


@pytest.fixture
async def fakes() -> AsyncIterator[tuple[FakeArxiv, FakeSlack]]:
    async with FakeArxiv(papers=FakeArxiv.seed_corpus()) as arxiv, FakeSlack() as slack:
        yield arxiv, slack


async def subscribed(d: Daemon, fake: FakeSlack, arxiv: FakeArxiv) -> None:
    """/subscribe, then wait until the first look (the baseline) is committed."""
    status, ack = await command(d, fake, "/subscribe", KEYWORD)
    assert status == 200, ack
    assert ack["response_type"] == "ephemeral"
    assert "Subscribed to 'vision language model'" in ack["text"]
    await fake.wait_for(lambda: len(fake.responses) >= 1, timeout=60)
    assert "First look done for 'vision language model'" in fake.responses[0].body["text"]


async def test_subscribe_list_and_exactly_one_digest(tmp_path: Path, fakes: Any) -> None:
    arxiv, fake = fakes
    async with daemon(tmp_path, arxiv, fake) as d:
        await subscribed(d, fake, arxiv)
        await fake.wait_posts(1, CHANNEL)  # the one-line announcement
        announce = fake.posts_to(CHANNEL)[0]
        assert announce.text == "This channel now follows 'vision language model'. (<@U1>)"

        status, listing = await command(d, fake, "/papers", "list")
        assert status == 200
        assert listing["text"].startswith("1 keyword followed here:\n• vision language model")

        arxiv.add(new_paper(1))
        await fake.wait_for(lambda: len(digests(fake)) >= 1, timeout=60)
        await d.cycles(2)  # two more cycles: nothing is sent twice
        (digest,) = digests(fake)
        assert digest.blocks[0]["text"]["text"] == "1 new paper · vision language model"
        assert papers_shown([digest]) == ["https://arxiv.org/abs/2599.00001"]
        assert digest.unfurl_links is False and digest.unfurl_media is False
        assert digest.text == "1 new paper · vision language model"


async def test_forged_stale_and_oversized_requests_change_nothing(tmp_path: Path,
                                                                   fakes: Any) -> None:
    arxiv, fake = fakes
    async with daemon(tmp_path, arxiv, fake) as d:
        def forged(body: bytes, headers: dict[str, str]) -> dict[str, str]:
            return {**headers, "X-Slack-Signature": "v0=" + "0" * 64}

        assert (await command(d, fake, "/subscribe", KEYWORD, sign=forged))[0] == 401
        stale = int(time.time()) - 6 * 60
        assert (await command(d, fake, "/subscribe", KEYWORD, timestamp=stale))[0] == 401
        status, _ = await command(d, fake, "/subscribe", KEYWORD + " " + "x" * 100_000)
        assert status == 413

        status, listing = await command(d, fake, "/list")
        assert status == 200 and listing["text"].startswith("No keywords are followed here")
        assert fake.posts == [] and arxiv.requests == []
        _, help_reply = await command(d, fake, "/papers")
        assert "/papers alone shows this help" in help_reply["text"]


async def test_sixty_new_papers_arrive_whole(tmp_path: Path, fakes: Any) -> None:
    arxiv, fake = fakes
    async with daemon(tmp_path, arxiv, fake) as d:
        await subscribed(d, fake, arxiv)
        arxiv.add(*(new_paper(n) for n in range(1, 61)))
        await fake.wait_for(lambda: len(papers_shown(digests(fake))) >= 60, timeout=30)
        posts = digests(fake)
    assert sorted(papers_shown(posts)) == [f"https://arxiv.org/abs/2599.{n:05d}"
                                           for n in range(1, 61)]
    first, *rest = posts
    assert rest and first.thread_ts is None and {p.thread_ts for p in rest} == {first.ts}
    assert first.blocks[0]["text"]["text"] == "60 new papers · vision language model"
    assert all(len(p.blocks) <= 50 for p in posts)


async def test_answers_that_are_not_json_still_get_the_command_its_reply(
        tmp_path: Path, fakes: Any) -> None:
    """Slack's edge answering an HTML 502 or a plain-text 405 is a passing fault: the command
    is answered as usual, and what could not be posted is posted later."""
    arxiv, fake = fakes
    async with daemon(tmp_path, arxiv, fake) as d:
        fake.not_json(502, method="auth.test")  # bolt's own first look at the token
        status, ack = await command(d, fake, "/list")
        assert status == 200, ack
        assert "cannot reach Slack to check this workspace" in str(ack)

        fake.not_json(502, method="conversations.info")
        fake.not_json(405, content_type="text/plain", method="chat.postMessage")
        status, ack = await command(d, fake, "/subscribe", KEYWORD)
        assert status == 200, ack
        assert "Subscribed to 'vision language model'" in ack["text"]

        fake.not_json(405, content_type="text/plain", method="conversations.info")
        status, ack = await command(d, fake, "/subscribe", "graph neural networks")
        assert status == 200, ack
        assert "Subscribed to 'graph neural networks'" in ack["text"]

        fake.not_json(502, method="chat.postMessage", channel=CHANNEL)
        arxiv.add(new_paper(1))
        await fake.wait_for(lambda: len(digests(fake)) >= 1, timeout=30)
        assert papers_shown(digests(fake)) == ["https://arxiv.org/abs/2599.00001"]
        refused = [c.status for c in fake.calls_to("chat.postMessage") if c.error]
        assert 502 in refused and 405 in refused
    assert not any("Traceback" in line for line in d.lines)


async def test_a_reply_longer_than_one_message_continues_through_response_url(
        tmp_path: Path, fakes: Any) -> None:
    """/latest with five papers as large as a reply shows them: the ack holds what fits in one
    message, the rest follows through the command's response_url, all within Slack's limits."""
    arxiv, fake = fakes
    async with daemon(tmp_path, arxiv, fake) as d:
        await subscribed(d, fake, arxiv)
        arxiv.add(*(replace(new_paper(n, title=f"Vision Language Model {n} " + "long " * 390),
                            abstract="A vision language model. " + "More words. " * 100)
                    for n in range(1, 6)))
        await fake.wait_for(lambda: len(papers_shown(digests(fake))) >= 5, timeout=30)
        answered = len(fake.responses)
        status, ack = await command(d, fake, "/latest", KEYWORD)
        assert status == 200, ack
        assert ack["text"].startswith("The 5 newest papers for 'vision language model'")
        await fake.wait_for(lambda: len(fake.responses) > answered)
        bodies = [ack, *(r.body for r in fake.responses[answered:])]
    assert all(blocks_refusal(body["blocks"]) is None for body in bodies)
    links = [b["text"]["text"].split("|", 1)[0] for body in bodies for b in body["blocks"]
             if b["type"] == "section" and b["text"]["text"].startswith("<https://")]
    assert links == [f"<https://arxiv.org/abs/2599.{n:05d}" for n in range(1, 6)]


async def test_a_command_is_acknowledged_in_time_while_another_process_holds_the_store(
        tmp_path: Path, fakes: Any) -> None:
    """Slack gives up on an ack after 3 s (bolt then answers 404, and the command still takes
    effect later). With the database locked by another writer (the CLI, a migration), the
    command is acknowledged at once with a holding line and answered through response_url."""
    arxiv, fake = fakes
    async with daemon(tmp_path, arxiv, fake) as d:
        await command(d, fake, "/list")  # bolt's first look at the token is behind us
        holder = sqlite3.connect(tmp_path / "papers.db", isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            status, ack = await command(d, fake, "/subscribe", KEYWORD)
            assert status == 200, ack
            assert ack == {"response_type": "ephemeral", "text": WORKING}
            assert fake.responses == []
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        await fake.wait_for(lambda: len(fake.responses) >= 1, timeout=60)
        assert "Subscribed to 'vision language model'" in fake.responses[0].body["text"]
        status, listing = await command(d, fake, "/list")
        assert listing["text"].startswith("1 keyword followed here:\n• vision language model")


async def test_bot_missing_from_channel_gets_the_invite_answer(tmp_path: Path,
                                                                fakes: Any) -> None:
    arxiv, fake = fakes
    fake.channels["C0PRIVATE"] = {"is_member": False}
    async with daemon(tmp_path, arxiv, fake) as d:
        status, ack = await command(d, fake, "/papers", f"subscribe {KEYWORD}",
                                    channel="C0PRIVATE")
        assert status == 200 and "/invite @Daily Papers" in ack["text"]
        _, listing = await command(d, fake, "/list", channel="C0PRIVATE")
        assert listing["text"].startswith("No keywords are followed here")
        assert fake.posts == []


async def test_another_workspace_and_hostile_text(tmp_path: Path, fakes: Any) -> None:
    arxiv, fake = fakes
    async with daemon(tmp_path, arxiv, fake) as d:
        _, ack = await command(d, fake, "/subscribe", KEYWORD, team_id="T0OTHER")
        assert ack["text"] == "This Daily Papers app serves another Slack workspace."
        _, ack = await command(d, fake, "/subscribe", "<!channel> & friends")
        assert "&lt;!channel&gt; &amp; friends" in ack["text"]
        assert "<!channel>" not in ack["text"]
        await fake.wait_posts(1, CHANNEL)
        assert "<!channel>" not in (fake.posts_to(CHANNEL)[0].text or "")
        assert "&lt;!channel&gt;" in (fake.posts_to(CHANNEL)[0].text or "")


@pytest.mark.parametrize("comes_back", ["invited", "command"])
async def test_removed_bot_pauses_the_channel_until_it_comes_back(
        tmp_path: Path, fakes: Any, comes_back: str) -> None:
    arxiv, fake = fakes
    async with daemon(tmp_path, arxiv, fake) as d:
        await subscribed(d, fake, arxiv)
        fake.channels[CHANNEL] = {"is_member": False}  # someone removed the bot
        arxiv.add(new_paper(1))
        await fake.wait_for(lambda: any(c.error == "not_in_channel"
                                        for c in fake.calls_to("chat.postMessage")), timeout=20)
        await d.wait_log("paused")
        refused = len(fake.calls_to("chat.postMessage"))
        await d.cycles(2)  # paused: no new attempts while it is away
        assert len(fake.calls_to("chat.postMessage")) == refused and digests(fake) == []

        fake.channels[CHANNEL] = {"is_member": True}  # /invite @Daily Papers
        if comes_back == "invited":
            assert await bot_joined(d, fake) == 200
        else:
            _, ack = await command(d, fake, "/papers", "list")
            assert ack["text"].startswith("Welcome back")
        await fake.wait_for(lambda: len(digests(fake)) == 1, timeout=60)
        assert papers_shown(digests(fake)) == ["https://arxiv.org/abs/2599.00001"]


async def test_config_channels_and_allowed_channels(tmp_path: Path, fakes: Any) -> None:
    arxiv, fake = fakes
    extra = """allowed_channels = ["C0CONFIG1"]
[[slack.channels]]
channel = "C0CONFIG1"
keywords = ["Vision Language Model"]
"""
    async with daemon(tmp_path, arxiv, fake, slack_extra=extra) as d:
        _, ack = await command(d, fake, "/subscribe", KEYWORD, channel="C0ELSEWHERE")
        assert ack["text"].startswith("Daily Papers is not enabled in this channel")
        _, listing = await command(d, fake, "/list", channel="C0CONFIG1")
        assert "Vision Language Model" in listing["text"] and "(from the config)" in listing["text"]
        await d.wait_log("1 ok")  # the baseline of the configured keyword
        arxiv.add(new_paper(1))
        await fake.wait_for(lambda: len(digests(fake, "C0CONFIG1")) == 1, timeout=60)
        assert fake.posts_to("C0ELSEWHERE") == []


async def test_refused_bot_token_is_one_clear_line(tmp_path: Path, fakes: Any) -> None:
    arxiv, fake = fakes
    async with daemon(tmp_path, arxiv, fake, bot_token="xoxb-revoked") as d:
        await d.wait_log("Slack refused SLACK_BOT_TOKEN (invalid_auth)")
        await d.cycles(1)  # the daemon keeps polling; Slack stays off
    assert sum("SLACK_BOT_TOKEN" in line for line in d.lines) == 1
    assert fake.posts == []


async def test_socket_mode_subscribe(tmp_path: Path, fakes: Any) -> None:
    arxiv, fake = fakes
    async with daemon(tmp_path, arxiv, fake, http=True, socket_mode=True) as d:
        payload = await fake.send_slash_command(command="/papers",
                                                text=f"subscribe {KEYWORD}",
                                                channel_id=CHANNEL, timeout=20)
        assert "Subscribed to 'vision language model'" in payload["text"]
        payload = await fake.send_slash_command(command="/list", channel_id=CHANNEL)
        assert payload["text"].startswith("1 keyword followed here")
        async with aiohttp.ClientSession() as session, session.post(
                f"{d.url}/slack/events", data=b"x") as resp:
            assert resp.status in (404, 405)  # Socket Mode wins: no HTTP endpoint
