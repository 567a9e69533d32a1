"""End to end through email: the real `daily-papers` process (`run --once` and `run`), the CLI,
papers from the fake arXiv, mail to the fake SMTP server (STARTTLS + login), and the
List-Unsubscribe link POSTed the way a mail provider does (RFC 8058)."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path

import aiohttp
import pytest

from storage.records import Paper
from tests.fakes import zygote
from tests.fakes.arxiv_server import FakeArxiv
from tests.fakes.daemon import e2e_config_head, free_port
from tests.fakes.smtp_server import FakeSMTP, ReceivedMail

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
KEYWORD = "graph neural networks"
USER, PASSWORD = "papers@example.org", "smtp-pass-1234"
SECRET = "e2e-unsubscribe-key-0123456789"
ALICE = "alice@example.org"  # subscribed from the shell
BOB = "bob@example.org"  # subscribed in config.toml


def new_paper(n: int, *, days: float = 0.0) -> Paper:
    published = datetime.now(UTC) - timedelta(days=days, minutes=n)
    return Paper(arxiv_id=f"2598.{n:05d}", version=1,
                 title=f"Graph Neural Networks for Reading <Papers> {n}",
                 abstract=f"We study graph neural networks, number {n} & more.",
                 authors=("Ada Lovelace", "Alan Turing"), published=published, updated=published,
                 primary_category="cs.LG", categories=("cs.LG",))


@dataclass
class Setup:
    tmp: Path
    arxiv: FakeArxiv
    smtp: FakeSMTP
    port: int
    config: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def cli(self, *args: str) -> tuple[int, str]:
        """`python -m bot --config … ARGS`; (exit code, stdout + stderr)."""
        proc = await zygote.spawn("bot", "--config", str(self.config), *args, cwd=self.tmp,
                                  env=self.env, stdin=zygote.DEVNULL, stdout=zygote.PIPE,
                                  stderr=zygote.STDOUT)
        async with asyncio.timeout(60):
            out, _ = await proc.communicate()
        return proc.returncode or 0, out.decode(errors="replace")

    async def run_once(self) -> str:
        code, out = await self.cli("run", "--once")
        assert code == 0, out
        return out


def write_config(tmp: Path, arxiv: FakeArxiv, smtp: FakeSMTP, port: int) -> Path:
    ca = smtp.write_ca(tmp / "smtp-ca.pem")
    path = tmp / "config.toml"
    path.write_text(f"""{e2e_config_head(arxiv.url, poll_interval=3600)}
{smtp.email_table(f"Daily Papers <{USER}>", ca_file=ca.name)}
[[email.subscribers]]
address = "{BOB}"
keywords = ["{KEYWORD}"]

[web]
host = "127.0.0.1"
port = {port}
public_url = "http://127.0.0.1:{port}"
""", encoding="utf-8")
    return path


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[Setup]:
    async with FakeArxiv() as arxiv, FakeSMTP(security="starttls", username=USER,
                                              password=PASSWORD) as smtp:
        port = free_port()
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("SLACK_", "TELEGRAM_", "SMTP_", "DAILY_PAPERS_"))}
        env.update(SMTP_PASSWORD=PASSWORD, DAILY_PAPERS_SECRET=SECRET, PYTHONPATH=str(ROOT))
        yield Setup(tmp_path, arxiv, smtp, port, write_config(tmp_path, arxiv, smtp, port), env)


@dataclass
class Daemon:
    proc: zygote.Process
    lines: list[str] = field(default_factory=list)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def pump(self) -> None:
        assert self.proc.stderr is not None
        async for raw in self.proc.stderr:
            self.lines.append(raw.decode(errors="replace").rstrip())
            self._changed.set()
        self._changed.set()

    async def wait_log(self, needle: str, timeout: float = 30) -> None:
        async with asyncio.timeout(timeout):
            while not any(needle in line for line in self.lines):
                if self.proc.returncode is not None:
                    raise AssertionError("daemon exited:\n" + "\n".join(self.lines))
                self._changed.clear()
                await self._changed.wait()


@contextlib.asynccontextmanager
async def daemon(s: Setup) -> AsyncIterator[Daemon]:
    proc = await zygote.spawn("bot", "--config", str(s.config), "run", cwd=s.tmp, env=s.env,
                              stdin=zygote.DEVNULL, stdout=zygote.DEVNULL, stderr=zygote.PIPE)
    d = Daemon(proc)
    pump = asyncio.create_task(d.pump())
    try:
        await d.wait_log("web server listening")
        yield d
    finally:
        if proc.returncode is None:
            proc.terminate()
        async with asyncio.timeout(60):
            code = await proc.wait()
        await pump
    assert code == 0, "\n".join(d.lines)


def body(mail: ReceivedMail, kind: str) -> str:
    part = mail.message.get_body((kind,))
    assert isinstance(part, EmailMessage)
    return part.get_content()


def list_unsubscribe(mail: ReceivedMail) -> str:
    value = str(mail.message["List-Unsubscribe"]).strip()  # long values are folded
    assert value.startswith("<") and value.endswith(">"), value
    return value[1:-1]


async def subscribed(s: Setup) -> list[str]:
    code, out = await s.cli("subscriptions", "--channel", "email")
    assert code == 0, out
    return [line.split()[1] for line in out.splitlines() if line.startswith("email ")]


async def test_email_end_to_end(setup: Setup) -> None:
    s = setup
    s.arxiv.add(new_paper(1, days=3))

    code, out = await s.cli("subscribe", "--email", " Alice@EXAMPLE.org ", KEYWORD)
    assert code == 0, out
    code, out = await s.cli("subscribe", "--email", "not an address", KEYWORD)
    assert code != 0 and "not a usable email address" in out

    await s.run_once()  # the baseline: nobody is told about what already existed
    assert s.smtp.messages == []
    assert sorted(await subscribed(s)) == ["Alice@example.org", BOB]

    s.arxiv.add(new_paper(2), new_paper(3))
    await s.run_once()
    assert sorted(m.rcpt_tos[0] for m in s.smtp.messages) == ["Alice@example.org", BOB]
    assert s.smtp.connections == 1  # one connection for the batch
    for mail in s.smtp.messages:
        assert mail.tls and mail.authenticated_as == USER
        assert mail.message.get_content_type() == "multipart/alternative"
        assert mail.message["Subject"] == f"2 new papers: {KEYWORD}"
        assert mail.message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert list_unsubscribe(mail).startswith(f"{s.url}/unsubscribe?t=")
        text, html = body(mail, "plain"), body(mail, "html")
        for n in (2, 3):
            assert f"Graph Neural Networks for Reading <Papers> {n}" in text
            assert f"Graph Neural Networks for Reading &lt;Papers&gt; {n}" in html
        assert "Reading <Papers> 1" not in text
    bob_mail = s.smtp.messages_to(BOB)[0]

    async with daemon(s) as d, aiohttp.ClientSession() as http:
        forged = list_unsubscribe(bob_mail).replace("?t=", "?t=x")
        async with http.post(forged, data={"List-Unsubscribe": "One-Click"}) as resp:
            assert resp.status == 400
        assert sorted(await subscribed(s)) == ["Alice@example.org", BOB]

        # What Gmail and others do with List-Unsubscribe + List-Unsubscribe-Post:
        async with http.post(list_unsubscribe(bob_mail),
                             data={"List-Unsubscribe": "One-Click"}) as resp:
            assert resp.status == 200
            assert "is unsubscribed" in await resp.text()
        assert await subscribed(s) == ["Alice@example.org"]
        assert not any(SECRET in line or "?t=" in line for line in d.lines)

    s.arxiv.add(new_paper(4))
    out = await s.run_once()  # a restart: config.toml still names bob
    assert "bob@example.org" in out and "not re-created" in out
    assert await subscribed(s) == ["Alice@example.org"]
    latest = s.smtp.messages[2:]
    assert [m.rcpt_tos for m in latest] == [["Alice@example.org"]]
    assert latest[0].message["Subject"] == f"1 new paper: {KEYWORD}"
