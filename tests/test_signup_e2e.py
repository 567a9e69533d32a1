"""End to end: an email reader signs up through the web form of the real `daily-papers run`
process ([web] signup), confirms from the mail the fake SMTP server caught, and receives the next
papers as one digest at the daily minute it chose in its own zone, not at the end of the cycle
that found them; the digest links the reader's preferences page. The process reads a clock the
test moves (tests/fakes/clocked.py)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from urllib.parse import parse_qs, urlparse
from zoneinfo import ZoneInfo

import aiohttp
import pytest

from tests.fakes.arxiv_server import FakeArxiv
from tests.fakes.clocked import FileClock
from tests.fakes.daemon import DaemonProcess, e2e_config_head, write_config
from tests.fakes.smtp_server import FakeSMTP, ReceivedMail
from tests.test_cadence_e2e import BASELINE, KEYWORD, cycle_that_queued, paper
from tests.test_slack_e2e import free_port

pytestmark = pytest.mark.slow

READER = "reader@example.org"
SECRET = "signup-e2e-key-0123456789"
TOKYO = ZoneInfo("Asia/Tokyo")
LINK = re.compile(r"(http://\S+/subscribe/confirm\?t=\S+)")


def config(tmp: Path, arxiv: FakeArxiv, smtp: FakeSMTP, port: int) -> Path:
    return write_config(tmp, f"""{e2e_config_head(arxiv.url)}{smtp.email_table()}
[web]
host = "127.0.0.1"
port = {port}
public_url = "http://127.0.0.1:{port}"
signup = true
""")


def text_of(mail: ReceivedMail) -> str:
    part = mail.message.get_body(("plain",))
    assert isinstance(part, EmailMessage)
    return part.get_content().replace("\r\n", "\n")


def digests(smtp: FakeSMTP) -> list[ReceivedMail]:
    return [m for m in smtp.messages_to(READER) if "new paper" in str(m.message["Subject"])]


async def test_a_reader_signs_up_on_the_page_confirms_and_gets_its_daily_digest(
        tmp_path: Path) -> None:
    start = datetime.now(UTC).replace(second=0, microsecond=0)
    digest_at = start + timedelta(minutes=10)
    hhmm = digest_at.astimezone(TOKYO).strftime("%H:%M")
    clock = FileClock(tmp_path / "clock", start)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    async with FakeArxiv(papers=list(BASELINE)) as arxiv, FakeSMTP() as smtp, \
            aiohttp.ClientSession() as http:
        path = config(tmp_path, arxiv, smtp, port)
        async with DaemonProcess(path, env={"DAILY_PAPERS_SECRET": SECRET}, clock=clock) as d:
            await d.wait_for_log("web server listening")
            async with http.get(f"{url}/subscribe") as r:
                assert r.status == 200 and 'name="keywords"' in await r.text()
            form = {"address": READER, "keywords": KEYWORD, "cadence": "daily", "time": hhmm,
                    "day": "mon", "timezone": "Asia/Tokyo", "website": ""}
            async with http.post(f"{url}/subscribe", data=form) as r:
                assert r.status == 200 and "on its way" in await r.text()

            await smtp.wait_for(lambda: len(smtp.messages_to(READER)) >= 1, timeout=30)
            found = LINK.search(text_of(smtp.messages_to(READER)[0]))
            assert found is not None
            link = found.group(1)
            async with http.get(link) as r:
                assert r.status == 200 and "Confirm your subscription" in await r.text()
            mark = len(d.lines)
            token = parse_qs(urlparse(link).query)["t"][0]
            async with http.post(link, data={"t": token}) as r:  # follows the 303
                page = await r.text()
                assert r.status == 200 and "/preferences" in str(r.url)
                assert KEYWORD in page and f"one digest a day at {hhmm} (Asia/Tokyo" in page
            await d.wait_for_log(f"sign-up confirmed by {READER}", after=mark)
            for _ in range(2):  # a whole cycle after the confirmation: the baseline is taken
                mark = len(d.lines)
                await d.wait_for_log(r"cycle: ", after=mark)
            assert digests(smtp) == []  # what existed before is not news

            clock.set(digest_at - timedelta(seconds=30))
            arxiv.add(paper(400, "Video anomaly detection for a new reader", hours_ago=0.5))
            await cycle_that_queued(d)
            assert digests(smtp) == [], "sent at the cycle end, not at the reader's minute"

            clock.set(digest_at + timedelta(seconds=1))
            await smtp.wait_for(lambda: len(digests(smtp)) >= 1, timeout=30)
            (digest,) = digests(smtp)
            text = text_of(digest)
            assert "Video anomaly detection for a new reader" in text
            manage = re.search(r"Manage your subscription: (\S+)", text)
            assert manage is not None
            async with http.get(manage.group(1)) as r:
                assert r.status == 200 and READER in await r.text()
            assert "[redacted]" not in manage.group(1)
            assert token not in d.log and manage.group(1).split("t=")[1] not in d.log
            assert await d.stop() == 0
