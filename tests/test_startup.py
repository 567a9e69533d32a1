"""Start-up cost a person feels: `daily-papers --help` imports none of the heavy libraries
(their times are printed by bench/bench_startup.py, never asserted here)."""

from __future__ import annotations

import subprocess
import sys

from tests.fakes.daemon import die_with_parent, process_env

HEAVY = ("aiohttp", "telegram", "slack_sdk", "slack_bolt", "httpx", "sqlite_utils", "jinja2",
         "lxml", "prometheus_client", "aiosmtplib", "asyncio")


def loaded_after(*args: str) -> set[str]:
    """Top-level modules loaded by the real command line after running `args` in a fresh
    interpreter."""
    probe = ("import sys\nfrom bot.cli import cli\n"
             "try:\n    cli(args=sys.argv[1:], prog_name='daily-papers')\n"
             "except SystemExit:\n    pass\n"
             "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))")
    done = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True,
                          env=process_env(), check=True, timeout=60, preexec_fn=die_with_parent)
    assert "Usage: daily-papers" in done.stdout
    return set(done.stdout.split("\n")[-2].split())


def test_help_imports_no_heavy_library() -> None:
    assert loaded_after("--help").isdisjoint(HEAVY)


def test_a_command_s_help_imports_no_heavy_library() -> None:
    for command in ("run", "status", "subscribe", "digest"):
        assert loaded_after(command, "--help").isdisjoint(HEAVY), command
