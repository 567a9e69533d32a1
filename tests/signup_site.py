"""The sign-up and preferences pages as a test reaches them: the real email face with
[web] signup on, its routes on a local server, mail caught by the fake SMTP server."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from html import unescape
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urljoin, urlparse

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer

from bot.app import App
from bot.config import Config, EmailConfig, Secrets, WebConfig
from bot.faces.email import EmailFace
from bot.faces.web import PathOnlyAccessLogger
from bot.fetch.arxiv import ArxivClient
from storage import subscribers as sub_repo
from storage.records import Paper
from storage.store import AsyncStore, Store
from tests.conftest import Clock
from tests.fakes.arxiv_server import FakeArxiv
from tests.fakes.smtp_server import FakeSMTP, ReceivedMail

SECRET = "signup-test-key-0123456789"
SENDER = "Daily Papers <papers@example.org>"
READER = "reader@example.org"
KEYWORD = "video anomaly detection"
HOSTILE = "graph <script>alert(1)</script> networks"
LINK = re.compile(r"(http://\S+/subscribe/confirm\?t=\S+)")


def paper(n: int, title: str, days_ago: float = 1.0) -> Paper:
    published = datetime.now(UTC) - timedelta(days=days_ago)
    return Paper(arxiv_id=f"2511.{n:05d}", version=1, title=title,
                 abstract=f"We study {title.lower()}.", authors=("Ada Lovelace",),
                 published=published, updated=published, primary_category="cs.CV",
                 categories=("cs.CV",))


CORPUS = [paper(i, f"Video anomaly detection part {i}", days_ago=i) for i in range(1, 4)]


@dataclass
class Answer:
    status: int
    text: str
    location: str
    headers: Any


@dataclass
class Site:
    """The pages as a browser without JavaScript reaches them (form posts, no redirects
    followed unless asked), and what the reader's mailbox caught."""

    url: str
    app: App
    face: EmailFace
    smtp: FakeSMTP
    clock: Clock
    http: aiohttp.ClientSession

    async def get(self, path: str) -> Answer:
        async with self.http.get(urljoin(self.url, path), allow_redirects=False) as r:
            return Answer(r.status, await r.text(), r.headers.get("Location", ""), r.headers)

    async def post(self, path: str, data: dict[str, str],
                   headers: dict[str, str] | None = None) -> Answer:
        async with self.http.post(urljoin(self.url, path), data=data, headers=headers,
                                  allow_redirects=False) as r:
            location = urljoin(str(r.url), r.headers.get("Location", ""))
            return Answer(r.status, await r.text(), location, r.headers)

    async def sign_up(self, address: str = READER, keywords: str = KEYWORD, *,
                      headers: dict[str, str] | None = None, **fields: str) -> Answer:
        data = {"address": address, "keywords": keywords, "cadence": "daily", "time": "07:30",
                "day": "mon", "timezone": "Europe/Berlin", "website": "", **fields}
        return await self.post("subscribe", data, headers)

    def mails_to(self, address: str) -> list[ReceivedMail]:
        return self.smtp.messages_to(address)

    async def link(self, address: str = READER, count: int = 1) -> str:
        """The confirmation link of the `count`-th mail to `address`."""
        await self.smtp.wait_for(lambda: len(self.mails_to(address)) >= count)
        found = LINK.search(body(self.mails_to(address)[count - 1]))
        assert found, body(self.mails_to(address)[count - 1])
        return found.group(1)

    async def confirm(self, link: str) -> str:
        """Press the confirm button; the preferences URL it leads to."""
        token = parse_qs(urlparse(link).query)["t"][0]
        answer = await self.post(link, {"t": token})
        assert answer.status == 303, answer.text
        assert "/preferences?t=" in answer.location
        return answer.location

    async def followed(self, address: str = READER) -> list[str]:
        def read(store: Store) -> list[str]:
            sub = sub_repo.find(store.db, "email", address)
            return [k.display for k, _ in sub_repo.subscriptions(store.db, sub.id)] if sub else []

        return await self.app.store.run(read)

    async def subscriber(self, address: str = READER) -> Any:
        return await self.app.store.call(sub_repo.find, "email", address)


async def idle(site: Site) -> None:
    """Until the mails and first looks the pages started are done."""
    assert site.face.signup is not None
    await site.face.signup.idle()


def body(mail: ReceivedMail) -> str:
    part = mail.message.get_body(("plain",))
    assert isinstance(part, EmailMessage)
    return part.get_content().replace("\r\n", "\n")


def form_of(html: str, action: str) -> dict[str, str]:
    """The hidden fields of the page's form for one change (what the browser would send)."""
    forms = re.findall(r"<form [^>]*>.*?</form>", html, re.S)
    mine = next(f for f in forms if f'name="action" value="{action}"' in f)
    return dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', mine))


def shown(html: str) -> str:
    """The page's words as a reader sees them: body only, tags dropped, spaces collapsed."""
    main = html.partition("<main>")[2].partition("<script")[0]
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", main)).split())


def without_nonce(html: str) -> str:
    return re.sub(r'nonce="[^"]+"', 'nonce=""', html)


def site_config(arxiv: FakeArxiv, smtp: FakeSMTP, tmp: Path) -> Config:
    cfg = Config()
    cfg.arxiv.api_url = arxiv.url
    cfg.arxiv.request_interval = 0.0
    cfg.arxiv.keywords = []
    cfg.storage.path = tmp / "papers.db"
    cfg.digest.path = None
    cfg.email = EmailConfig(host=smtp.host, port=smtp.port, security="none", sender=SENDER)
    cfg.web = WebConfig(signup=True)
    return cfg


@contextlib.asynccontextmanager
async def open_site(tmp: Path, clock: Clock) -> AsyncIterator[Site]:
    """The email face with [web] signup on, its routes on a local server, the fake SMTP server
    and arXiv behind it, on the test's clock."""
    async with FakeArxiv(papers=list(CORPUS)) as arxiv, FakeSMTP() as smtp:
        cfg = site_config(arxiv, smtp, tmp)
        store = await AsyncStore(cfg.storage.path).open()
        client = ArxivClient(arxiv.url, request_interval=0.0, max_attempts=2)
        app = App(cfg, Secrets(), store, client, now=clock.now, unsubscribe_secret=SECRET)
        face = EmailFace(cfg.email, cfg.web, "")
        assert face.signup is not None
        face.signup.retry_delays = (0.0,)
        server_app = web.Application()
        server_app.add_routes(face.routes())
        try:
            server = TestServer(server_app, host="127.0.0.1", port=0)
            # The daemon's access log (path only), so the log test sees what production logs.
            await server.start_server(access_log_class=PathOnlyAccessLogger)
            async with server:
                cfg.web.public_url = str(server.make_url("/"))
                await face.start(app)
                async with aiohttp.ClientSession() as http:
                    yield Site(cfg.web.public_url, app, face, smtp, clock, http)
                await face.stop()
        finally:
            await client.aclose()
            await store.close()


