"""A local arXiv API for tests and bench/: the fetch stage talks to it exactly as to arXiv.

Answers `search_query` with Atom in the API's new (default) or old format from a corpus of
`Paper` records, and can be told to misbehave the ways arXiv does (`faults`, one per request).
In a test: `async with FakeArxiv() as fake:`; standalone:
`python -m tests.fakes.arxiv_server --port 0 [--data FILE]` prints its URL on the first line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import re
import socket
import struct
import sys
import textwrap
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

from aiohttp import web
from lxml import etree
from multidict import CIMultiDict

from storage.records import Paper

ATOM = "http://www.w3.org/2005/Atom"
ARXIV = "http://arxiv.org/schemas/atom"
OPENSEARCH = "http://a9.com/-/spec/opensearch/1.1/"
SEED_FILE = Path(__file__).resolve().parent.parent / "fixtures" / "seed-papers.json"

@dataclass
class Fault:
    """One programmed misbehaviour. `kind` is an HTTP status or one of KINDS."""

    kind: int | str
    retry_after: str | None = None  # header value sent with a status fault
    message: str = "malformed query"  # for "error_feed"
    release: asyncio.Event | None = None  # for "hold": answer normally once this is set
    # for "tamper": the normal answer with raw texts replaced, values no Paper can hold:
    # {"totalResults": "1" + "0" * 30} or {"2601.00001 published": "9999-12-31T23:59:59-01:00"}
    # (an entry's element by the arXiv id it carries; "id" replaces the whole id)
    edits: dict[str, str] = field(default_factory=dict)


KINDS = ("timeout", "reset", "empty", "short", "unsorted", "truncated", "html", "error_feed",
         "bomb", "hold", "drip", "tamper", "gzip_bomb", "endless")
DRIP_EVERY = 0.1  # seconds between the 16-byte pieces of a "drip" answer


@dataclass
class RecordedRequest:
    time: float  # time.monotonic() at arrival
    path: str
    params: dict[str, str]
    headers: CIMultiDict[str]


@dataclass
class FakeArxiv:
    """The fake API. Program it through its attributes while the client under test runs."""

    host: str = "127.0.0.1"
    port: int = 0
    format: str = "new"  # "new" or "old"
    papers: list[Paper] = field(default_factory=list)
    faults: deque[int | str | Fault] = field(default_factory=deque)
    rejected_queries: dict[str, str] = field(default_factory=dict)
    min_interval: float | None = None
    requests: list[RecordedRequest] = field(default_factory=list)
    violations: list[RecordedRequest] = field(default_factory=list)
    max_concurrent: int = 0
    latency: float = 0.0  # seconds every answer takes (the server's pace, for bench/)
    compress: bool = False  # gzip normal answers when the client accepts it
    # arXiv's clock (HTTP Date, feed <updated>): a test's Clock, so that moving it moves arXiv's
    # time too; tests of a wrong local clock give the code under test another one.
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    url: str = ""

    def __post_init__(self) -> None:
        self._in_flight = 0
        self._shutdown = asyncio.Event()
        self._arrived = asyncio.Condition()
        self._runner: web.AppRunner | None = None

    # -- programming -------------------------------------------------------------------
    def add(self, *papers: Paper) -> None:
        self.papers.extend(papers)

    def push(self, *faults: int | str | Fault) -> None:
        if any(_as_fault(f).kind == "gzip_bomb" for f in faults):
            gzip_bomb()  # made now (a second of CPU), not while a client waits with its timeout
        self.faults.extend(faults)

    async def wait_requests(self, count: int) -> None:
        """Return once `count` requests have arrived."""
        async with self._arrived:
            await self._arrived.wait_for(lambda: len(self.requests) >= count)

    @staticmethod
    def seed_corpus() -> list[Paper]:
        return seed_corpus()

    # -- lifecycle ---------------------------------------------------------------------
    async def __aenter__(self) -> FakeArxiv:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/api/query", self._query)
        app.router.add_get("/moved/api/query", self._moved)
        app.router.add_post("/_fake/faults", self._program_faults)
        app.on_response_prepare.append(self._date_header)
        # handler_cancellation: a client that gives up ends the held "timeout" handler too.
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.port = port
        self.url = f"http://{host}:{port}/api/query"

    async def stop(self) -> None:
        self._shutdown.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- serving -----------------------------------------------------------------------
    async def _query(self, request: web.Request) -> web.StreamResponse:
        entry = RecordedRequest(time.monotonic(), request.path, dict(request.query),
                                CIMultiDict(request.headers))
        too_fast = (self.min_interval is not None and len(self.requests) > 0
                    and entry.time - self.requests[-1].time < self.min_interval)
        self.requests.append(entry)
        self._in_flight += 1
        self.max_concurrent = max(self.max_concurrent, self._in_flight)
        async with self._arrived:
            self._arrived.notify_all()
        try:
            if too_fast:
                self.violations.append(entry)
                return web.Response(status=429, text="too fast")
            return await self._answer(request, entry.params)
        finally:
            self._in_flight -= 1

    async def _answer(self, request: web.Request, params: dict[str, str]) -> web.StreamResponse:
        if self.latency:
            await asyncio.sleep(self.latency)
        query = params.get("search_query", "")
        fault = _as_fault(self.faults.popleft()) if self.faults else None
        if fault is None and query in self.rejected_queries:
            fault = Fault("error_feed", message=self.rejected_queries[query])
        if fault is not None and fault.kind in ("timeout", "reset", "hold"):
            await self._stall(request, fault)
        if fault is not None and isinstance(fault.kind, int):
            return _status_response(fault)
        if fault is not None and fault.kind in _BODY_FAULTS:
            return _BODY_FAULTS[fault.kind](fault)
        if fault is not None and fault.kind == "endless":
            return await self._endless(request)
        papers, total, start = self.search(params)
        papers = _distort(papers, fault.kind if fault else None)
        body = render_feed(papers, total=total, start=start,
                           items_per_page=_int(params.get("max_results"), 10), fmt=self.format,
                           updated=self.clock())
        if fault is not None and fault.kind == "drip":
            return await self._drip(request, body)
        if fault is not None and fault.kind == "tamper":
            body = tamper(body, fault.edits)
        response = _atom_response(body)
        if self.compress:
            response.enable_compression(web.ContentCoding.gzip)
        return response

    async def _drip(self, request: web.Request, data: bytes) -> web.StreamResponse:
        """A live but crawling server: every read gets a little, the whole takes for ever."""
        response = web.StreamResponse(headers={"Content-Type": "application/atom+xml"})
        response.content_length = len(data)
        await response.prepare(request)
        for i in range(0, len(data), 16):
            if self._shutdown.is_set():
                break
            await response.write(data[i:i + 16])
            await asyncio.sleep(DRIP_EVERY)  # the server's pace, not a test waiting
        return response

    async def _date_header(self, request: web.Request, response: web.StreamResponse) -> None:
        response.headers["Date"] = format_datetime(self.clock().astimezone(UTC), usegmt=True)

    async def _endless(self, request: web.Request) -> web.StreamResponse:
        """An answer that starts like a feed and never ends, as fast as the client reads."""
        response = web.StreamResponse(headers={"Content-Type": "application/atom+xml"})
        await response.prepare(request)
        head = render_feed([], total=1, start=0, items_per_page=1).rsplit(b"</feed>", 1)[0]
        await response.write(head)
        filler = b"<!-- and more -->" * 4096
        with contextlib.suppress(ConnectionError):
            while not self._shutdown.is_set():
                await response.write(filler)
        return response

    async def _stall(self, request: web.Request, fault: Fault) -> None:
        if fault.kind == "reset":
            _reset(request)
        if fault.kind == "hold" and fault.release is not None:
            await fault.release.wait()
            return
        # Held until the client gives up (the handler is then cancelled) or the fake stops.
        await self._shutdown.wait()
        raise web.HTTPServiceUnavailable()

    async def _moved(self, request: web.Request) -> web.Response:
        """An old address, like arXiv's http:// one, that redirects to the real one."""
        raise web.HTTPMovedPermanently(location=f"/api/query?{request.query_string}")

    async def _program_faults(self, request: web.Request) -> web.Response:
        """Standalone mode: POST a JSON list of faults (ints, kinds, or Fault fields)."""
        self.push(*[Fault(**item) if isinstance(item, dict) else item
                    for item in await request.json()])
        return web.json_response({"queued": len(self.faults)})

    def _indexed(self) -> CorpusIndex:
        """The corpus's index, rebuilt whenever any paper of the corpus was replaced (tests
        edit `papers` in place: a corrected date, a new version, a paper withdrawn)."""
        key = tuple(map(id, self.papers))
        if getattr(self, "_index_key", None) != key:
            self._index, self._index_key = CorpusIndex(self.papers), key
        return self._index

    def search(self, params: dict[str, str]) -> tuple[list[Paper], int, int]:
        """The page asked for, the total number of matches and the start index."""
        matches = self._indexed().search(params.get("search_query", ""))
        key = {"submittedDate": lambda p: p.published, "lastUpdatedDate": lambda p: p.updated}
        sort_by = params.get("sortBy", "relevance")
        if sort_by in key:
            matches.sort(key=key[sort_by], reverse=params.get("sortOrder") != "ascending")
        start = max(_int(params.get("start"), 0), 0)
        size = max(_int(params.get("max_results"), 10), 0)
        return matches[start:start + size], len(matches), start


# -- faults ------------------------------------------------------------------------------
def _as_fault(item: int | str | Fault) -> Fault:
    if isinstance(item, Fault):
        return item
    if isinstance(item, str) and item not in KINDS:
        raise ValueError(f"unknown fault {item!r}; kinds: {KINDS}")
    return Fault(item)


def _status_response(fault: Fault) -> web.Response:
    headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
    text = "Rate exceeded." if fault.kind == 429 else f"error {fault.kind}"
    return web.Response(status=int(fault.kind), text=text, headers=headers)


def _reset(request: web.Request) -> None:
    """Close the connection with a TCP RST, as a proxy dropping it would."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def _distort(papers: list[Paper], kind: str | None) -> list[Paper]:
    if kind == "empty":
        return []
    if kind == "short":
        return papers[: len(papers) // 2]
    if kind == "unsorted" and len(papers) > 1:
        return papers[1:] + papers[:1]
    return papers


def _atom_response(body: bytes, status: int = 200) -> web.Response:
    return web.Response(status=status, body=body, content_type="application/atom+xml",
                        charset="utf-8")


ACCESS_DENIED = (b"<!DOCTYPE html>\n<html><head><title>Access Denied</title></head>\n"
                 b"<body><h1>Access Denied</h1><p>You don't have permission to access this "
                 b"resource.</p></body></html>\n")

_LOLS = ' <!ENTITY lol1 "lol">\n' + "".join(
    f' <!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">\n' for i in range(2, 10)
)
BILLION_LAUGHS = (
    '<?xml version="1.0"?>\n<!DOCTYPE feed [\n' + _LOLS
    + ']>\n<feed xmlns="http://www.w3.org/2005/Atom"><title>&lol9;</title></feed>\n'
).encode()


def tamper(body: bytes, edits: dict[str, str]) -> bytes:
    """Replace raw element texts of a rendered answer (see Fault.edits)."""
    root = etree.fromstring(body)
    for key, text in edits.items():
        arxiv_id, _, name = key.rpartition(" ")
        parent = root
        if arxiv_id:
            parent = next(e for e in root.iter(f"{{{ATOM}}}entry")
                          if re.search(rf"/{re.escape(arxiv_id)}v\d+$", e.findtext(f"{{{ATOM}}}id")))
        element = next(e for e in parent if etree.QName(e).localname == name)
        element.text = text
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def _truncated(fault: Fault) -> web.Response:
    whole = render_feed(seed_corpus()[:3], total=3, start=0, items_per_page=3)
    return _atom_response(whole[: len(whole) // 2])


GZIP_BOMB_MIB = 1024


def gzip_bomb() -> bytes:
    """About 1 MB of gzip that inflates to 1 GiB of zeros (a correct trailer included).

    After a full flush deflate starts afresh, so one compressed MiB repeats as it is."""
    global _GZIP_BOMB
    if _GZIP_BOMB is None:
        zeros = bytes(1 << 20)
        deflate = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
        head = deflate.compress(zeros) + deflate.flush(zlib.Z_FULL_FLUSH)
        block = deflate.compress(zeros) + deflate.flush(zlib.Z_FULL_FLUSH)
        end = deflate.flush()[:-8]  # the last, empty block without the 2 MiB trailer
        crc = 0
        for _ in range(GZIP_BOMB_MIB):
            crc = zlib.crc32(zeros, crc)
        trailer = struct.pack("<II", crc, (GZIP_BOMB_MIB << 20) & 0xFFFFFFFF)
        _GZIP_BOMB = head + block * (GZIP_BOMB_MIB - 1) + end + trailer
    return _GZIP_BOMB


_GZIP_BOMB: bytes | None = None


def _gzip_bomb(fault: Fault) -> web.Response:
    return web.Response(body=gzip_bomb(), headers={"Content-Type": "application/atom+xml",
                                                   "Content-Encoding": "gzip"})


_BODY_FAULTS: dict[str, Callable[[Fault], web.Response]] = {
    "html": lambda fault: web.Response(body=ACCESS_DENIED, content_type="text/html"),
    "bomb": lambda fault: _atom_response(BILLION_LAUGHS),
    "truncated": _truncated,
    "gzip_bomb": _gzip_bomb,
    "error_feed": lambda fault: _atom_response(render_error(fault.message), status=400),
}


# -- query matching ----------------------------------------------------------------------
_TOKEN = re.compile(
    r'\s*(?:(\()|(\))|([a-z]+):"([^"]*)"|"([^"]*)"|([a-z]+):([^\s()"]+)|([^\s()"]+))',
    re.IGNORECASE,
)
_FIELDS = ("ti", "au", "abs", "co", "jr", "cat", "rn", "all")
_OR = ("op", "", "OR")


def matches_query(query: str, paper: Paper) -> bool:
    """arXiv's query language, enough of it: fields, phrases, AND/OR/ANDNOT, parentheses.

    AND and ANDNOT bind tighter than OR; two terms side by side mean AND.
    """
    tokens = _tokenize(query)
    if not tokens:
        return False
    parser = _QueryParser(tokens, paper)
    result = parser.parse_or()
    return result and parser.done()


def _tokenize(query: str) -> list[tuple[str, str, str]]:
    """(kind, field, text) with kind "(", ")", "op" or "term"."""
    tokens: list[tuple[str, str, str]] = []
    pos = 0
    while pos < len(query):
        match = _TOKEN.match(query, pos)
        if match is None or match.end() == pos:
            break
        pos = match.end()
        lpar, rpar, f1, phrase1, phrase2, f2, word2, bare = match.groups()
        if lpar or rpar:
            tokens.append((lpar or rpar, "", ""))
        elif bare in ("AND", "OR", "ANDNOT"):
            tokens.append(("op", "", bare))
        elif f1 is not None:
            tokens.append(("term", f1.lower(), phrase1))
        elif phrase2 is not None:
            tokens.append(("term", "all", phrase2))
        elif f2 is not None and f2.lower() in _FIELDS:
            tokens.append(("term", f2.lower(), word2))
        else:
            tokens.append(("term", "all", match.group(0).strip()))
    return tokens


class _QueryParser:
    def __init__(self, tokens: list[tuple[str, str, str]], paper: Paper) -> None:
        self.tokens, self.pos, self.paper = tokens, 0, paper

    def done(self) -> bool:
        return self.pos >= len(self.tokens)

    def _peek(self) -> tuple[str, str, str] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def parse_or(self) -> bool:
        value = self.parse_and()
        while self._peek() == _OR:
            self.pos += 1
            value = self.parse_and() or value
        return value

    def parse_and(self) -> bool:
        value = self.parse_atom()
        while (token := self._peek()) is not None and token[0] != ")" and token != _OR:
            if token[0] == "op":
                self.pos += 1
            negate = token == ("op", "", "ANDNOT")
            other = self.parse_atom()
            value = value and (not other if negate else other)
        return value

    def parse_atom(self) -> bool:
        token = self._peek()
        if token is None:
            return False
        self.pos += 1
        if token[0] == "(":
            value = self.parse_or()
            if self._peek() == (")", "", ""):
                self.pos += 1
            return value
        if token[0] == "term":
            return _term_matches(token[1], token[2], self.paper)
        return False


def _words(text: str) -> str:
    return " " + " ".join(re.findall(r"\w+", text.casefold())) + " "


def _term_matches(field_name: str, text: str, paper: Paper) -> bool:
    if field_name == "cat":
        wanted = text.casefold()
        if wanted.endswith("*"):  # cat:cs.* — a whole archive
            return any(c.casefold().startswith(wanted[:-1]) for c in paper.categories)
        if "." not in wanted:  # cat:cs — also a whole archive (cs.CV, cs.LG, …)
            return any(c.casefold().split(".", 1)[0] == wanted for c in paper.categories)
        return any(c.casefold() == wanted for c in paper.categories)
    haystacks = {
        "ti": paper.title, "abs": paper.abstract, "au": " ".join(paper.authors),
        "co": paper.comment, "jr": paper.journal_ref, "rn": "",
    }
    if field_name == "all":
        hay = " ".join([*haystacks.values(), *paper.categories])
    else:
        hay = haystacks.get(field_name, "")
    needle = _words(text)
    return needle.strip() != "" and needle in _words(hay)


class CorpusIndex:
    """The same answers as `matches_query` over the corpus, from postings of word tokens and
    categories instead of a scan of every paper per request (bench_cycle measures us, not it)."""

    def __init__(self, papers: list[Paper]) -> None:
        self.papers = papers
        self.fields: list[dict[str, str]] = []
        self.postings: dict[str, set[int]] = {}
        self.categories: dict[str, set[int]] = {}
        for i, paper in enumerate(papers):
            hay = {"ti": paper.title, "abs": paper.abstract, "au": " ".join(paper.authors),
                   "co": paper.comment, "jr": paper.journal_ref, "rn": ""}
            fields = {name: _words(text) for name, text in hay.items()}
            fields["all"] = _words(" ".join([*hay.values(), *paper.categories]))
            self.fields.append(fields)
            for word in set(fields["all"].split()):
                self.postings.setdefault(word, set()).add(i)
            for category in paper.categories:
                self.categories.setdefault(category.casefold(), set()).add(i)

    def search(self, query: str) -> list[Paper]:
        tokens = _tokenize(query)
        if not tokens:
            return []
        parser = _SetParser(tokens, self)
        found = parser.parse_or()
        return [self.papers[i] for i in sorted(found)] if parser.done() else []

    def term(self, field_name: str, text: str) -> set[int]:
        if field_name == "cat":
            wanted = text.casefold()
            if wanted.endswith("*"):
                hits = [ids for c, ids in self.categories.items() if c.startswith(wanted[:-1])]
            elif "." not in wanted:
                hits = [ids for c, ids in self.categories.items()
                        if c.split(".", 1)[0] == wanted]
            else:
                hits = [self.categories.get(wanted, set())]
            return set().union(*hits)
        needle = _words(text)
        words = needle.split()
        if not words:
            return set()
        candidates = set.intersection(*(self.postings.get(w, set()) for w in words))
        return {i for i in candidates if needle in self.fields[i].get(field_name, "  ")}


class _SetParser(_QueryParser):
    """_QueryParser's grammar, evaluated to sets of paper positions."""

    def __init__(self, tokens: list[tuple[str, str, str]], index: CorpusIndex) -> None:
        self.tokens, self.pos, self.index = tokens, 0, index

    def parse_or(self) -> set[int]:  # type: ignore[override]
        value = self.parse_and()
        while self._peek() == _OR:
            self.pos += 1
            value = self.parse_and() | value
        return value

    def parse_and(self) -> set[int]:  # type: ignore[override]
        value = self.parse_atom()
        while (token := self._peek()) is not None and token[0] != ")" and token != _OR:
            if token[0] == "op":
                self.pos += 1
            other = self.parse_atom()
            value = value - other if token == ("op", "", "ANDNOT") else value & other
        return value

    def parse_atom(self) -> set[int]:  # type: ignore[override]
        token = self._peek()
        if token is None:
            return set()
        self.pos += 1
        if token[0] == "(":
            value = self.parse_or()
            if self._peek() == (")", "", ""):
                self.pos += 1
            return value
        if token[0] == "term":
            return self.index.term(token[1], token[2])
        return set()


# -- Atom rendering ----------------------------------------------------------------------
def render_feed(papers: Iterable[Paper], *, total: int, start: int, items_per_page: int,
                fmt: str = "new", updated: datetime | None = None) -> bytes:
    """An API answer as arXiv writes it: `fmt` "new" (since 2025-11) or "old"."""
    old = fmt == "old"
    nsmap: dict[str | None, str] = {None: ATOM} if old else {
        "opensearch": OPENSEARCH, "arxiv": ARXIV, None: ATOM}
    feed = etree.Element(f"{{{ATOM}}}feed", nsmap=nsmap)
    scheme = "http" if old else "https"
    _sub(feed, "id", f"{scheme}://arxiv.org/api/fake")
    _sub(feed, "title", "arXiv Query: fake")
    _sub(feed, "updated", _iso((updated or datetime.now(UTC)).replace(microsecond=0)))
    for name, value in (("totalResults", total), ("startIndex", start),
                        ("itemsPerPage", items_per_page)):
        element = etree.SubElement(feed, f"{{{OPENSEARCH}}}{name}",
                                   nsmap={"opensearch": OPENSEARCH} if old else None)
        element.text = str(value)
    for paper in papers:
        (_old_entry if old else _new_entry)(feed, paper)
    return etree.tostring(feed, xml_declaration=True, encoding="UTF-8", pretty_print=True)


def render_error(message: str) -> bytes:
    """arXiv's error answer: a feed whose one entry has an `/api/errors` id."""
    feed = etree.Element(f"{{{ATOM}}}feed",
                         nsmap={"opensearch": OPENSEARCH, "arxiv": ARXIV, None: ATOM})
    slug = re.sub(r"\W+", "_", message.lower()).strip("_")
    _sub(feed, "id", "https://arxiv.org/")
    _sub(feed, "title", "arXiv Search Results")
    for name, value in (("itemsPerPage", 1), ("totalResults", 1), ("startIndex", 0)):
        etree.SubElement(feed, f"{{{OPENSEARCH}}}{name}").text = str(value)
    entry = _sub(feed, "entry")
    _sub(entry, "id", f"https://arxiv.org/api/errors#{slug}")
    _sub(entry, "title", "Error")
    _sub(entry, "summary", message)
    _sub(_sub(entry, "author"), "name", "arXiv api core")
    return etree.tostring(feed, xml_declaration=True, encoding="UTF-8", pretty_print=True)


def _sub(parent: etree._Element, name: str, text: str | None = None,
         ns: str = ATOM, **attrib: str) -> etree._Element:
    nsmap = {"arxiv": ARXIV} if ns == ARXIV and ARXIV not in parent.nsmap.values() else None
    element = etree.SubElement(parent, f"{{{ns}}}{name}", attrib, nsmap=nsmap)
    if text is not None:
        element.text = text
    return element


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _new_entry(feed: etree._Element, p: Paper) -> None:
    entry = _sub(feed, "entry")
    vid = f"{p.arxiv_id}v{p.version}"
    _sub(entry, "id", f"http://arxiv.org/abs/{vid}")
    _sub(entry, "title", p.title)
    _sub(entry, "updated", _iso(p.updated))
    _sub(entry, "link", href=f"https://arxiv.org/abs/{vid}", rel="alternate", type="text/html")
    _sub(entry, "link", href=f"https://arxiv.org/pdf/{vid}", rel="related",
         type="application/pdf", title="pdf")
    _sub(entry, "summary", p.abstract)
    for category in p.categories:
        _sub(entry, "category", term=category, scheme=ARXIV)
    _sub(entry, "published", _iso(p.published))
    if p.comment:
        _sub(entry, "comment", p.comment, ns=ARXIV)
    _sub(entry, "primary_category", ns=ARXIV, term=p.primary_category)
    if p.journal_ref:
        _sub(entry, "journal_ref", p.journal_ref, ns=ARXIV)
    for author in p.authors:
        _sub(_sub(entry, "author"), "name", author)
    if p.doi:
        _sub(entry, "doi", p.doi, ns=ARXIV)
        _sub(entry, "link", rel="related", href=f"https://doi.org/{p.doi}", title="doi")


def _wrap(text: str, width: int) -> list[str]:
    return textwrap.wrap(text, width, break_on_hyphens=False, break_long_words=False)


def _old_entry(feed: etree._Element, p: Paper) -> None:
    """Old order, http links, hard-wrapped text and per-element arxiv namespaces."""
    entry = _sub(feed, "entry")
    vid = f"{p.arxiv_id}v{p.version}"
    _sub(entry, "id", f"http://arxiv.org/abs/{vid}")
    _sub(entry, "updated", _iso(p.updated))
    _sub(entry, "published", _iso(p.published))
    _sub(entry, "title", "\n  ".join(_wrap(p.title, 70)))
    _sub(entry, "summary", "  " + "\n".join(_wrap(p.abstract, 79)) + "\n")
    for author in p.authors:
        _sub(_sub(entry, "author"), "name", author)
    if p.doi:
        _sub(entry, "doi", p.doi, ns=ARXIV)
        _sub(entry, "link", title="doi", href=f"http://dx.doi.org/{p.doi}", rel="related")
    if p.comment:
        _sub(entry, "comment", "\n  ".join(_wrap(p.comment, 70)), ns=ARXIV)
    if p.journal_ref:
        _sub(entry, "journal_ref", p.journal_ref, ns=ARXIV)
    _sub(entry, "link", href=f"http://arxiv.org/abs/{vid}", rel="alternate", type="text/html")
    _sub(entry, "link", title="pdf", href=f"http://arxiv.org/pdf/{vid}", rel="related",
         type="application/pdf")
    _sub(entry, "primary_category", ns=ARXIV, term=p.primary_category, scheme=ARXIV)
    for category in p.categories:
        _sub(entry, "category", term=category, scheme=ARXIV)


# -- the recorded corpus -----------------------------------------------------------------
_CATEGORIES = {
    "Video Anomaly Detection": ("cs.CV", "cs.LG"),
    "Video Understanding": ("cs.CV", "cs.AI"),
    "Vision Language Model": ("cs.CV", "cs.CL"),
    "Multimodal Large Language Model": ("cs.CL", "cs.CV", "cs.AI"),
}
_GIVEN = ("Wei", "Anna", "Rahul", "Sofia", "Kenji", "Amara", "Lukas", "Mei", "Omar", "Elena",
          "Diego", "Yuki", "Fatima", "Jonas", "Priya", "Chen")
_FAMILY = ("Zhang", "Müller", "Kumar", "Rossi", "Tanaka", "Okafor", "Schmidt", "Li", "Haddad",
           "Ivanova", "García", "Sato", "Khan", "Berg", "Nair", "Wang")


def seed_corpus(path: Path = SEED_FILE) -> list[Paper]:
    """The 79 papers of the reference digest with made-up but deterministic metadata."""
    return [_seed_paper(item) for item in json.loads(path.read_text(encoding="utf-8"))]


def _seed_paper(item: dict[str, Any]) -> Paper:
    digest = hashlib.sha256(item["id"].encode()).digest()
    day = datetime.fromisoformat(item["updated"]).astimezone(UTC)
    # A deterministic time of day keeps papers of one date in a stable, distinct order.
    published = day + timedelta(seconds=int.from_bytes(digest[:4]) % 86400)
    authors = tuple(f"{_GIVEN[digest[5 + 2 * i] % 16]} {_FAMILY[digest[6 + 2 * i] % 16]}"
                    for i in range(1 + digest[4] % 6))
    categories = _CATEGORIES.get(item["keyword"], ("cs.CV",))
    return Paper(
        arxiv_id=item["id"], version=int(item["version"]),
        title=" ".join(item["title"].split()), abstract=" ".join(item["summary"].split()),
        authors=authors, published=published, updated=published,
        primary_category=categories[0], categories=categories,
        comment=" ".join(item.get("comment", "").split()),
    )


def load_papers(path: Path) -> list[Paper]:
    """--data: seed-papers.json's format, or a list of Paper fields with ISO dates."""
    items = json.loads(path.read_text(encoding="utf-8"))
    if items and "summary" in items[0]:
        return [_seed_paper(item) for item in items]
    papers = []
    for item in items:
        fields = dict(item)
        for key in ("published", "updated"):
            fields[key] = datetime.fromisoformat(fields[key])
        for key in ("authors", "categories"):
            fields[key] = tuple(fields.get(key, ()))
        papers.append(Paper(**fields))
    return papers


def _int(value: str | None, default: int) -> int:
    try:
        return int(value) if value is not None else default
    except ValueError:
        return default


async def _serve(args: argparse.Namespace) -> None:
    papers = load_papers(Path(args.data)) if args.data else seed_corpus()
    async with FakeArxiv(port=args.port, format=args.format, papers=papers,
                         min_interval=args.min_interval) as fake:
        print(fake.url, flush=True)
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--data", help="JSON papers (default: tests/fixtures/seed-papers.json)")
    parser.add_argument("--format", choices=("new", "old"), default="new")
    parser.add_argument("--min-interval", type=float, default=None)
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args))
    sys.exit(0)


if __name__ == "__main__":
    main()
