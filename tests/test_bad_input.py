"""Bad input at the pipeline's entrances: chat commands, config.toml and Slack's HTTP endpoint.

- ≥ 10,000 generated /subscribe and /unsubscribe texts (hypothesis) go through the Telegram and
  Slack argument parsers and the channel-agnostic command logic against a real store and the
  local arXiv: every one gets a reply, nothing escapes, refusals change nothing, and the store
  stays valid (integrity, foreign keys, every keyword's canonical form parses back to itself).
- Malformed config files give one clear line naming the file and key, through the real CLI.
- Forged, stale, replayed, oversized and malformed requests to the daemon's /slack/events are
  refused (401/413/400) or, for a replay inside Slack's 5-minute window, change nothing more.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode

import aiohttp
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from bot.app import App
from bot.config import Config, Secrets
from bot.deliver.cadence import is_zone, parse_cadence
from bot.faces.commands import Chat, Commands, Reply
from bot.faces.slack import parse_command as slack_parse
from bot.faces.telegram import parse_command as telegram_parse
from bot.fetch.arxiv import ArxivClient
from bot.fetch.keywords import KeywordError, ParsedKeyword, parse_keyword
from storage import keywords as kw_repo
from storage import subscribers as sub_repo
from storage.records import Paper
from storage.store import AsyncStore, Store
from tests.fakes.arxiv_server import FakeArxiv
from tests.fakes.daemon import DaemonProcess, free_port, run_cli, write_config
from tests.fakes.slack_server import FakeSlack, slack_escape, slack_signature

TEXTS = 10_000  # commands that must reach the command logic
BATCH = 50
EXAMPLES = 220  # batches: some texts never reach it (the adapter drops them)
MAX_KEYWORDS = 300

# --- the generated texts ----------------------------------------------------------------------

FRAGMENTS = [
    # arXiv syntax, right and wrong
    "ti:", "au:", "abs:", "cat:cs.CV", "cat:physics.optics", "all:", "rn:", "jr:", "co:",
    " AND ", " OR ", " ANDNOT ", "AND", "and", "(", ")", "((", "))", '"', '""', "ti:\"x\"",
    "au:Smith_J", "ti:(a OR b)", "ANDNOT ANDNOT", "OR)", "(AND",
    # typographic quotes, dashes and spaces
    "“", "”", "‘", "’", "«", "»", "„", "″", "–", "—", "−", "\u00a0", "\u2009", "\u3000",
    "ﬁ", "Ⅻ", "ǅ", "İ", "ß", "ﬀ",
    # SQL
    "'; DROP TABLE subscriptions; --", "\" OR 1=1 --", "%", "_", "\\", "NULL", "/* */", "';",
    "UNION SELECT * FROM settings", "?", ":name", "$1",
    # HTML and Markdown
    "<script>alert(1)</script>", "</b>", "<b>", "&amp;", "&lt;", "&#0;", "<a href='x'>", "|",
    "*", "`", "[x](http://e.org)", "{{ cfg }}", "{% raw %}", "$x_i$",
    # Slack entities as the wire carries them and as users type them
    "<!channel>", "<!here>", "<!everyone>", "<@U0123ABC>", "<#C0123|general>",
    "<https://example.org|label>", "<mailto:a@b.org|a@b.org>", "&gt;",
    # controls, invisibles, surrogates, bidi
    "\x00", "\x07", "\x1b[31m", "\r\n", "\n", "\t", "\u200b", "\u200e", "\u202e", "\ufeff",
    "\ud800", "\udfff", "\U0001f600", "e\u0301",
    # "all", the word /unsubscribe treats specially
    "all", "ALL", " all ",
    # cadences, zones and exclusions (/digest, /timezone, -word)
    "daily ", "weekly ", "instant", "default", "mon ", "Sunday ", "08:00", "8:5", "25:61", "-1:00",
    "Europe/Berlin", "Berlin", "asia/tokyo", "Etc/GMT+5", "America/Argentina/Buenos_Aires", "../",
    "New York", " -surveillance", ' -"crowd counting"', " -", " --", " NOT ", " not ",
]
WORDS = ["video", "anomaly", "detection", "graph", "neural", "networks", "vision", "language",
         "model", "Transformer", "diffusion", "Übersetzung", "学习", "x"]


def long_line(seed: str, n: int) -> str:
    return (seed * (n // max(len(seed), 1) + 1))[:n]


TEXT = st.one_of(
    st.text(max_size=40),  # arbitrary Unicode, controls included
    st.text(st.characters(codec=None, categories=None), max_size=20),  # surrogates too
    st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.sampled_from(WORDS),
                       st.text(max_size=6)), max_size=12).map("".join),
    st.lists(st.sampled_from(WORDS), min_size=1, max_size=4).map(" ".join),  # plain phrases
    st.lists(st.sampled_from(WORDS), min_size=1, max_size=3).map(  # typographic variants
        lambda w: "“" + "\u00a0".join(w).upper() + "”"),
    st.builds(long_line, st.text(min_size=1, max_size=8), st.integers(190, 210)),
    st.builds(long_line, st.text(min_size=1, max_size=8), st.integers(9_990, 10_010)),
)
VERB = st.sampled_from(["subscribe"] * 5 + ["unsubscribe"] * 4 + ["digest"] * 2
                       + ["timezone"] * 2 + ["list", "latest", "x", ""])
ADDRESS = st.sampled_from(["1", "2", "-1003", "C0FUZZ1", "C0FUZZ2"])
COMMAND = st.tuples(VERB, ADDRESS, TEXT)


# --- the world the commands act on --------------------------------------------------------------

CORPUS = [Paper(arxiv_id=f"2514.{n:05d}", version=1, title=f"{w} {v} study {n}",
                abstract=f"About {w} and {v}.", authors=("Ada Lovelace",),
                published=datetime.now(UTC) - timedelta(days=n),
                updated=datetime.now(UTC) - timedelta(days=n), primary_category="cs.LG")
          for n, (w, v) in enumerate(zip(WORDS, reversed(WORDS), strict=True), start=1)]


@dataclass
class Fuzz:
    app: App
    arxiv: FakeArxiv
    commands: dict[str, Commands]
    fed: int = 0
    replies: dict[str, int] = field(default_factory=dict)

    def chat(self, address: str) -> Chat:
        channel = "slack" if address.startswith("C") else "telegram"
        return Chat(channel, address, is_group=address.startswith(("-", "C")))

    async def feed(self, verb: str, address: str, text: str) -> None:
        chat = self.chat(address)
        parsed = self.parse(chat, verb, text)
        if parsed is None:  # the adapter would not call the command logic at all
            return
        verb, arg = parsed
        before = await self.followed(chat)
        settings_before = await self.settings(chat)
        reply = await self.commands[chat.channel].handle(chat, verb, arg)
        self.fed += 1
        what = (chat.address, verb, arg[:300])
        assert isinstance(reply, Reply) and isinstance(reply.text, str) and reply.text.strip()
        assert sendable(reply.text), what  # no lone surrogate echoed back: it could not go
        if reply.followup is not None:
            later = await reply.followup
            assert isinstance(later, Reply) and later.text.strip(), what
        after = await self.followed(chat)
        self.check_change(verb, reply.text, before, after, what)
        if not reply.text.startswith("Done:"):  # only a confirmed /digest or /timezone changes
            assert await self.settings(chat) == settings_before, (what, reply.text)
        kind = reply.text.split("'")[0].split(":")[0][:40]
        self.replies[kind] = self.replies.get(kind, 0) + 1

    def parse(self, chat: Chat, verb: str, text: str) -> tuple[str, str] | None:
        """What each adapter makes of the message before Commands sees it."""
        if chat.channel == "slack":  # a form body in UTF-8, decoded with "replace"
            wire = slack_escape(f"{verb} {text}").encode("utf-8", "surrogatepass")
            return slack_parse("/papers", wire.decode("utf-8", "replace"))
        found = telegram_parse(f"/{verb} {text}", "DailyPapersBot")
        return None if found is None else found[:2]

    async def followed(self, chat: Chat) -> set[str]:
        def read(store: Store) -> set[str]:
            sub = sub_repo.find(store.db, chat.channel, chat.address)
            return {k.canonical for k, _ in sub_repo.subscriptions(store.db, sub.id)} if sub else set()

        return await self.app.store.run(read)

    async def settings(self, chat: Chat) -> tuple[str | None, str | None]:
        """Its own cadence and zone (none: the channel's, as for a chat never seen)."""
        sub = await self.app.store.call(sub_repo.find, chat.channel, chat.address)
        return (sub.digest_time, sub.timezone) if sub else (None, None)

    @staticmethod
    def check_change(verb: str, text: str, before: set[str], after: set[str],
                     what: tuple[str, str, str]) -> None:
        """A refusal changes nothing; a confirmation changes exactly one keyword (or all)."""
        if verb == "subscribe" and text.startswith("Subscribed to"):
            assert before <= after and len(after - before) == 1, (what, text)
        elif verb == "unsubscribe" and text.startswith("Unsubscribed from all"):
            assert after == set(), (what, text)
        elif verb == "unsubscribe" and text.startswith("Unsubscribed from"):
            assert after <= before and len(before - after) == 1, (what, text)
        else:
            assert after == before, (what, text)

    async def check_store(self) -> None:
        await self.app.store.run(check_store)


def sendable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def reparse(stored: str) -> ParsedKeyword:
    try:
        return parse_keyword(stored)
    except KeywordError as exc:
        raise AssertionError(f"stored keyword {stored[:80]!r}… ({len(stored)} characters) no "
                             f"longer parses: {exc.message}") from None


def check_store(store: Store) -> None:
    db = store.db
    assert [tuple(r) for r in db.conn.execute("PRAGMA integrity_check")] == [("ok",)]
    assert list(db.conn.execute("PRAGMA foreign_key_check")) == []
    keywords = kw_repo.all_keywords(db)
    assert len(keywords) <= MAX_KEYWORDS
    for kw in keywords:
        again = reparse(kw.canonical)
        assert (again.canonical, again.query) == (kw.canonical, kw.query), kw
        assert reparse(kw.display).canonical == kw.canonical, kw
    for row in db.query("SELECT subscriber_id, count(*) AS n FROM subscriptions "
                        "GROUP BY subscriber_id"):
        assert row["n"] <= 50, row
    for row in db.query("SELECT digest_time, timezone FROM subscribers"):
        assert row["digest_time"] is None or str(parse_cadence(row["digest_time"])) == \
            row["digest_time"], row
        assert row["timezone"] is None or is_zone(row["timezone"]), row


@contextlib.asynccontextmanager
async def fuzz_world(tmp: Path) -> AsyncIterator[Fuzz]:
    cfg = Config()
    cfg.arxiv.request_interval = 0.0
    cfg.arxiv.max_keywords = MAX_KEYWORDS
    cfg.storage.path = tmp / "fuzz.db"
    cfg.digest.path = None
    async with FakeArxiv(papers=list(CORPUS)) as arxiv:
        cfg.arxiv.api_url = arxiv.url
        store = await AsyncStore(cfg.storage.path).open()
        client = ArxivClient(arxiv.url, request_interval=0.0, timeout=5, max_attempts=2,
                             backoff_base=0.001)
        app = App(cfg, Secrets(), store, client)
        try:
            yield Fuzz(app, arxiv, {c: Commands(app, channel=c) for c in ("telegram", "slack")})
        finally:
            await client.aclose()
            await store.close()


@pytest.mark.parametrize("text", ["ﬃ" * 150, "ﷺ" * 20, "㍿" * 60, "ß" * 150 + " x"],
                         ids=["ffi-ligature", "arabic-ligature", "squared-kanji", "sharp-s"])
def test_a_keyword_that_grows_under_nfkc_stays_within_the_limit(text: str) -> None:
    """Found by the fuzz test: the length limit must hold for the form that is stored and
    sent to arXiv, or the stored canonical form no longer parses back (and the query grows
    up to 18 times the limit: "ﷺ" is 18 characters after NFKC)."""
    try:
        parsed = parse_keyword(text)
    except KeywordError:
        return  # refused: fine
    assert len(parsed.canonical) <= 200
    assert parse_keyword(parsed.canonical).canonical == parsed.canonical


@pytest.mark.filterwarnings("ignore:Generating overly large repr")  # a failing batch is large
@pytest.mark.timeout(600)  # 25-30 s of CPU, 100-130 s on a busy machine: started first
def test_ten_thousand_generated_commands(tmp_path: Path) -> None:
    """Hypothesis drives batches; one event loop (a Runner) serves the store and the fake."""
    with asyncio.Runner() as runner:
        context = fuzz_world(tmp_path)
        fuzz = runner.run(context.__aenter__())
        try:
            # No shrinking: the store carries state from batch to batch, so a smaller batch
            # would not replay the failure; the assertion names the failing text instead.
            @settings(max_examples=EXAMPLES, deadline=None, database=None,
                      phases=(Phase.explicit, Phase.generate),
                      suppress_health_check=list(HealthCheck))
            @given(st.lists(COMMAND, min_size=BATCH, max_size=BATCH))
            def feed(batch: list[tuple[str, str, str]]) -> None:
                async def run() -> None:
                    for verb, address, text in batch:
                        await fuzz.feed(verb, address, text)
                    await fuzz.check_store()

                runner.run(run())

            feed()
        finally:
            runner.run(context.__aexit__(None, None, None))
    print(f"\nbad input: {EXAMPLES * BATCH} texts generated, {fuzz.fed} reached the command "
          f"logic; replies by kind: "
          f"{dict(sorted(fuzz.replies.items(), key=lambda kv: -kv[1])[:12])}")
    assert fuzz.fed >= TEXTS


# --- malformed config files, through the real CLI -----------------------------------------------

BAD_CONFIGS = {
    "not toml": ("[arxiv\nkeywords = [", "not valid TOML"),
    "unknown top key": ("[arxvi]\nkeywords = []", "unknown key 'arxvi'"),
    "unknown nested key": ("[arxiv]\npoll_intervall = 60", "unknown key 'arxiv.poll_intervall'"),
    "section not a table": ('arxiv = "yes"', "[arxiv] must be a table"),
    "string for a number": ('[arxiv]\npoll_interval = "1h"', "'arxiv.poll_interval' must be"),
    "bool for a number": ("[arxiv]\nmax_papers = true", "'arxiv.max_papers' must be"),
    "float for a whole number": ("[arxiv]\nmax_papers = 10.5", "'arxiv.max_papers' must be"),
    "string for a list": ('[arxiv]\nkeywords = "video"', "'arxiv.keywords' must be a list"),
    "number in a list": ("[arxiv]\nkeywords = [1, 2]", "'arxiv.keywords[0]' must be"),
    "string for a bool": ('[telegram]\ngroup_admins_only = "yes"',
                          "'telegram.group_admins_only' must be"),
    "out of range": ("[arxiv]\nmax_papers = 0", "'arxiv.max_papers' must be between"),
    "bad api url": ('[arxiv]\napi_url = "export.arxiv.org/api/query"',
                    "'arxiv.api_url' must be an http(s) URL"),
    "bad public url": ('[web]\npublic_url = "ftp://papers.example.org"',
                       "'web.public_url' must be an http(s) URL"),
    "bad digest time": ('[telegram]\ndigest_time = "25:00"', "'telegram.digest_time' must be"),
    "bad digest time form": ('[email]\ndigest_time = "8am"', "'email.digest_time' must be"),
    "bad zone": ('[slack]\ntimezone = "Mars/Olympus"', "'slack.timezone' 'Mars/Olympus'"),
    "bad security": ('[email]\nsecurity = "ssl"', "'email.security' must be"),
    "slack channel name": ('[[slack.channels]]\nchannel = "#papers"\nkeywords = ["x y"]',
                          "is a name (#papers); use the channel ID"),
}
UNKNOWN_KEY = "[arxiv]\npoll_intervall = 60"
COMMANDS = [("status",), ("digest",), ("run", "--once"), ("migrate",), ("subscriptions",),
            ("subscribe", "--telegram", "42", "graph neural networks"),
            ("unsubscribe", "--telegram", "42", "--all")]


def one_clear_line(name: object, config: Path, code: int, out: str, err: str,
                   expected: str) -> None:
    lines = err.strip().splitlines()
    assert code == 2 and out == "", (name, code, out, err)
    assert len(lines) == 1, (name, err)  # one line, no traceback
    assert lines[0].startswith(f"error: {config}"), (name, lines)
    assert expected in lines[0], (name, lines[0])


@pytest.mark.slow
async def test_malformed_config_files_give_one_clear_line(tmp_path: Path) -> None:
    async def one(name: str, text: str) -> tuple[str, Path, int, str, str]:
        directory = tmp_path / name.replace(" ", "-")
        directory.mkdir()
        config = write_config(directory, text)
        return name, config, *await run_cli(config, "status")

    results = await asyncio.gather(*(one(n, t) for n, (t, _) in BAD_CONFIGS.items()))
    for name, config, code, out, err in results:
        one_clear_line(name, config, code, out, err, BAD_CONFIGS[name][1])
        assert not (config.parent / "daily-papers.db").exists(), name  # nothing was created


@pytest.mark.slow
async def test_every_command_reports_a_malformed_config_in_one_line(tmp_path: Path) -> None:
    async def one(args: tuple[str, ...]) -> tuple[tuple[str, ...], Path, int, str, str]:
        directory = tmp_path / "-".join(args[:2]).strip("-")
        directory.mkdir()
        config = write_config(directory, UNKNOWN_KEY)
        return args, config, *await run_cli(config, *args)

    for args, config, code, out, err in await asyncio.gather(*(one(a) for a in COMMANDS)):
        one_clear_line(args, config, code, out, err, "unknown key 'arxiv.poll_intervall'")


@pytest.mark.slow
async def test_a_bad_keyword_in_the_config_stops_the_daemon_before_any_request(
        tmp_path: Path) -> None:
    async with FakeArxiv() as arxiv:
        config = write_config(tmp_path, f"""[arxiv]
api_url = "{arxiv.url}"
keywords = ["video understanding", "ti:(unbalanced"]
[digest]
path = ""
""")
        code, out, err = await run_cli(config, "run", "--once")
    one_clear_line("bad keyword", config, code, out, err,
                   "arxiv.keywords[1]: keyword 'ti:(unbalanced'")
    assert arxiv.requests == []


# --- Slack requests to the daemon ----------------------------------------------------------------

SECRET = "fuzz-signing-secret-0123456789abcdef"
CHANNEL = "C0BADINPUT"


@dataclass
class SlackDaemon:
    url: str
    fake: FakeSlack
    session: aiohttp.ClientSession

    def signed(self, text: str, *, command: str = "/papers", timestamp: int | None = None,
               ) -> tuple[bytes, dict[str, str]]:
        return self.fake.signed_command_request(SECRET, command, slack_escape(text),
                                                channel_id=CHANNEL, team_id=self.fake.team_id,
                                                timestamp=timestamp)

    async def post(self, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
        async with self.session.post(f"{self.url}/slack/events", data=body,
                                     headers=headers) as resp:
            return resp.status, await resp.text()


def sign(body: bytes, timestamp: int | None = None,
         content_type: str = "application/x-www-form-urlencoded") -> dict[str, str]:
    ts = str(int(time.time()) if timestamp is None else timestamp)
    return {"Content-Type": content_type, "X-Slack-Request-Timestamp": ts,
            "X-Slack-Signature": slack_signature(SECRET, ts, body)}


@pytest.fixture
async def slack_daemon(tmp_path: Path) -> AsyncIterator[tuple[SlackDaemon, FakeArxiv, Path]]:
    async with FakeArxiv(papers=list(CORPUS)) as arxiv, FakeSlack() as fake:
        port = free_port()
        config = write_config(tmp_path, f"""
[arxiv]
api_url = "{arxiv.url}"
keywords = []
poll_interval = 3600
schedule = "interval"
request_interval = 0
[storage]
path = "papers.db"
[digest]
path = ""
[slack]
api_url = "{fake.api_url}"
[web]
port = {port}
""")
        env = {"SLACK_BOT_TOKEN": fake.bot_token, "SLACK_SIGNING_SECRET": SECRET}
        fresh = aiohttp.TCPConnector(force_close=True)  # a refused body may end the connection
        async with (DaemonProcess(config, "run", env=env) as daemon,
                    aiohttp.ClientSession(connector=fresh) as s):
            await daemon.wait_for_log("web server listening")
            try:
                yield SlackDaemon(f"http://127.0.0.1:{port}", fake, s), arxiv, tmp_path
            finally:
                print(daemon.log)
            assert await daemon.stop() == 0


def subscriptions(db: Path) -> list[tuple[str, str]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT b.address, k.canonical FROM subscriptions s JOIN subscribers "
                            "b ON b.id = s.subscriber_id JOIN keywords k ON k.id = "
                            "s.keyword_id").fetchall()
    finally:
        conn.close()


def malformed_requests() -> Iterator[tuple[str, bytes, dict[str, str], set[int]]]:
    """(what, body, headers, acceptable statuses) — all properly signed unless said."""
    now = int(time.time())
    body = urlencode({"command": "/papers", "text": "subscribe x y", "channel_id": CHANNEL,
                      "team_id": "T0001", "user_id": "U1"}).encode()
    yield "forged signature", body, {**sign(body), "X-Slack-Signature": "v0=" + "0" * 64}, {401}
    yield "no signature", body, {"Content-Type": "application/x-www-form-urlencoded"}, {401}
    yield "stale (6 minutes)", body, sign(body, now - 360), {401}
    yield "from the future (6 minutes)", body, sign(body, now + 360), {401}
    yield "timestamp not a number", body, {**sign(body), "X-Slack-Request-Timestamp": "soon"}, {401}
    yield "signed by another secret", body, {
        **sign(body), "X-Slack-Signature": slack_signature("other", str(now), body)}, {401}
    yield "body changed after signing", body + b"&x=1", sign(body), {401}
    big = body + b"&pad=" + b"x" * 40_000
    truncated = b'{"type": "event_callback", "event": {'
    yield "unsigned truncated json", truncated, {"Content-Type": "application/json"}, {400, 401}
    yield "oversized, signed", big, sign(big), {413}
    yield "oversized, lying Content-Length", body, {**sign(body), "Content-Length": "999999"}, {413}
    # Well-formed but nothing to act on: Bolt answers 404 ("no listener"), which is fine.
    unhandled = {400, 404}
    for what, raw, allowed in [
        ("empty body", b"", unhandled),
        ("form without a command", b"text=subscribe+x+y&channel_id=" + CHANNEL.encode(),
         unhandled),
        ("form with an unknown command", b"command=%2Fdrop&text=x&channel_id=" + CHANNEL.encode(),
         unhandled),
        ("json that is no event", b'{"hello": "world"}', unhandled),
        # The adapter decodes the body with "replace" before Bolt checks the signature, so
        # invalid UTF-8 no longer matches it: refused as unsigned, which is fine too.
        ("invalid utf-8", b"\xff\xfe\x00garbage\x80", {400, 401}),
        # Unparsable: must be 400, not a 500 with a traceback in the log.
        ("json list", b"[1, 2, 3]", {400}),
        ("truncated json", b'{"type": "event_callback", "event": {', {400}),
        ("payload that is not json", b"payload=%7Bnot+json", {400}),
    ]:
        ctype = "application/json" if raw.startswith((b"{", b"[")) else \
            "application/x-www-form-urlencoded"
        yield what, raw, sign(raw, content_type=ctype), allowed


@pytest.mark.slow
async def test_forged_stale_oversized_and_malformed_slack_requests_change_nothing(
        slack_daemon: tuple[SlackDaemon, FakeArxiv, Path]) -> None:
    d, arxiv, tmp = slack_daemon
    answers, wrong = {}, {}
    for what, body, headers, allowed in malformed_requests():
        status, text = await d.post(body, headers)
        answers[what] = status
        if status not in allowed:
            wrong[what] = (status, text[:200])
        assert SECRET not in text
    print(f"\nslack requests refused: {answers}")
    assert wrong == {}
    assert subscriptions(tmp / "papers.db") == []
    assert d.fake.posts == [] and d.fake.responses == [] and arxiv.requests == []
    status, text = await d.post(*d.signed("list"))  # and the endpoint still works
    assert status == 200 and json.loads(text)["text"].startswith("No keywords are followed")


@pytest.mark.slow
async def test_a_replayed_command_changes_nothing_more(
        slack_daemon: tuple[SlackDaemon, FakeArxiv, Path]) -> None:
    """The signature covers the timestamp, and requests older than 5 minutes are refused;
    inside the window the daemon remembers every signature it accepted and refuses a replay
    (401), so a recorded unsubscribe-then-subscribe cannot re-apply old commands. A real
    repeat (Slack signs every invocation anew) is answered, and commands are idempotent: no
    second subscription, announcement or poll."""
    d, arxiv, tmp = slack_daemon
    subscribe = d.signed("subscribe graph neural networks")
    status, first = await d.post(*subscribe)
    assert status == 200 and json.loads(first)["text"].startswith("Subscribed to")
    await d.fake.wait_for(lambda: len(d.fake.responses) == 1 and len(d.fake.posts) == 1,
                          timeout=20)  # the first look and the one announcement
    polls = len(arxiv.requests)
    status, again = await d.post(*d.signed("subscribe graph neural networks"))
    assert status == 200 and json.loads(again)["text"].startswith("Already subscribed to")
    unsubscribe = d.signed("unsubscribe graph neural networks")
    assert json.loads((await d.post(*unsubscribe))[1])["text"].startswith("Unsubscribed from")
    await d.fake.wait_for(lambda: len(d.fake.posts) == 2, timeout=60)
    for replay in (subscribe, unsubscribe, subscribe):
        status, refused = await d.post(*replay)
        assert status == 401 and json.loads(refused) == {"error": "replayed request"}
    status, replayed = await d.post(*d.signed("unsubscribe graph neural networks"))
    assert status == 200 and json.loads(replayed)["text"].startswith("Nothing to unsubscribe")
    status, _ = await d.post(*d.signed("subscribe graph neural networks",
                                         timestamp=int(time.time()) - 301))
    assert status == 401  # a recorded request is useless after 5 minutes
    status, listing = await d.post(*d.signed("list"))
    assert json.loads(listing)["text"].startswith("No keywords are followed")
    assert subscriptions(tmp / "papers.db") == []
    assert len(arxiv.requests) == polls and len(d.fake.posts) == 2

