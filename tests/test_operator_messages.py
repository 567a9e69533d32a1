"""Messages that must not mislead the operator: a subscription to a channel that is off, the
warnings of `status`, `run --strict` without `--once`. Each through the real process."""

from __future__ import annotations

import contextlib
import os
import pty
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fakes.arxiv_server import FakeArxiv
from tests.fakes.daemon import die_with_parent, process_env, run_cli, write_config


def config_for(tmp_path: Path, api_url: str = "http://127.0.0.1:9/api/query") -> Path:
    return write_config(tmp_path, f"""[arxiv]
api_url = "{api_url}"
keywords = ["graph neural networks", "video understanding"]
request_interval = 0.02
[digest]
path = ""
""")


@pytest.mark.parametrize(("option", "address", "note"), [
    ("--email", "reader@example.org",
     "email is off: set [email] host in config.toml and restart the daemon"),
    ("--telegram", "42", "telegram is off: set TELEGRAM_BOT_TOKEN in the daemon's environment "
                         "and restart the daemon"),
    ("--slack", "C0123456789", "slack is off: set SLACK_BOT_TOKEN in the daemon's environment "
                               "and restart the daemon"),
])
async def test_subscribing_on_a_channel_that_is_off_says_so_and_status_warns(
        tmp_path: Path, option: str, address: str, note: str) -> None:
    config = config_for(tmp_path)
    code, out, err = await run_cli(config, "subscribe", option, address, "graph neural networks")
    assert code == 0, err
    assert out.startswith(f"{option[2:]} {address}: subscribed to 'graph neural networks'")
    assert err.strip() == (f"warning: {note}; the subscription is kept and delivered once it "
                           "is on")
    code, out, _ = await run_cli(config, "status")
    assert code == 0
    assert f"1 {option[2:]} subscriber waiting, but {note}" in out


async def test_a_channel_that_is_on_gets_no_note(tmp_path: Path) -> None:
    config = config_for(tmp_path)
    code, _, err = await run_cli(config, "subscribe", "--telegram", "42", "graph networks",
                                 env={"TELEGRAM_BOT_TOKEN": "123:abc"})
    assert code == 0 and err == ""
    code, out, _ = await run_cli(config, "status", env={"TELEGRAM_BOT_TOKEN": "123:abc"})
    assert "Warnings: none" in out


async def test_status_warns_about_failing_keywords_and_an_unreachable_arxiv(
        tmp_path: Path, refused_port: int) -> None:
    config = config_for(tmp_path, f"http://127.0.0.1:{refused_port}/api/query")
    code, _, _ = await run_cli(config, "run", "--once")
    assert code == 1
    code, out, _ = await run_cli(config, "status")
    (warnings,) = [line for line in out.splitlines() if line.startswith("Warnings: ")]
    assert ("2 keywords failed at the last poll: 'graph neural networks', 'video understanding' "
            "(see last error)") in warnings
    assert "arXiv was out of reach at the last poll: cannot reach 127.0.0.1: connection refused" \
        in warnings


async def test_status_warns_about_a_keyword_arxiv_rejected(tmp_path: Path,
                                                          fake_arxiv: FakeArxiv) -> None:
    fake_arxiv.add(*FakeArxiv.seed_corpus())
    fake_arxiv.rejected_queries['ti:"graph neural networks" OR abs:"graph neural networks"'] = \
        "unsupported query"
    code, _, err = await run_cli(config_for(tmp_path, fake_arxiv.url), "run", "--once")
    assert code == 0, err
    code, out, _ = await run_cli(config_for(tmp_path, fake_arxiv.url), "status")
    assert "1 keyword failed at the last poll: 'graph neural networks'" in out
    assert "out of reach" not in out


async def test_run_strict_without_once_is_refused(tmp_path: Path) -> None:
    code, out, err = await run_cli(config_for(tmp_path), "run", "--strict")
    assert (code, out) == (2, "")
    assert err.strip() == ("error: --strict goes with --once (it sets the exit code of one "
                           "cycle): daily-papers run --once --strict")
    assert not (tmp_path / "daily-papers.db").exists()


# --- run --once counts against every keyword and names the untried ones --------------------------

FOUR = '["graph neural networks", "video understanding", "protein folding", "dark matter"]'


def four_keywords(tmp_path: Path, port: int) -> Path:
    return write_config(tmp_path, f"""[arxiv]
api_url = "http://127.0.0.1:{port}/api/query"
keywords = {FOUR}
request_interval = 0.02
[digest]
path = ""
""")


async def test_run_once_counts_every_keyword_and_names_the_untried(
        tmp_path: Path, refused_port: int) -> None:
    code, out, err = await run_cli(four_keywords(tmp_path, refused_port), "run", "--once")
    assert code == 1
    last = out.strip().splitlines()[-1]
    assert last.startswith("0 of 4 keywords polled, 0 new papers; failed keywords: "
                           "'graph neural networks' (cannot reach 127.0.0.1: ")
    assert last.endswith("'video understanding' (arXiv unavailable); not tried: "
                         "'protein folding', 'dark matter'")
    assert ("stopped early: arXiv unavailable after repeated failures; 2 keywords not tried: "
            "'protein folding', 'dark matter'") in err
    assert "next cycle" not in err


# --- the progress bar owns the terminal's last line ---------------------------------------------

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
STAMP = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ")


def on_a_terminal(config: Path, *args: str) -> tuple[int, str, str]:
    """The command with its stderr on a pseudo-terminal: (exit code, stdout, what the terminal
    received)."""
    leader, follower = pty.openpty()
    env = process_env({"TERM": "xterm", "COLUMNS": "120"})
    with subprocess.Popen([sys.executable, "-m", "bot", "--config", str(config), *args],
                          cwd=config.parent, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=follower, env=env, preexec_fn=die_with_parent) as proc:
        os.close(follower)
        received = b""
        with contextlib.suppress(OSError):  # EIO once the process closed its end
            while chunk := os.read(leader, 65536):
                received += chunk
        os.close(leader)
        out = proc.stdout.read() if proc.stdout else b""
    return proc.returncode, out.decode(), received.decode(errors="replace")


def test_log_lines_print_above_the_progress_bar_which_ends_cleanly(
        tmp_path: Path, refused_port: int) -> None:
    code, out, screen = on_a_terminal(four_keywords(tmp_path, refused_port), "run", "--once")
    assert code == 1 and "not tried" in out
    pieces = [p for p in re.split(r"\r\n|\r|\n", ANSI.sub("", screen)) if p.strip()]
    logged = [p for p in pieces if STAMP.search(p)]
    assert any(" WARNING " in p and "cannot reach 127.0.0.1" in p for p in logged), screen
    for piece in logged:  # never "…(ConnectError2026-12-02 15:43:40,926 ERROR …"
        assert STAMP.match(piece), piece
    bar = pieces[-1]
    assert bar.startswith("stopped early ") and " 2/4 " in bar, bar
    assert "arXiv unavailable; 2 not tried" in bar
    assert screen.endswith("\r\n\x1b[?25h")  # the line is finished and the cursor is back
