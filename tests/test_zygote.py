"""The fork server that starts the tests' `daily-papers` processes (tests/fakes/zygote.py): a
child must be what a fresh `python -m` process would be, so that the tests still prove what the
program does when a person or systemd starts it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import select
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fakes import zygote
from tests.fakes.daemon import process_env

PROBE = "tests.fakes.probe"


def fresh(tmp_path: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", PROBE, *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=180,
                          preexec_fn=zygote._as_from_a_shell)


def test_a_forked_child_is_what_a_fresh_process_would_be(tmp_path: Path) -> None:
    env = process_env({"DAILY_PAPERS_SECRET": "s3cret", "TZ": "Asia/Kolkata"})
    buffered = {k: v for k, v in env.items() if k != "PYTHONUNBUFFERED"}
    for given in (env, buffered):
        forked = zygote.run(PROBE, "describe", "--flag", cwd=tmp_path, env=given)
        started = fresh(tmp_path, given, "describe", "--flag")
        assert forked.returncode == started.returncode == 0, forked.stderr
        assert forked.stderr == started.stderr == "to stderr\n"
        seen, expected = json.loads(forked.stdout), json.loads(started.stdout)
        assert seen == expected
    assert seen["argv"][1:] == ["describe", "--flag"] and seen["cwd"] == str(tmp_path)
    assert seen["env"]["DAILY_PAPERS_SECRET"] == "s3cret"
    assert len(seen["fds"]) == 4  # stdin, stdout, stderr and the listing's own
    assert seen["signals"][0] == str(signal.default_int_handler)  # Ctrl-C is KeyboardInterrupt


async def test_the_program_gets_its_own_descriptors_and_open_files_limit(tmp_path: Path) -> None:
    proc = await zygote.spawn(PROBE, "describe", cwd=tmp_path, env=process_env(),
                              stdin=zygote.DEVNULL, stdout=zygote.PIPE, stderr=zygote.STDOUT,
                              open_files=64)
    out, err = await proc.communicate()
    assert proc.returncode == 0 and err == b""
    first, second = out.decode().splitlines()
    assert json.loads(first)["open_files"] == 64
    assert second == "to stderr"  # stderr went where stdout goes


async def test_signals_reach_the_program_and_its_exit_status_is_reported(tmp_path: Path) -> None:
    env = process_env()
    waiting = await zygote.spawn(PROBE, "wait", cwd=tmp_path, env=env, stdout=zygote.PIPE)
    assert waiting.stdout is not None
    assert await asyncio.wait_for(waiting.stdout.readline(), 60) == b"waiting\n"
    assert waiting.returncode is None
    waiting.terminate()  # its own SIGTERM handler ends it with 0
    assert await asyncio.wait_for(waiting.wait(), 60) == 0

    killed = await zygote.spawn(PROBE, "wait", cwd=tmp_path, env=env, stdout=zygote.PIPE)
    assert killed.stdout is not None
    assert await asyncio.wait_for(killed.stdout.readline(), 60) == b"waiting\n"
    os.kill(killed.pid, signal.SIGKILL)  # the pid is the program's own
    assert await asyncio.wait_for(killed.wait(), 60) == -signal.SIGKILL
    await killed.communicate()

    assert zygote.run(PROBE, "exit", "3", cwd=tmp_path, env=env).returncode == 3
    buffered = {k: v for k, v in env.items() if k != "PYTHONUNBUFFERED"}
    finished = zygote.run(PROBE, "finish", cwd=tmp_path, env=buffered)
    expected = fresh(tmp_path, buffered, "finish")
    assert (finished.returncode, finished.stdout, finished.stderr) == \
        (expected.returncode, expected.stdout, expected.stderr) == \
        (1, "bufferedthread ran\natexit ran\n", "error: a message as the exit code\n")
    crashed = zygote.run(PROBE, "crash", cwd=tmp_path, env=env)
    assert crashed.returncode == 1
    assert "RuntimeError: probe asked to crash" in crashed.stderr
    expected = fresh(tmp_path, env, "crash").stderr
    assert crashed.stderr.startswith("Traceback") and expected.startswith("Traceback")
    assert crashed.stderr.splitlines()[-1] == expected.splitlines()[-1]


def test_a_change_to_how_python_starts_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="start a real process"):
        zygote.run(PROBE, "describe", cwd=tmp_path, env=process_env({"PYTHONIOENCODING": "latin-1"}))


def test_daily_papers_says_the_same_as_a_fresh_process(tmp_path: Path) -> None:
    env = process_env()
    for n, args in enumerate((["--help"], ["status"], ["--config", "nope.toml", "status"])):
        outputs = []
        for where in (tmp_path / f"{n}-forked", tmp_path / f"{n}-fresh"):
            where.mkdir()
            (where / "config.toml").write_text('[arxiv]\nkeywords = ["graph neural networks"]\n',
                                               encoding="utf-8")
            outputs.append(where)
        forked = zygote.run("bot", *args, cwd=outputs[0], env=env)
        started = subprocess.run([sys.executable, "-m", "bot", *args], cwd=outputs[1], env=env,
                                 capture_output=True, text=True, timeout=180)
        forked.stdout = forked.stdout.replace(f"{n}-forked", f"{n}-fresh")
        assert (forked.returncode, forked.stdout, forked.stderr) == \
            (started.returncode, started.stdout, started.stderr), args


async def test_a_child_dies_with_the_server(tmp_path: Path) -> None:
    server = zygote.SERVER
    child = await zygote.spawn(PROBE, "wait", cwd=tmp_path, env=process_env(),
                               stdout=zygote.PIPE)
    assert child.stdout is not None
    assert await asyncio.wait_for(child.stdout.readline(), 60) == b"waiting\n"
    assert server.proc is not None
    server.proc.kill()  # as when the test process is killed: the server dies with it
    server.proc.wait()
    assert await asyncio.wait_for(child.wait(), 60) == -signal.SIGKILL  # told by the lost server
    with contextlib.suppress(ProcessLookupError):  # already reaped: gone
        pidfd = os.pidfd_open(child.pid)
        try:  # readable once the process has ended
            assert select.select([pidfd], [], [], 60)[0] == [pidfd], "the child outlived it"
        finally:
            os.close(pidfd)
    await child.communicate()
    assert zygote.run(PROBE, "exit", "0", cwd=tmp_path, env=process_env()).returncode == 0
