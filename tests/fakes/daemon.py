"""The real `daily-papers` process, started by end-to-end tests with a temporary config."""

from __future__ import annotations

import asyncio
import errno
import os
import random
import re
import signal
import socket
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

from tests.fakes import zygote
from tests.fakes.clocked import FileClock
from tests.fakes.zygote_server import die_with_parent as die_with_parent  # the tests import it here

T = TypeVar("T")

BASE_ENV_DROP = ("TELEGRAM_BOT_TOKEN", "SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET",
                 "SLACK_APP_TOKEN", "SMTP_PASSWORD", "DAILY_PAPERS_SECRET", "DAILY_PAPERS_CONFIG",
                 "DAILY_PAPERS_METRICS_TOKEN")


# Below Linux's ephemeral range (32768-60999): no client connection of a test running beside
# this one is ever given such a port, so it is still free when the daemon binds it seconds later.
PORTS = range(20_000, 32_000)
_ports = random.SystemRandom()  # not `random`: hypothesis seeds that one inside its tests


def free_port() -> int:
    """A port on 127.0.0.1 for a process the test starts, free now (see PORTS).

    A port the kernel picks with bind(0) comes from the ephemeral range, where the connections
    of parallel tests take ports too: one of them could hold it when the daemon binds."""
    while True:
        port = _ports.choice(PORTS)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise
                continue
            return port


def process_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in BASE_ENV_DROP}
    env["PYTHONUNBUFFERED"] = "1"
    env["PTB_TIMEDELTA"] = "true"
    env.update(extra or {})
    return env


def write_config(directory: Path, text: str) -> Path:
    path = directory / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def e2e_config_head(arxiv_url: str, *, poll_interval: int | None = 1, extra: str = "") -> str:
    """The [arxiv], [storage] and [digest] tables the end-to-end tests share: the local arXiv on
    an interval schedule (None: the default announcement schedule) with no spacing between
    requests, the store beside config.toml and no README digest; `extra` adds [arxiv] lines,
    and the test appends its channel's tables."""
    schedule = "" if poll_interval is None else (
        f'schedule = "interval"\npoll_interval = {poll_interval}\n')
    return f"""
[arxiv]
api_url = "{arxiv_url}"
keywords = []
{schedule}{extra}request_interval = 0
timeout = 10
[storage]
path = "papers.db"
[digest]
path = ""
"""


async def run_cli(config: Path, *args: str, env: Mapping[str, str] | None = None,
                  timeout: float = 180) -> tuple[int, str, str]:
    """Run one CLI command to completion; (exit code, stdout, stderr)."""
    proc = await zygote.spawn("bot", "--config", str(config), *args, stdout=zygote.PIPE,
                              stderr=zygote.PIPE, env=process_env(env), cwd=config.parent)
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    return proc.returncode or 0, out.decode(), err.decode()


def run_delay(pid: int) -> float | None:
    """Seconds the process's main thread has spent runnable but waiting for a CPU (Linux's
    /proc/PID/schedstat), or None where that cannot be read."""
    try:
        with open(f"/proc/{pid}/schedstat", encoding="ascii") as stats:
            return int(stats.read().split()[1]) / 1e9
    except (OSError, ValueError, IndexError):
        return None


BUSY_FACTOR = 6  # a deadline of the process's own time waits at most this much longer in all
SAMPLE_EVERY = 0.1  # seconds between two readings of the process's run-queue time


async def wait_exit(proc: asyncio.subprocess.Process | zygote.Process, own_seconds: float) -> None:
    """Wait for the process to end within `own_seconds` of its own time: the wall time since
    the call less the time the machine kept its main thread waiting for a CPU.

    A promise such as "SIGTERM stops within 10 s" is the program's; on a machine whose cores
    are busy with other work the same stop takes longer by the time it was not let run."""
    started = time.monotonic()
    first = last = run_delay(proc.pid)
    exited = asyncio.ensure_future(proc.wait())
    try:
        while not exited.done():
            await asyncio.wait({exited}, timeout=SAMPLE_EVERY)
            now = run_delay(proc.pid)
            last = now if now is not None else last
            elapsed = time.monotonic() - started
            queued = last - first if first is not None and last is not None else 0.0
            if not exited.done() and (elapsed - queued > own_seconds
                                      or elapsed > own_seconds * BUSY_FACTOR):
                raise TimeoutError(f"the process took more than {own_seconds} s of its own "
                                   f"({elapsed:.1f} s, {queued:.1f} s of it waiting for a CPU)")
    finally:
        exited.cancel()


class DaemonProcess:
    """`daily-papers run` in the background; its log is collected line by line."""

    def __init__(self, config: Path, *args: str, env: Mapping[str, str] | None = None,
                 open_files: int | None = None, clock: FileClock | None = None) -> None:
        self.config = config
        self.args = args or ("run",)
        self.env = {**(env or {}), **(clock.env() if clock else {})}
        self.module = "tests.fakes.clocked" if clock else "bot"  # a clock the test moves
        self.open_files = open_files  # a lower RLIMIT_NOFILE for the process, as systemd sets
        self.proc: zygote.Process | None = None
        self.lines: list[str] = []
        self._changed = asyncio.Condition()
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> DaemonProcess:
        self.proc = await zygote.spawn(
            self.module, "--config", str(self.config), *self.args, stdout=zygote.PIPE,
            stderr=zygote.STDOUT, env=process_env(self.env), cwd=self.config.parent,
            open_files=self.open_files)
        self._reader = asyncio.create_task(self._read())
        return self

    def open_fds(self) -> int:
        """File descriptors the process holds now (Linux)."""
        assert self.proc
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    async def _read(self) -> None:
        assert self.proc and self.proc.stdout
        async for raw in self.proc.stdout:
            async with self._changed:
                self.lines.append(raw.decode(errors="replace").rstrip("\n"))
                self._changed.notify_all()
        async with self._changed:
            self._changed.notify_all()

    @property
    def log(self) -> str:
        return "\n".join(self.lines)

    async def wait_for_log(self, pattern: str, timeout: float = 60,
                           after: int = 0) -> re.Match[str]:
        """The first line matching `pattern` among the lines from index `after` on."""
        regex = re.compile(pattern)

        def found() -> re.Match[str] | None:
            for line in self.lines[after:]:
                if m := regex.search(line):
                    return m
            return None

        return await self.wait_until(found, timeout, f"no log line matched {pattern!r}")

    async def wait_until(self, predicate: Callable[[], T | None], timeout: float = 60,
                         what: str = "condition not met") -> T:
        """The first true value of `predicate()`, asked again at every log line (for state
        outside the log, such as the database: a busy daemon logs at least every cycle)."""

        async def waiter() -> T:
            async with self._changed:
                while not (value := predicate()):
                    if self._reader is not None and self._reader.done():
                        raise AssertionError(f"process ended before: {what}:\n{self.log}")
                    await self._changed.wait()
                return value

        try:
            return await asyncio.wait_for(waiter(), timeout)
        except TimeoutError:
            raise AssertionError(f"{what} within {timeout} s:\n{self.log}") from None

    async def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        """Signal the process and return its exit code; TimeoutError when it took longer than
        `timeout` seconds of its own (see `own_seconds`)."""
        assert self.proc
        if self.proc.returncode is None:
            self.proc.send_signal(sig)
        await wait_exit(self.proc, timeout)
        if self._reader:
            await self._reader
        return self.proc.returncode or 0

    async def kill(self) -> int:
        return await self.stop(signal.SIGKILL)

    async def __aenter__(self) -> DaemonProcess:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        if self.proc and self.proc.returncode is None:
            await self.stop(signal.SIGKILL)
