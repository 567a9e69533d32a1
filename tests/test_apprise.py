"""The apprise notifier against a real local receiver of apprise's `json://` targets: what a
target receives, the limits each service reports, hostile text, and every answer's outcome."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from apprise.plugins.custom_json import NotifyJSON
from click.testing import CliRunner

from bot import channels
from bot.cli import cli
from bot.config import (
    AppriseConfig,
    AppriseTarget,
    ArxivConfig,
    Config,
    ConfigError,
    DigestConfig,
    Secrets,
    StorageConfig,
    load_config,
)
from bot.daemon import Daemon, prepare_store
from bot.logs import redactor
from notifiers.apprise import (
    DEFAULT_BODY_CHARS,
    UNUSABLE_WAIT,
    AppriseNotifier,
    url_secrets,
)
from notifiers.base import Message, Outcome
from storage.records import OutboxRow, Paper, Subscriber
from tests.conftest import Clock, PaperFactory
from tests.fakes.apprise_receiver import AppriseReceiver
from tests.fakes.arxiv_server import FakeArxiv
from tests.fakes.daemon import write_config

KEYWORD = "graph neural networks"
ABS = re.compile(r"https://arxiv\.org/abs/(\d{4}\.\d{5})")


@pytest.fixture
async def rx() -> AsyncIterator[AppriseReceiver]:
    async with AppriseReceiver() as receiver:
        yield receiver


def rows_of(papers: list[Paper], keywords: tuple[str, ...] = (KEYWORD,)) -> list[OutboxRow]:
    return [OutboxRow(i, 1, p, keywords) for i, p in enumerate(papers, start=1)]


def target(name: str) -> Subscriber:
    return Subscriber(1, "apprise", name)


def ids_in(messages: list[Message]) -> list[str]:
    return [arxiv_id for m in messages for arxiv_id in ABS.findall(m.payload.body)]


async def test_a_json_target_gets_its_papers_as_markdown_with_its_credentials(
        rx: AppriseReceiver, paper: PaperFactory) -> None:
    notifier = AppriseNotifier({"lab": rx.target("hooks/lab", "reader:Pa55-word-1")})
    papers = [paper(days=0.1), paper(days=0.2)]
    messages = notifier.pack(target("lab"), rows_of(papers))
    assert len(messages) == 1
    delivery = await notifier.send(target("lab"), messages[0])
    assert delivery.outcome is Outcome.SENT
    (post,) = rx.posts_to("hooks/lab")
    assert post.auth == "reader:Pa55-word-1"
    assert post.title == "New on arXiv: 2 papers"
    assert post.message.startswith(f"**[{papers[0].title}]({papers[0].abs_url})**\n"
                                   "Ada Lovelace, Alan Turing · ")
    assert f"· cs.LG · _{KEYWORD}_\n{papers[0].abstract}" in post.message
    assert ABS.findall(post.message) == [p.arxiv_id for p in papers]


def test_each_service_is_packed_within_the_limits_apprise_reports(paper: PaperFactory) -> None:
    papers = [paper(days=0.01 * n, abstract="word " * 400) for n in range(1, 41)]
    notifier = AppriseNotifier({
        "discord": "discord://123456789012/T0KEN-discord-abc",  # 2000, title counts against it
        "mattermost": "mmost://chat.example.org/hooktoken1234",  # 4000, no title
        "sms": "clicksend://user:pass@15551234567",  # 160, plain text
    })
    bounds = {"discord": 2000 - 48, "mattermost": 4000, "sms": 160}
    for name, bound in bounds.items():
        messages = notifier.pack(target(name), rows_of(papers))
        assert ids_in(messages) == [p.arxiv_id for p in papers], name  # each once, in order
        assert all(len(m.payload.body) <= bound for m in messages), name
        assert [m.part for m in messages] == list(range(1, len(messages) + 1))
    discord = notifier.pack(target("discord"), rows_of(papers))
    first = discord[0]
    assert first.payload.title == f"New on arXiv: {len(first.rows)} papers (1/{len(discord)})"
    mattermost = notifier.pack(target("mattermost"), rows_of(papers))
    assert mattermost[0].payload.title == ""  # the header opens the body instead
    assert mattermost[0].payload.body.startswith("New on arXiv: ")
    sms = notifier.pack(target("sms"), rows_of(papers))
    assert len(sms) == len(papers)  # one shortened paper per message, its link kept
    assert not sms[0].payload.body.count("**")  # plain text: the service has no Markdown


def test_a_service_that_reports_no_body_limit_gets_the_conservative_default(
        monkeypatch: pytest.MonkeyPatch, paper: PaperFactory) -> None:
    monkeypatch.setattr(NotifyJSON, "body_maxlen", 0)
    notifier = AppriseNotifier({"lab": "json://127.0.0.1:9/"})
    papers = [paper(days=0.01 * n, abstract="word " * 60) for n in range(1, 30)]
    messages = notifier.pack(target("lab"), rows_of(papers))
    assert len(messages) > 1
    assert all(len(m.payload.body) <= DEFAULT_BODY_CHARS for m in messages)
    assert ids_in(messages) == [p.arxiv_id for p in papers]


def test_hostile_text_stays_text_in_markdown_and_pings_nobody(paper: PaperFactory) -> None:
    hostile = paper(title="@everyone *bold* [click](https://evil.example) <script>x</script>",
                    abstract="# Heading | `code` ~strike~ @here \\ end")
    notifier = AppriseNotifier({"md": "json://127.0.0.1:9/",
                                "text": "clicksend://user:pass@15551234567"})
    (md,) = notifier.pack(target("md"), rows_of([hostile], ("@channel _x_",)))
    body = md.payload.body
    assert "@everyone" not in body and "@here" not in body and "@channel" not in body
    assert "@\u200beveryone" in body
    assert r"\*bold\* \[click\](https://evil.example) \<script\>x\</script\>" in body
    assert r"\# Heading \| \`code\` \~strike\~" in body and r"\\ end" in body
    assert "_@\u200bchannel \\_x\\__" in body
    (text,) = notifier.pack(target("text"), rows_of([hostile]))
    assert "@everyone" not in text.payload.body and "\\" not in text.payload.body


async def test_a_refusal_or_an_unreachable_service_is_a_retry_with_apprise_s_reason(
        rx: AppriseReceiver, paper: PaperFactory) -> None:
    rx.answer("flaky", 500)
    notifier = AppriseNotifier({"flaky": rx.target("flaky"), "gone": "json://127.0.0.1:9/"})
    rows = rows_of([paper(days=0.1)])
    for name, said in [("flaky", "error=500"), ("gone", "Connection error")]:
        (message,) = notifier.pack(target(name), rows)
        delivery = await notifier.send(target(name), message)
        assert delivery.outcome is Outcome.RETRY, name
        assert not delivery.rate_limited  # an attempt: the tenth ends the row failed
        assert said in delivery.reason, delivery.reason
    assert [p.status for p in rx.posts_to("flaky")] == [500]  # apprise itself did not retry


async def test_a_target_without_a_usable_url_keeps_its_rows_waiting(paper: PaperFactory) -> None:
    notifier = AppriseNotifier({"typo": "discrod://123/abc"}, {"unset": "LAB_URL is not set"})
    rows = rows_of([paper(days=0.1), paper(days=0.2)])
    for name, why in [("typo", "apprise cannot use its URL"), ("unset", "LAB_URL is not set"),
                      ("removed", "no [[apprise.targets]] entry")]:
        (message,) = notifier.pack(target(name), rows)
        assert len(message.rows) == 2
        delivery = await notifier.send(target(name), message)
        assert delivery.outcome is Outcome.RETRY and delivery.rate_limited  # not an attempt
        assert delivery.retry_after == UNUSABLE_WAIT
        assert why in delivery.reason


async def test_a_service_s_own_pace_is_kept_between_messages_to_it(
        rx: AppriseReceiver, monkeypatch: pytest.MonkeyPatch, paper: PaperFactory) -> None:
    monkeypatch.setattr(NotifyJSON, "request_rate_per_sec", 30.0)
    notifier = AppriseNotifier({"lab": rx.target("lab"), "other": rx.target("other")})
    (message,) = notifier.pack(target("lab"), rows_of([paper(days=0.1)]))
    assert notifier.ready_in(target("lab")) == 0
    assert (await notifier.send(target("lab"), message)).outcome is Outcome.SENT
    assert 25 < notifier.ready_in(target("lab")) <= 30  # the dispatcher serves others meanwhile
    assert notifier.ready_in(target("other")) == 0


def test_the_keys_inside_an_apprise_url_are_found_for_the_redactor() -> None:
    found = url_secrets("json://reader:Pa55@127.0.0.1:8080/hooks/T0KEN-abc-123?key=v4lue-x9z")
    assert {"Pa55", "T0KEN-abc-123", "v4lue-x9z"} <= set(found)
    assert "hooks" not in found and "127.0.0.1" not in found and "reader" not in found
    assert {"123456789012", "T0KEN-discord-abc"} <= set(
        url_secrets("discord://123456789012/T0KEN-discord-abc"))
    assert "123456:AAH-bot-token" in url_secrets("tgram://123456:AAH-bot-token/4242")


# -- the channel in the house: config, registry, command line -------------------------------------


@pytest.mark.parametrize(("table", "message"), [
    ('name = "lab discord"\nurl_env = "LAB_URL"',
     "'apprise.targets[0].name' must be a target name of letters, digits"),
    ('name = "lab"\nurl_env = "discord://1234/abcd"',
     "'apprise.targets[0].url_env' must name an environment variable (like DISCORD_WEBHOOK_URL)"),
    ('name = "lab"\nurl_env = "A_URL"\n[[apprise.targets]]\nname = "lab"\nurl_env = "B_URL"',
     "'apprise.targets[1].name' 'lab' names two targets"),
    ('name = "lab"\nurl_env = "A_URL"\nkeywords = ["x", 3]',
     "'apprise.targets[0].keywords[1]' must be a string"),
])
def test_a_bad_target_in_config_is_one_line_naming_its_key(tmp_path: Path, table: str,
                                                            message: str) -> None:
    config = write_config(tmp_path, f"[[apprise.targets]]\n{table}\n")
    with pytest.raises(ConfigError) as info:
        load_config(config)
    assert str(info.value).startswith(f"{config}: {message}"), str(info.value)


async def test_the_registry_builds_each_target_with_its_url_redacted(
        rx: AppriseReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    url = rx.target("hooks/T0KEN-registry-99", "reader:Pa55-registry")
    monkeypatch.setenv("LAB_APPRISE_URL", url)
    monkeypatch.delenv("OFF_APPRISE_URL", raising=False)
    monkeypatch.setenv("TYPO_APPRISE_URL", "https//discord.com/api/webhooks/1/x")
    cfg = Config(apprise=AppriseConfig(targets=[AppriseTarget(name="lab", url_env="LAB_APPRISE_URL"),
                                                AppriseTarget(name="off", url_env="OFF_APPRISE_URL"),
                                                AppriseTarget(name="typo", url_env="TYPO_APPRISE_URL")]))
    assert [c.name for c in channels.switched_on(cfg, Secrets())] == ["apprise"]
    face = channels.named("apprise").build(cfg, Secrets())
    assert isinstance(face.notifier, AppriseNotifier)
    assert set(face.notifier.targets) == {"lab"}
    line = redactor().redact(f"posting to {url}: POST http://127.0.0.1/hooks/T0KEN-registry-99 "
                             "as reader:Pa55-registry")
    assert "T0KEN-registry-99" not in line and "Pa55-registry" not in line, line
    assert channels.warnings(cfg, Secrets()) == [
        "apprise target 'off' is skipped, its papers wait: OFF_APPRISE_URL is not set; "
        "apprise target 'typo' is skipped, its papers wait: TYPO_APPRISE_URL holds no apprise "
        "URL such as discord://…"]


def test_the_command_line_subscribes_a_target_by_its_name(tmp_path: Path) -> None:
    config = write_config(tmp_path, '[storage]\npath = "papers.db"\n')
    prepare_store(tmp_path / "papers.db", migrate=True).close()
    runner = CliRunner()
    result = runner.invoke(cli, ["--config", str(config), "subscribe", "--apprise", "lab-discord",
                                 KEYWORD])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"apprise lab-discord: subscribed to '{KEYWORD}'")
    result = runner.invoke(cli, ["--config", str(config), "subscriptions", "--channel",
                                 "apprise"])
    assert result.output.split() == ["apprise", "lab-discord", *KEYWORD.split(), "(user)"]
    result = runner.invoke(cli, ["--config", str(config), "subscribe", "--apprise",
                                 "lab discord", KEYWORD])
    assert result.exit_code == 2
    assert "error: --apprise must be a target name" in result.output


async def test_a_target_s_own_digest_holds_its_papers_for_the_delivery_clock(
        tmp_path: Path, rx: AppriseReceiver, monkeypatch: pytest.MonkeyPatch, clock: Clock,
        paper: PaperFactory, fake_arxiv: FakeArxiv) -> None:
    for name in ("daily", "weekly", "instant"):
        monkeypatch.setenv(f"{name.upper()}_APPRISE_URL", rx.target(f"hooks/{name}"))
    start = clock.current = clock.current.replace(hour=12, minute=0, second=0)
    monday = start + timedelta(days=7 - start.weekday())  # the next Monday, after tomorrow 00:01
    cfg = Config(
        arxiv=ArxivConfig(api_url=fake_arxiv.url, keywords=[], request_interval=0.02),
        storage=StorageConfig(tmp_path / "papers.db"), digest=DigestConfig(path=None),
        apprise=AppriseConfig(digest_time="weekly mon 08:00", targets=[
            AppriseTarget(name="daily", url_env="DAILY_APPRISE_URL", keywords=[KEYWORD], digest="daily 09:00",
                          timezone="Asia/Tokyo"),
            AppriseTarget(name="weekly", url_env="WEEKLY_APPRISE_URL", keywords=[KEYWORD]),  # the section's cadence
            AppriseTarget(name="instant", url_env="INSTANT_APPRISE_URL", keywords=[KEYWORD], digest="instant")]))
    fake_arxiv.add(paper(days=2))
    await Daemon(cfg, Secrets(), now=clock.now).run(once=True)  # the baseline
    news = paper(days=0.1)
    fake_arxiv.add(news)
    await Daemon(cfg, Secrets(), now=clock.now).run(once=True)
    assert [p.path for p in rx.posts] == ["/hooks/instant"]  # the others wait for their time
    clock.current = (start + timedelta(days=1)).replace(hour=0, minute=1)  # 09:01 in Tokyo
    await Daemon(cfg, Secrets(), now=clock.now).run(once=True)
    assert [p.path for p in rx.posts] == ["/hooks/instant", "/hooks/daily"]
    clock.current = monday.replace(hour=8, minute=1)  # Monday 08:01 UTC
    await Daemon(cfg, Secrets(), now=clock.now).run(once=True)
    assert [p.path for p in rx.posts] == ["/hooks/instant", "/hooks/daily", "/hooks/weekly"]
    assert {arxiv_id for p in rx.posts for arxiv_id in ABS.findall(p.message)} == {news.arxiv_id}
