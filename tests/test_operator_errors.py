"""The operator's first hour: every mistake in config, paths, database or port is one line on
stderr naming the file, key or path and what to do; exit 2; nothing changed; no traceback.

Each case runs the real `daily-papers` process."""

from __future__ import annotations

import asyncio
import errno
import os
import resource
import signal
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from bot.render.digest import unwritable
from tests.fakes import zygote
from tests.fakes.arxiv_server import FakeArxiv
from tests.fakes.daemon import (
    DaemonProcess,
    die_with_parent,
    process_env,
    run_cli,
    write_config,
)


def one_line(code: int, out: str, err: str, *expected: str) -> str:
    """The single `error:` line of a refused command; it holds every expected piece."""
    lines = err.strip().splitlines()
    assert code == 2, (code, out, err)
    assert len(lines) == 1 and lines[0].startswith("error: "), err  # one line, no traceback
    assert "Traceback" not in out + err
    for piece in expected:
        assert piece in lines[0], (piece, lines[0])
    return lines[0]


def cli(cwd: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """`daily-papers ARGS` in `cwd` without --config (for the implicit and $-named file)."""
    done = zygote.run("bot", *args, cwd=cwd, env=process_env(env), timeout=60)
    return done.returncode, done.stdout, done.stderr


# --- 1. a named config file that does not exist -------------------------------------------------

def test_a_named_config_file_that_does_not_exist_is_one_line_and_creates_nothing(
        tmp_path: Path) -> None:
    code, out, err = cli(tmp_path, "--config", "nosuchdir/config.toml", "status")
    one_line(code, out, err, "nosuchdir/config.toml: no such config file", "--config")
    code, out, err = cli(tmp_path, "--config", "does-not-exist.toml", "run", "--once")
    one_line(code, out, err, "does-not-exist.toml: no such config file")
    code, out, err = cli(tmp_path, "status", env={"DAILY_PAPERS_CONFIG": "gone/config.toml"})
    one_line(code, out, err, "gone/config.toml: no such config file", "$DAILY_PAPERS_CONFIG")
    assert list(tmp_path.iterdir()) == []  # no folder, no database


def test_only_the_implicit_config_toml_may_be_absent(tmp_path: Path) -> None:
    code, out, err = cli(tmp_path, "status")
    assert code == 0, err
    assert "Keywords:" in out


# --- 2, 3. validation complete at load time, for every command -----------------------------------

EMAIL_ON = """[arxiv]
api_url = "http://127.0.0.1:9/api/query"
keywords = ["graph neural networks"]
[email]
host = "127.0.0.1"
sender = "Daily Papers <papers@example.org>"
"""


@pytest.mark.parametrize("address", ["bad", "ok@example", "John Doe <jd@example.org>"])
async def test_a_bad_email_subscriber_stops_every_command_with_one_line(
        tmp_path: Path, address: str) -> None:
    config = write_config(tmp_path, EMAIL_ON + f"""[[email.subscribers]]
address = "{address}"
keywords = ["graph neural networks"]
""")
    results = await asyncio.gather(*(run_cli(config, *args) for args in
                                     (("status",), ("digest",), ("run", "--once"), ("run",))))
    for code, out, err in results:
        one_line(code, out, err, f"{config}: 'email.subscribers[0].address'",
                 "is not a usable email address")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.toml"]


async def test_a_bad_email_sender_names_the_file_and_the_key(tmp_path: Path) -> None:
    config = write_config(tmp_path, EMAIL_ON.replace("Daily Papers <papers@example.org>",
                                                     "papers at example.org"))
    for args in (("status",), ("run", "--once")):
        code, out, err = await run_cli(config, *args)
        one_line(code, out, err, f"{config}: 'email.sender' must be an address like")


async def test_a_bad_keyword_of_a_config_subscriber_is_reported_by_status(tmp_path: Path) -> None:
    config = write_config(tmp_path, EMAIL_ON + """[[email.subscribers]]
address = "reader@example.org"
keywords = ["ti:(unbalanced"]
""")
    code, out, err = await run_cli(config, "status")
    one_line(code, out, err, f"{config}: email.subscribers[0].keywords[0]: keyword "
                             "'ti:(unbalanced'")


# --- 4. a digest path that cannot be written ---------------------------------------------------

def digest_config(tmp_path: Path, digest_path: str, api_url: str = "http://127.0.0.1:9/") -> Path:
    return write_config(tmp_path, f"""[arxiv]
api_url = "{api_url}"
keywords = ["graph neural networks"]
request_interval = 0.02
[digest]
path = "{digest_path}"
""")


@pytest.mark.parametrize(("where", "cause"), [
    ("missing/README.md", "its folder {dir}/missing does not exist: create it"),
    ("a-file/README.md", "{dir}/a-file is not a folder"),
    ("a-folder", "it is a folder, not a file"),
])
async def test_digest_names_an_unwritable_digest_path_in_one_line(
        tmp_path: Path, where: str, cause: str) -> None:
    (tmp_path / "a-file").write_text("not a folder\n")
    (tmp_path / "a-folder").mkdir()
    config = digest_config(tmp_path, where)
    code, out, err = await run_cli(config, "digest")
    one_line(code, out, err, f"error: {tmp_path / where}: the digest cannot be written: "
                             f"{cause.format(dir=tmp_path)}; or change [digest] path")
    assert not (tmp_path / "missing").exists()
    assert not (tmp_path / "daily-papers.db").exists()  # refused before the store was opened


async def test_a_cycle_logs_the_configured_digest_path_not_its_temporary_file(
        tmp_path: Path, fake_arxiv: FakeArxiv) -> None:
    (tmp_path / "a-file").write_text("not a folder\n")
    config = digest_config(tmp_path, "a-file/README.md", fake_arxiv.url)
    code, _, err = await run_cli(config, "run", "--once")
    assert code == 0, err  # the digest never stops polling
    errors = [line for line in err.splitlines() if " ERROR " in line]
    assert len(errors) == 1, err
    assert errors[0].endswith(f"digest not written: {tmp_path}/a-file/README.md: the digest "
                              f"cannot be written: {tmp_path}/a-file is not a folder; or change "
                              "[digest] path")
    assert ".tmp" not in err and "Traceback" not in err


def test_a_digest_path_fault_says_what_to_do() -> None:
    """Faults a test running as root cannot provoke: the same one line, from the errno."""
    path = Path("/srv/papers/README.md")
    for code, cause in ((errno.EACCES, "permission denied: let this user write to /srv/papers"),
                        (errno.EROFS, "the file system is read-only"),
                        (errno.ENOSPC, "the disk is full: make room")):
        assert unwritable(path, OSError(code, os.strerror(code), "/srv/papers/.x.tmp")) == (
            f"/srv/papers/README.md: the digest cannot be written: {cause}; "
            "or change [digest] path")


# --- 5. database faults at start ---------------------------------------------------------------

def storage_config(tmp_path: Path, db: str) -> Path:
    return write_config(tmp_path, f"""[arxiv]
api_url = "http://127.0.0.1:9/api/query"
keywords = ["graph neural networks"]
[storage]
path = "{db}"
[digest]
path = ""
""")


COMMANDS = (("status",), ("run", "--once"), ("subscribe", "--telegram", "42", "graph networks"))


@pytest.mark.parametrize(("db", "cause"), [
    ("a-file/papers.db", "cannot open the database: {dir}/a-file is not a folder; change "
                         "[storage] path"),
    ("a-folder", "cannot open the database: it is a folder, not a file; change [storage] path"),
])
async def test_a_database_path_that_cannot_be_opened_is_one_line(
        tmp_path: Path, db: str, cause: str) -> None:
    (tmp_path / "a-file").write_text("not a folder\n")
    (tmp_path / "a-folder").mkdir()
    config = storage_config(tmp_path, db)
    for code, out, err in await asyncio.gather(*(run_cli(config, *a) for a in COMMANDS)):
        one_line(code, out, err, f"error: {tmp_path / db}: {cause.format(dir=tmp_path)}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "a-folder", "config.toml"]


async def test_a_corrupt_database_is_named_with_its_backups(tmp_path: Path) -> None:
    config = storage_config(tmp_path, "papers.db")
    garbage = os.urandom(8192)
    (tmp_path / "papers.db").write_bytes(garbage)
    code, out, err = await run_cli(config, "status")
    one_line(code, out, err, f"{tmp_path}/papers.db is not a usable SQLite database",
             "no backup (<db>.bak-N) is beside it: move it away to start afresh")
    (tmp_path / "papers.db.bak-2").write_bytes(b"")
    (tmp_path / "papers.db.bak-3").write_bytes(b"")
    for code, out, err in await asyncio.gather(*(run_cli(config, *a) for a in COMMANDS)):
        one_line(code, out, err, f"{tmp_path}/papers.db is not a usable SQLite database",
                 f"copy a backup over it (papers.db.bak-3, papers.db.bak-2 in {tmp_path})")
    assert (tmp_path / "papers.db").read_bytes() == garbage


def full_disk(limit: int) -> None:
    """In the child: files may not grow past `limit` bytes, as on a disk that is full."""
    die_with_parent()
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write() then fails instead of killing
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))


async def test_a_full_disk_at_start_is_one_line_for_every_command(tmp_path: Path) -> None:
    config = storage_config(tmp_path, "papers.db")
    code, _, err = await run_cli(config, "status")  # the database exists, the disk fills up
    assert code == 0, err
    before = (tmp_path / "papers.db").read_bytes()
    for args in COMMANDS:
        done = subprocess.run([sys.executable, "-m", "bot", "--config", str(config), *args],
                              cwd=tmp_path, capture_output=True, text=True, env=process_env(),
                              timeout=60, preexec_fn=lambda: full_disk(2048))
        one_line(done.returncode, done.stdout, done.stderr,
                 f"error: {tmp_path}/papers.db: the database cannot be written:",
                 f"make room on the disk of {tmp_path}")
    assert (tmp_path / "papers.db").read_bytes() == before


def hold_lock(db: Path) -> sqlite3.Connection:
    """Another process's connection that keeps the database locked, readers included."""
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA locking_mode = EXCLUSIVE")
    conn.execute("BEGIN EXCLUSIVE")
    conn.execute("INSERT OR REPLACE INTO settings (key, value) VALUES ('held', 'yes')")
    return conn


@pytest.mark.slow
async def test_a_locked_database_is_waited_for_with_a_message_then_one_line(
        tmp_path: Path) -> None:
    config = storage_config(tmp_path, "papers.db")
    assert (await run_cli(config, "status"))[0] == 0
    lock = hold_lock(tmp_path / "papers.db")
    async with DaemonProcess(config, "subscribe", "--telegram", "42", "graph networks",
                             env={"TELEGRAM_BOT_TOKEN": "123:abc"}) as cmd:  # no "is off" note
        await cmd.wait_for_log(r"the database is busy \(another daily-papers process is "
                               r"writing .*papers\.db\); waiting up to 30 s for it")
        lock.close()  # the other process is done: the command goes on
        await cmd.wait_for_log(r"^telegram 42: subscribed to 'graph networks'", timeout=60)
        assert cmd.proc is not None and await asyncio.wait_for(cmd.proc.wait(), 60) == 0
    assert len(cmd.lines) == 2, cmd.log

    lock = hold_lock(tmp_path / "papers.db")
    try:
        code, _, err = await run_cli(config, "unsubscribe",
                                       "--telegram", "42", "--all")
    finally:
        lock.close()
    waiting, error = err.strip().splitlines()
    assert code == 2 and "waiting up to 30 s for it" in waiting, err
    assert error == (f"error: {tmp_path}/papers.db stayed locked by another process (the daemon "
                     "writing, a backup, `daily-papers migrate`?); nothing was changed, try "
                     "again later")


# --- 6. the web server only when something needs it; a busy port in one line --------------------

def quiet_config(tmp_path: Path, fake: FakeArxiv, extra: str = "") -> Path:
    return write_config(tmp_path, f"""[arxiv]
api_url = "{fake.url}"
keywords = ["graph neural networks"]
request_interval = 0.02
[digest]
path = ""
{extra}""")


async def test_without_a_channel_that_needs_it_the_web_server_stays_off(
        tmp_path: Path, fake_arxiv: FakeArxiv) -> None:
    config = quiet_config(tmp_path, fake_arxiv)
    async with DaemonProcess(config) as daemon:
        await daemon.wait_for_log(r"web server off: no channel needs it; add a \[web\] section")
        await daemon.wait_for_log(r"cycle: 1 keywords polled")
        assert await daemon.stop() == 0
    assert "listening" not in daemon.log and "Traceback" not in daemon.log


async def test_a_busy_web_port_is_one_line(tmp_path: Path, fake_arxiv: FakeArxiv) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = quiet_config(tmp_path, fake_arxiv, f'[web]\nport = {port}\n')
        code, out, err = await run_cli(config, "run")
    assert code == 2 and out == "", err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == (
        f"error: [web] 127.0.0.1:{port} is in use by another program (another daily-papers?): "
        "stop it, or set [web] port to a free port")
    assert fake_arxiv.requests == []  # refused before the first cycle
