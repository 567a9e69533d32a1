"""A local OAI-PMH endpoint for tests and bench/: arXiv's ListRecords, as the harvest reads it.

Serves `arXivRaw` (version history) and `arXiv` records built from `Paper`s, selected by
datestamp (`from`/`until`, UTC days) and set (group `cs`, archive `physics:hep-th`, category
`cs:cs:AI`), paged by an opaque `resumptionToken` with `completeListSize` as the old server
wrote it, and the errors by name: noRecordsMatch, badResumptionToken, badArgument. Faults,
one per request: an HTTP status (503 with Retry-After as the old server's flow control),
"broken" (truncated XML). The markup follows the real samples in tests/fixtures/oai/.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from aiohttp import web

from storage.records import Paper

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "oai"
BUSY_BODY = (FIXTURES / "old-export-2018-http503-retry-after-body.html").read_bytes()
GROUPS = frozenset({"cs", "econ", "eess", "math", "q-bio", "q-fin", "stat"})  # else physics


@dataclass
class OaiItem:
    paper: Paper
    datestamp: date


@dataclass
class Fault:
    status: int | str  # an HTTP status, or "broken"
    retry_after: str | None = None


@dataclass
class FakeOai:
    host: str = "127.0.0.1"
    port: int = 0
    page_size: int = 1000
    items: list[OaiItem] = field(default_factory=list)
    faults: list[int | str | Fault | None] = field(default_factory=list)  # None: answer
    requests: list[tuple[float, dict[str, str]]] = field(default_factory=list)
    url: str = ""

    def __post_init__(self) -> None:
        self._runner: web.AppRunner | None = None
        self._tokens: dict[str, tuple[dict[str, str], int]] = {}
        self._session = itertools.count(436115)
        self._arrived = asyncio.Condition()

    def add(self, paper: Paper, datestamp: date) -> None:
        self.items = [i for i in self.items if i.paper.arxiv_id != paper.arxiv_id]
        self.items.append(OaiItem(paper, datestamp))

    def expire_tokens(self) -> None:
        """Tokens expire daily on the real server."""
        self._tokens.clear()

    async def wait_requests(self, count: int) -> None:
        async with self._arrived:
            await self._arrived.wait_for(lambda: len(self.requests) >= count)

    async def __aenter__(self) -> FakeOai:
        app = web.Application()
        app.router.add_route("*", "/oai", self._serve)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        self.url = f"http://{self.host}:{self.port}/oai"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _serve(self, request: web.Request) -> web.Response:
        params = dict(request.query)
        if request.method == "POST":
            params |= {k: str(v) for k, v in (await request.post()).items()}
        self.requests.append((time.monotonic(), params))
        async with self._arrived:
            self._arrived.notify_all()
        fault = self.faults.pop(0) if self.faults else None
        if fault is not None:
            fault = fault if isinstance(fault, Fault) else Fault(fault)
            if fault.status == "broken":
                body = self.list_records({"verb": "ListRecords", "metadataPrefix": "arXivRaw"})
                return _xml(body[: len(body) // 2])
            headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
            return web.Response(status=int(fault.status), body=BUSY_BODY, headers=headers,
                                content_type="text/html")
        return _xml(self.list_records(params))

    # -- the protocol -----------------------------------------------------------------------
    def list_records(self, params: dict[str, str]) -> bytes:
        if params.get("verb") != "ListRecords":
            return _error(params, "badVerb", "Illegal OAI verb")
        token = params.get("resumptionToken")
        if token is not None:
            if set(params) != {"verb", "resumptionToken"}:
                return _error(params, "badArgument", "resumptionToken must be the only argument")
            if token not in self._tokens:
                return _error(params, "badResumptionToken",
                              "The value of the resumptionToken argument is invalid or expired.")
            query, offset = self._tokens[token]
        else:
            query, offset = params, 0
            problem = _bad_arguments(params)
            if problem:
                return _error(params, "badArgument", problem)
        selected = self.select(query)
        if not selected:
            return _error(params, "noRecordsMatch", "No records match the paramaters specified "
                          "for this selective harvesting request.")
        page = selected[offset:offset + self.page_size]
        token_xml = ""
        if offset + self.page_size < len(selected):
            nxt = f"{next(self._session)}|{offset + self.page_size + 1}"
            self._tokens[nxt] = (query, offset + self.page_size)
            token_xml = (f"<resumptionToken cursor='{offset}' completeListSize='{len(selected)}'"
                         f">{nxt}</resumptionToken>")
        elif offset:
            token_xml = (f"<resumptionToken cursor='{offset}' "
                         f"completeListSize='{len(selected)}'/>")
        raw = query.get("metadataPrefix") == "arXivRaw"
        records = "".join(_record(i, raw) for i in page)
        return _envelope(params, f"<ListRecords>{records}{token_xml}</ListRecords>")

    def select(self, query: dict[str, str]) -> list[OaiItem]:
        """Records in (datestamp, identifier) order, as the server lists them."""
        start = date.fromisoformat(query["from"]) if query.get("from") else date.min
        end = date.fromisoformat(query["until"]) if query.get("until") else date.max
        spec = query.get("set", "")
        found = [i for i in self.items if start <= i.datestamp <= end
                 and (not spec or in_set(spec, i.paper.categories))]
        return sorted(found, key=lambda i: (i.datestamp, i.paper.arxiv_id))


def in_set(spec: str, categories: tuple[str, ...]) -> bool:
    """`cs`, `physics:hep-th`, `cs:cs:AI`: group, archive or category, cross-lists included."""
    parts = spec.split(":")
    for category in categories:
        archive, _, subject = category.partition(".")
        group = archive if archive in GROUPS else "physics"
        if parts == [group] or parts == [group, archive] or parts == [group, archive, subject]:
            return True
    return False


def _bad_arguments(params: dict[str, str]) -> str | None:
    if params.get("metadataPrefix") not in ("arXivRaw", "arXiv"):
        return "metadataPrefix must be arXivRaw or arXiv here"
    for key in ("from", "until"):
        if key in params:
            try:
                date.fromisoformat(params[key])
            except ValueError:
                return f"{key} must be YYYY-MM-DD"
    spec = params.get("set", "")
    if spec and spec.split(":")[0] not in (*GROUPS, "physics"):
        return "Set does not exist"
    return None


def _xml(body: bytes) -> web.Response:
    return web.Response(body=body, content_type="text/xml", charset="utf-8")


def _envelope(params: dict[str, str], inner: str) -> bytes:
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    attrs = "".join(f" {k}={quoteattr(v)}" for k, v in sorted(params.items()))
    return ("<?xml version='1.0' encoding='UTF-8'?>\n<OAI-PMH xmlns='http://www.openarchives.org"
            "/OAI/2.0/' xmlns:xsi='http://www.w3.org/2001/XMLSchema-instance'>\n"
            f"<responseDate>{now}</responseDate>\n<request{attrs}>http://export.arxiv.org/oai2"
            f"</request>\n{inner}\n</OAI-PMH>\n").encode()


def _error(params: dict[str, str], code: str, text: str) -> bytes:
    return _envelope(params, f'<error code="{code}">{escape(text)}</error>')


def _rfc822(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%a, %d %b %Y %H:%M:%S GMT")


def _record(item: OaiItem, raw: bool) -> str:
    p = item.paper
    sets = "".join(f"<setSpec>{escape(_archive_set(c))}</setSpec>"
                   for c in dict.fromkeys(p.categories))
    header = (f"<header>\n <identifier>oai:arXiv.org:{p.arxiv_id}</identifier>\n"
              f" <datestamp>{item.datestamp.isoformat()}</datestamp>\n {sets}\n</header>")
    optional = "".join(f"<{tag}>{escape(value)}</{tag}>" for tag, value in (
        ("comments", p.comment), ("journal-ref", p.journal_ref), ("doi", p.doi)) if value)
    title = f"<title>{escape(p.title)}</title>"
    rest = (f"<categories>{escape(' '.join(p.categories))}</categories>{optional}"
            f"<abstract>  {escape(p.abstract)}\n</abstract>")
    if raw:
        versions = "".join(
            f"<version version='v{n}'><date>{_rfc822(p.published if n == 1 else p.updated)}"
            f"</date><size>42kb</size></version>" for n in range(1, p.version + 1))
        body = (f"<arXivRaw xmlns='http://arxiv.org/OAI/arXivRaw/'><id>{p.arxiv_id}</id>"
                f"<submitter>{escape(p.authors[0] if p.authors else '')}</submitter>{versions}"
                + title + f"<authors>{escape(_and(p.authors))}</authors>" + rest
                + "</arXivRaw>")
    else:
        names = "".join(
            f"<author><keyname>{escape(n.rsplit(' ', 1)[-1])}</keyname><forenames>"
            f"{escape(n.rsplit(' ', 1)[0])}</forenames></author>" if " " in n else
            f"<author><keyname>{escape(n)}</keyname></author>" for n in p.authors)
        updated = f"<updated>{p.updated.date()}</updated>" if p.version > 1 else ""
        body = (f"<arXiv xmlns='http://arxiv.org/OAI/arXiv/'><id>{p.arxiv_id}</id><created>"
                f"{p.published.date()}</created>{updated}"
                + title + f"<authors>{names}</authors>" + rest + "</arXiv>")
    return f"<record>\n{header}\n<metadata>\n {body}\n</metadata>\n</record>\n"


def _archive_set(category: str) -> str:
    """Old-server header sets: archive level (`cs`, `physics:hep-th`)."""
    archive = category.split(".")[0]
    return archive if archive in GROUPS else f"physics:{archive}"


def _and(names: tuple[str, ...]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
