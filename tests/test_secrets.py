"""Secrets never reach a log line: a whole end-to-end run with Telegram, Slack and email on
(once with --verbose, once with --log-format json), and a run whose every credential is refused
so that the libraries' own error texts (python-telegram-bot's InvalidToken quotes the token)
pass through the daemon. Every line of output, CLI commands included, is searched for each
secret value and each unsubscribe token."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest

from tests.fakes.arxiv_server import FakeArxiv
from tests.fakes.daemon import DaemonProcess, run_cli, write_config
from tests.fakes.slack_server import FakeSlack
from tests.fakes.smtp_server import FakeSMTP
from tests.fakes.telegram_server import FakeTelegram
from tests.test_operability import LISTENING, config_text, free_port, paper

pytestmark = pytest.mark.slow

KEYWORD = "graph neural networks"
CHAT = 4242
CHANNEL = "C0PAPERS1"
READER = "reader@example.org"
SMTP_USER = "papers@example.org"
SECRETS = {
    "TELEGRAM_BOT_TOKEN": "987654:AAH-telegram-secret-part-XYZ",
    "SLACK_BOT_TOKEN": "xoxb-1111-2222-slack-bot-secret",
    "SLACK_SIGNING_SECRET": "signing-secret-8f14e45fceea167a",
    "SMTP_PASSWORD": "smtp-password-Zq9-secret",
    "DAILY_PAPERS_SECRET": "unsubscribe-key-0123456789-secret",
    "DAILY_PAPERS_METRICS_TOKEN": "metrics-bearer-token-5a7c-secret",
}
WRONG = {
    "TELEGRAM_BOT_TOKEN": "987654:AAH-WRONG-telegram-token",
    "SLACK_BOT_TOKEN": "xoxb-WRONG-slack-bot-token",
    "SLACK_SIGNING_SECRET": SECRETS["SLACK_SIGNING_SECRET"],
    "SMTP_PASSWORD": "WRONG-smtp-password-77",
    "DAILY_PAPERS_SECRET": SECRETS["DAILY_PAPERS_SECRET"],
}
TOKEN_IN_LINK = re.compile(r"[?&]t=([A-Za-z0-9_\-.~%]+)")


@dataclass
class World:
    tmp: Path
    arxiv: FakeArxiv
    telegram: FakeTelegram
    slack: FakeSlack
    smtp: FakeSMTP
    config: Path
    output: list[str] = field(default_factory=list)

    async def cli(self, *args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
        code, out, err = await run_cli(self.config, *args, env=env or SECRETS)
        self.output += (out + err).splitlines()
        return code, out + err

    def unsubscribe_tokens(self) -> set[str]:
        return {t for m in self.smtp.messages
                for t in TOKEN_IN_LINK.findall(m.raw.decode(errors="replace"))}

    def leaks(self, secrets: dict[str, str]) -> list[str]:
        """Output lines holding a secret (or a token's secret half) or an unsubscribe token."""
        values = set(secrets.values()) | self.unsubscribe_tokens()
        values |= {v.split(":", 1)[1] for v in secrets.values() if ":" in v}
        return [line for line in self.output for v in values if v in line]


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    telegram_token = SECRETS["TELEGRAM_BOT_TOKEN"]
    async with FakeArxiv() as arxiv, FakeTelegram(token=telegram_token) as telegram, \
            FakeSlack(bot_token=SECRETS["SLACK_BOT_TOKEN"]) as slack, \
            FakeSMTP(security="starttls", username=SMTP_USER,
                     password=SECRETS["SMTP_PASSWORD"]) as smtp:
        arxiv.add(*(paper(n, days=1 + n) for n in range(1, 4)))
        ca = smtp.write_ca(tmp_path / "smtp-ca.pem")
        port = free_port()
        extra = f"""
[telegram]
api_url = "{telegram.base_url}"

[slack]
api_url = "{slack.api_url}"
[[slack.channels]]
channel = "{CHANNEL}"
keywords = ["{KEYWORD}"]

{smtp.email_table(f"Daily Papers <{SMTP_USER}>", ca_file=ca.name)}[[email.subscribers]]
address = "{READER}"
keywords = ["{KEYWORD}"]
"""
        config = write_config(tmp_path, config_text(arxiv, port, keywords=(KEYWORD,),
                                                    poll_interval=1, extra=extra))
        yield World(tmp_path, arxiv, telegram, slack, smtp, config)


async def post(url: str, body: bytes, headers: dict[str, str]) -> int:
    async with aiohttp.ClientSession() as http, http.post(url, data=body,
                                                          headers=headers) as resp:
        await resp.read()
        return resp.status


async def full_run(w: World, *options: str) -> None:
    """Baseline, news on all three channels, a command on each chat face, the unsubscribe page
    shown and forged, a forged Slack request; then SIGTERM."""
    sent = (len(w.telegram.messages_to(CHAT)), len(w.slack.posts_to(CHANNEL)),
            len(w.smtp.messages))
    async with DaemonProcess(w.config, *options, "run", env=SECRETS) as daemon:
        try:
            base = (await daemon.wait_for_log(LISTENING)).group(1)
            await daemon.wait_for_log(r"cycle: 1 keywords polled, 1 ok")
            n = 10 + len(w.arxiv.papers)
            w.arxiv.add(paper(n, days=0.1))
            await w.telegram.wait_sent(sent[0] + 1, CHAT, timeout=60)
            await w.slack.wait_posts(sent[1] + 1, CHANNEL, timeout=60)
            await w.smtp.wait_messages(sent[2] + 1, timeout=60)

            w.telegram.push_command(CHAT, "/list")
            await w.telegram.wait_sent(sent[0] + 2, CHAT, timeout=60)
            body, headers = w.slack.signed_command_request(
                SECRETS["SLACK_SIGNING_SECRET"], "/papers", "list", channel_id=CHANNEL)
            assert await post(f"{base}/slack/events", body, headers) == 200
            forged = {**headers, "X-Slack-Signature": "v0=" + "0" * 64}
            assert await post(f"{base}/slack/events", body, forged) == 401

            bearer = SECRETS["DAILY_PAPERS_METRICS_TOKEN"]
            async with aiohttp.ClientSession() as http:
                for given, status in ((None, 401), (f"Bearer {bearer[:-1]}", 401),
                                      (f"Bearer {bearer}", 200)):
                    auth = {"Authorization": given} if given else {}
                    async with http.get(f"{base}/metrics", headers=auth) as resp:
                        assert resp.status == status, given

            header = str(w.smtp.messages[-1].message["List-Unsubscribe"])
            (token,) = TOKEN_IN_LINK.findall(header)
            async with aiohttp.ClientSession() as http:
                async with http.get(f"{base}/unsubscribe?t={token}") as resp:
                    assert resp.status == 200  # GET only shows the page
                async with http.get(f"{base}/unsubscribe?t={token[:-3]}xyz") as resp:
                    assert resp.status == 400
            assert await daemon.stop() == 0
        finally:
            w.output += daemon.lines


async def test_no_secret_in_any_output_of_a_whole_run(world: World) -> None:
    w = world
    code, _ = await w.cli("--verbose", "subscribe", "--telegram", str(CHAT), KEYWORD)
    assert code == 0
    await full_run(w, "--verbose")
    assert any("DEBUG" in line for line in w.output)  # --verbose really was on
    await full_run(w, "--log-format", "json")
    code, _ = await w.cli("--verbose", "status")
    assert code == 0
    assert len(w.unsubscribe_tokens()) >= 2  # one for everything, one per keyword
    assert w.leaks(SECRETS) == []


async def test_refused_credentials_are_reported_without_the_secrets(world: World) -> None:
    w = world
    await w.cli("subscribe", "--telegram", str(CHAT), KEYWORD)
    for options in (("--verbose",), ("--verbose", "--log-format", "json")):
        code, out = await w.cli(*options, "run", "--once", env=WRONG)
        assert code == 0, out
        assert "telegram is off: it could not start: The token `[redacted]` was rejected" in out
        assert "invalid_auth" in out  # Slack refused its token
    w.arxiv.add(paper(20, days=0.1))
    code, out = await w.cli("--verbose", "run", "--once", env=WRONG)  # news: SMTP login refused
    assert w.smtp.messages == []
    assert w.leaks(WRONG) == []
    assert w.leaks(SECRETS) == []


def test_an_uncaught_error_is_logged_redacted() -> None:
    """The last line of defence: a traceback nobody caught still passes the filter."""
    token = SECRETS["TELEGRAM_BOT_TOKEN"]
    program = ("from bot.logs import setup_logging\n"
               f"setup_logging(secrets=[{token!r}])\n"
               f"raise RuntimeError('The token `{token}` was rejected by the server.')\n")
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parent.parent, check=False)
    assert result.returncode == 1
    assert "RuntimeError: The token `[redacted]` was rejected" in result.stderr
    assert token not in result.stderr and token not in result.stdout
