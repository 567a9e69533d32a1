"""The channel registry: every channel is complete, every part of the house reads the list, and
a channel added by one entry is picked up by the daemon, config sync, schedule, status and
metrics without naming it anywhere else."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from prometheus_client import generate_latest

from bot import channels, metrics
from bot.channels import Channel
from bot.cli import cli
from bot.config import (
    AddressError,
    AppriseConfig,
    AppriseTarget,
    ArxivConfig,
    ChannelConfig,
    Config,
    ConfigError,
    DigestConfig,
    EmailConfig,
    Recipient,
    Secrets,
    SlackConfig,
    StorageConfig,
    load_config,
)
from bot.daemon import Daemon, prepare_store
from bot.faces.status import status_text
from notifiers.base import Delivery, Limits, Message, Notifier, Outcome
from notifiers.packer import Piece, pack
from storage import subscribers as sub_repo
from storage.records import OutboxRow, Subscriber
from tests.conftest import Clock, PaperFactory
from tests.fakes.arxiv_server import FakeArxiv
from tests.fakes.daemon import run_cli, write_config

# -- every entry is complete, and the frame offers every channel --------------------------------


def test_every_registered_channel_is_complete() -> None:
    sections = Config().channel_sections()
    assert [c.name for c in channels.registered()] == ["telegram", "slack", "email", "apprise"]
    for channel in channels.registered():
        assert type(sections[channel.name]) is channel.config, channel.name
        assert issubclass(channel.config, ChannelConfig)
        assert channel.face is not None or channel.notifier is not None, channel.name
        assert channel.metavar and channel.help and channel.switch, channel.name
        assert channel.option == f"--{channel.name}"
    assert set(sections) == set(channels.names())  # no section without an entry


async def test_each_channel_builds_a_face_and_notifier_of_its_own_name() -> None:
    cfg = Config(email=EmailConfig(host="smtp.test", sender="papers@example.org"),
                 apprise=AppriseConfig(targets=[AppriseTarget(name="lab", url_env="LAB_APPRISE_URL")]))
    secrets = Secrets(telegram_bot_token="123:abc", slack_bot_token="xoxb-1",
                      slack_signing_secret="signing")
    assert channels.switched_on(cfg, secrets) == list(channels.registered())
    for channel in channels.registered():
        face = channel.build(cfg, secrets)
        assert face.name == channel.name
        assert face.notifier is not None and face.notifier.channel == channel.name
        await face.notifier.close()


def test_the_cli_offers_every_registered_channel() -> None:
    runner = CliRunner()
    for command in ("subscribe", "unsubscribe"):
        text = runner.invoke(cli, [command, "--help"]).output
        for channel in channels.registered():
            assert f"{channel.option} {channel.metavar}" in text, (command, channel.name)
            assert channel.help in text
    text = runner.invoke(cli, ["subscriptions", "--help"]).output
    assert f"[{'|'.join(channels.names())}]" in text
    result = runner.invoke(cli, ["subscribe", "graph neural networks"])
    assert result.exit_code == 2
    for channel in channels.registered():
        assert f"{channel.option} {channel.metavar}" in result.output


def test_status_names_every_channel_and_what_turns_it_on(tmp_path: Path) -> None:
    config = write_config(tmp_path, '[storage]\npath = "papers.db"\n')
    prepare_store(tmp_path / "papers.db", migrate=True).close()
    env = {"TELEGRAM_BOT_TOKEN": "123:abc", "SLACK_BOT_TOKEN": None}
    result = CliRunner().invoke(cli, ["--config", str(config), "status"], env=env)
    assert result.exit_code == 0, result.output
    line = next(line for line in result.output.splitlines() if line.startswith("Channels: "))
    assert line == ("Channels: telegram on, slack off (set SLACK_BOT_TOKEN), "
                    "email off (set [email] host), apprise off (set [[apprise.targets]])")


def test_each_address_rule_checks_and_normalizes() -> None:
    assert channels.named("telegram").address("-1001234567890") == "-1001234567890"
    assert channels.named("slack").address("C0123456789") == "C0123456789"
    assert channels.named("email").address(" Ada@Example.ORG ") == "Ada@example.org"
    for name, bad in [("telegram", "@papers_channel"), ("telegram", "1_000"),
                      ("slack", "#papers"), ("slack", "general"), ("email", "ada")]:
        with pytest.raises(AddressError):
            channels.named(name).address(bad)


# -- defect 4: a Slack "#name" is refused by one rule with one message --------------------------


def _rule_message(text: str) -> str:
    with pytest.raises(AddressError) as info:
        SlackConfig.address(text)
    return info.value.message


async def test_a_slack_name_gets_the_same_message_from_config_and_cli(tmp_path: Path) -> None:
    rule = _rule_message("#papers")
    assert "copy the ID" in rule and "C0123456789" in rule  # says how to find the ID
    config = write_config(tmp_path, '[[slack.channels]]\nchannel = "#papers"\n'
                                    'keywords = ["graph neural networks"]\n')
    with pytest.raises(ConfigError) as info:
        load_config(config)
    assert str(info.value) == f"{config}: 'slack.channels[0].channel' {rule}"
    allowed = write_config(tmp_path, '[slack]\nallowed_channels = ["#papers"]\n')
    with pytest.raises(ConfigError) as info:
        load_config(allowed)
    assert str(info.value) == f"{allowed}: 'slack.allowed_channels[0]' {rule}"
    valid = write_config(tmp_path, "")  # the option alone is refused, whatever the file says
    code, out, err = await run_cli(valid, "subscribe", "--slack", "#papers",
                                   "graph neural networks")
    assert (code, out, err) == (2, "", f"error: --slack {rule}\n")
    code, out, err = await run_cli(valid, "unsubscribe", "--slack", "papers", "--all")
    assert (code, out) == (2, "")
    assert err == f"error: --slack {_rule_message('papers')}\n"


async def test_a_bad_email_recipient_in_config_is_one_line_naming_the_key(
        tmp_path: Path) -> None:
    config = write_config(tmp_path, '[email]\nhost = "smtp.test"\nsender = "p@example.org"\n'
                                    '[[email.subscribers]]\naddress = "ada at example.org"\n'
                                    'keywords = ["graph neural networks"]\n')
    code, out, err = await run_cli(config, "run", "--once")
    assert code == 2 and out == ""
    assert err.startswith(f"error: {config}: 'email.subscribers[0].address' 'ada at "
                          "example.org' is not a usable email address")
    assert len(err.splitlines()) == 1  # no traceback
    assert not (tmp_path / "daily-papers.db").exists()


# -- a channel added by one entry ---------------------------------------------------------------


@dataclass
class Loft:
    loft: str = ""
    keywords: list[str] = field(default_factory=list)


@dataclass
class PigeonConfig(ChannelConfig):
    lofts: list[Loft] = field(default_factory=list)

    @staticmethod
    def address(text: str) -> str:
        if not text.startswith("loft-"):
            raise AddressError(f"must name a loft like loft-7, not {text!r}")
        return text

    def recipients(self) -> list[Recipient]:
        return [Recipient(f"lofts[{i}]", "loft", lo.loft, lo.keywords)
                for i, lo in enumerate(self.lofts)]


@dataclass
class PigeonHouseConfig(Config):
    """The config with the new channel's section: what its config dataclass adds."""

    pigeon: PigeonConfig = field(default_factory=PigeonConfig)


class PigeonNotifier(Notifier):
    """A channel that carries each paper id to its loft: what a new notifier module adds."""

    channel = "pigeon"

    def __init__(self) -> None:
        self.limits = Limits(max_papers=3)
        self.carried: list[tuple[str, list[str]]] = []

    def pack(self, subscriber: Subscriber, rows: Sequence[OutboxRow]) -> list[Message]:
        groups = pack(rows, lambda row: Piece(row.paper.arxiv_id, 1), self.limits)
        return [Message(rows=tuple(row for row, _ in g), payload=[p.content for _, p in g])
                for g in groups]

    async def send(self, subscriber: Subscriber, message: Message) -> Delivery:
        self.carried.append((subscriber.address, message.payload))
        return Delivery(Outcome.SENT)


async def test_a_channel_added_by_one_entry_is_built_synced_scheduled_and_reported(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clock: Clock, paper: PaperFactory,
        fake_arxiv: FakeArxiv) -> None:
    notifier = PigeonNotifier()
    entry = Channel("pigeon", PigeonConfig, "LOFT", "A pigeon loft.", "[[pigeon.lofts]]",
                    lambda cfg, s: bool(cfg.pigeon.lofts), notifier=lambda cfg, s: notifier)
    monkeypatch.setattr(channels, "CHANNELS", (*channels.CHANNELS, entry))
    clock.current = clock.current.replace(hour=12, minute=0)
    cfg = PigeonHouseConfig(
        arxiv=ArxivConfig(api_url=fake_arxiv.url, keywords=[], request_interval=0.02),
        storage=StorageConfig(tmp_path / "papers.db"), digest=DigestConfig(path=None),
        pigeon=PigeonConfig(digest_time="08:00", timezone="UTC",
                            lofts=[Loft("loft-7", ["graph neural networks"])]))
    fake_arxiv.add(paper(days=2))
    await Daemon(cfg, Secrets(), now=clock.now).run(once=True)  # the baseline
    fake_arxiv.add(paper(days=0.1))
    await Daemon(cfg, Secrets(), now=clock.now).run(once=True)
    assert notifier.carried == []  # the section's digest time: tomorrow 08:00
    store = prepare_store(cfg.storage.path, migrate=False)
    try:
        text = status_text(store, cfg, channels.states(cfg, Secrets()), [])
        subs = sub_repo.at_address(store.db, "pigeon", "loft-7")
    finally:
        store.close()
    assert "Pending notifications: pigeon: 1" in text
    assert "pigeon on" in text and "telegram off (set TELEGRAM_BOT_TOKEN)" in text
    assert [s.active for s in subs] == [True]
    scrape = generate_latest(metrics.REGISTRY).decode()
    assert 'daily_papers_subscribers{channel="pigeon"} 1.0' in scrape
    assert 'daily_papers_outbox_rows{channel="telegram",status="pending"} 0.0' in scrape
    clock.advance(timedelta(hours=20, minutes=1))
    await Daemon(cfg, Secrets(), now=clock.now).run(once=True)
    assert notifier.carried == [("loft-7", ["2601.00002"])]

