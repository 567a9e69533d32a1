"""The `daily-papers` command line, run as a real process against the local arXiv server."""

from __future__ import annotations

import asyncio
import re
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from bot.cli import cli
from storage.database import connect
from storage.schema import MIGRATIONS
from tests.fakes import zygote
from tests.fakes.arxiv_server import FakeArxiv
from tests.fakes.daemon import DaemonProcess, process_env, run_cli, write_config

README = Path(__file__).parent.parent / "README.md"
KEYWORDS = '["Video Anomaly Detection", "Video Understanding"]'


def config_text(fake: FakeArxiv, **extra: str) -> str:
    lines = ["[arxiv]", f'api_url = "{fake.url}"', "request_interval = 0.05",
             f"keywords = {KEYWORDS}", "poll_interval = 3600", 'schedule = "interval"']
    lines += [f"{k} = {v}" for k, v in extra.items()]
    return "\n".join(lines) + '\n[web]\nport = 0\n'


@pytest.mark.parametrize("name", sorted(cli.commands))
def test_every_command_has_help_and_is_documented(name: str) -> None:
    result = CliRunner().invoke(cli, [name, "--help"])
    assert result.exit_code == 0, result.output
    assert len(result.output.splitlines()) > 2
    assert f"daily-papers {name}" in README.read_text(encoding="utf-8"), \
        f"README.md does not document `daily-papers {name}`"


async def test_run_once_polls_stores_and_writes_the_digest(tmp_path: Path) -> None:
    async with FakeArxiv(papers=FakeArxiv.seed_corpus()) as fake:
        config = write_config(tmp_path, config_text(fake))
        code, out, err = await run_cli(config, "run", "--once")
        assert code == 0, err
        assert out.strip().splitlines()[-1].endswith("failed keywords: none")
        assert {r.params["search_query"] for r in fake.requests} == {
            'ti:"video anomaly detection" OR abs:"video anomaly detection"',
            'ti:"video understanding" OR abs:"video understanding"',
        }
        assert all("mailto:" not in r.headers["User-Agent"] for r in fake.requests)
    readme = (tmp_path / "README.md").read_text(encoding="utf-8")
    assert "<!-- daily-papers:start -->" in readme and "<!-- daily-papers:end -->" in readme
    assert "## Video Anomaly Detection" in readme and "## Video Understanding" in readme
    assert "Text-guided Fine-Grained Video Anomaly Detection" in readme
    assert "https://arxiv.org/abs/2511.00524)" in readme
    code, out, _ = await run_cli(config, "status")
    assert code == 0
    assert re.search(r"Video Anomaly Detection\s+\[config\]\s+papers: \d+", out)
    assert "last error" not in out


async def test_a_broadcast_channel_is_subscribed_and_unsubscribed_from_the_shell(
        tmp_path: Path) -> None:
    async with FakeArxiv(papers=FakeArxiv.seed_corpus()) as fake:
        config = write_config(tmp_path, config_text(fake))
        code, out, err = await run_cli(config, "subscribe", "--telegram", "-1001234567890",
                                       "vision language model")
        assert code == 0, err
        assert out.startswith("telegram -1001234567890: subscribed to 'vision language model'")
        code, out, err = await run_cli(config, "subscribe", "--telegram", "@papers_channel",
                                       "vision language model")
        assert code == 2 and "--telegram takes a numeric chat ID, not '@papers_channel'" in err
        code, out, _ = await run_cli(config, "subscriptions", "--channel", "telegram")
        assert re.search(r"telegram\s+-1001234567890\s+vision language model", out)
        assert out.count("\n") == 1
        code, out, err = await run_cli(config, "unsubscribe", "--telegram", "-1001234567890",
                                       "vision language model")
        assert code == 0, err
        code, out, _ = await run_cli(config, "subscriptions", "--channel", "telegram")
        assert out.strip() == "no subscriptions"


async def test_a_command_waits_while_another_process_writes_and_says_so(tmp_path: Path) -> None:
    """The daemon in a large send-out (or a second CLI) holds the write lock for a while: the
    CLI says it waits, then does its work; never "database is locked" with a traceback."""
    async with FakeArxiv(papers=FakeArxiv.seed_corpus()) as fake:
        config = write_config(tmp_path, config_text(fake))
        assert (await run_cli(config, "status"))[0] == 0  # the database exists
        holder = sqlite3.connect(tmp_path / "daily-papers.db", isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        proc = await zygote.spawn(
            "bot", "--config", str(config), "subscribe", "--telegram", "42",
            "vision language model", stdout=zygote.PIPE, stderr=zygote.PIPE, env=process_env(),
            cwd=tmp_path)
        try:
            assert proc.stderr is not None
            async with asyncio.timeout(60):
                while b"the database is busy" not in (line := await proc.stderr.readline()):
                    assert line, "the CLI ended without saying it waits"
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        out, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, err
        assert out.decode().startswith("telegram 42: subscribed to 'vision language model'")
        assert b"Traceback" not in err


async def test_digest_command_needs_no_network(tmp_path: Path) -> None:
    async with FakeArxiv(papers=FakeArxiv.seed_corpus()) as fake:
        config = write_config(tmp_path, config_text(fake))
        assert (await run_cli(config, "run", "--once"))[0] == 0
    (tmp_path / "README.md").unlink()
    code, out, err = await run_cli(config, "digest")  # the fake is gone: no network
    assert code == 0, err
    assert "written" in out
    assert "## Video Understanding" in (tmp_path / "README.md").read_text(encoding="utf-8")


async def test_strict_once_exits_3_and_names_the_failed_keyword(tmp_path: Path) -> None:
    async with FakeArxiv(papers=FakeArxiv.seed_corpus()) as fake:
        fake.rejected_queries['ti:"video understanding" OR abs:"video understanding"'] = \
            "malformed query"
        config = write_config(tmp_path, config_text(fake))
        code, out, _ = await run_cli(config, "run", "--once", "--strict")
        assert code == 3
        last = out.strip().splitlines()[-1]
        assert "failed keywords: 'Video Understanding'" in last
        assert "malformed query" in last
        code, out, _ = await run_cli(config, "run", "--once")
        assert code == 0  # one keyword completed
    readme = (tmp_path / "README.md").read_text(encoding="utf-8")
    assert "malformed query" in readme  # the rejected section keeps a one-line note


async def test_a_second_daemon_is_refused_while_the_first_holds_the_lease(
        tmp_path: Path) -> None:
    async with FakeArxiv(papers=FakeArxiv.seed_corpus()) as fake:
        config = write_config(tmp_path, config_text(fake))
        async with DaemonProcess(config, "run") as first:
            await first.wait_for_log(r"cycle: 2 keywords polled")
            code, _, err = await run_cli(config, "run", "--once")
            assert code == 2
            assert "another daily-papers process" in err and "Traceback" not in err
            assert await first.stop() == 0
        code, _, err = await run_cli(config, "run", "--once")  # released at a clean stop
        assert code == 0, err


async def test_a_killed_daemons_lease_is_taken_over_at_once(tmp_path: Path) -> None:
    async with FakeArxiv(papers=FakeArxiv.seed_corpus()) as fake:
        config = write_config(tmp_path, config_text(fake))
        async with DaemonProcess(config, "run") as first:
            await first.wait_for_log(r"cycle: 2 keywords polled")
            await first.kill()
        code, _, err = await run_cli(config, "run", "--once")
        assert code == 0, err


async def test_a_bad_config_gets_one_line_and_no_traceback(tmp_path: Path) -> None:
    config = write_config(tmp_path, "[arxiv]\nmax_papers = \"many\"\n")
    code, _, err = await run_cli(config, "status")
    assert code == 2
    assert err.strip() == (f"error: {config}: 'arxiv.max_papers' must be a whole number, "
                           "not a string")


async def test_an_old_database_must_be_migrated_first(tmp_path: Path) -> None:
    db_path = tmp_path / "daily-papers.db"
    db = connect_at_first_schema(db_path)
    db.execute("INSERT INTO keywords (display, canonical, query) VALUES ('x y', 'x y', 'q')")
    db.close()
    config = write_config(tmp_path, "[arxiv]\nkeywords = []\n")
    code, _, err = await run_cli(config, "status")
    assert code == 2 and "run `daily-papers migrate`" in err
    code, out, err = await run_cli(config, "migrate")
    assert code == 0, err
    assert (tmp_path / "daily-papers.db.bak-1").exists()
    code, out, _ = await run_cli(config, "status")
    assert code == 0 and "x y" in out


def connect_at_first_schema(path: Path):
    from sqlite_utils import Database

    db = Database(sqlite3.connect(str(path)))
    MIGRATIONS.apply(db, stop_before="m002_channels")
    return db


def test_a_new_database_is_created_at_the_current_schema(tmp_path: Path) -> None:
    db = connect(tmp_path / "new.db")
    assert "outbox" in db.table_names()
    db.close()
