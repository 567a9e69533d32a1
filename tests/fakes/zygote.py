"""A fork server for the `daily-papers` processes the tests start: the tests' side.

Every start of `python -m bot` pays Python's start-up and the program's imports (0.7-1.2 s of
CPU: aiohttp, PTB, slack bolt, httpx, jinja2 ...), and some tests start the daemon and the CLI
five times to prove one thing. One server per test process (tests/fakes/zygote_server.py)
imports the program once and forks a child per start; the child is set up as a fresh
`python -m MODULE ARGS…` would be: its own stdin/stdout/stderr and no other descriptors, its
environment, working directory, argv and open-files limit, SIGKILL when the server (and so the
test process) ends. Signals go to the child's own pid; its exit status is the program's
(tests/test_zygote.py checks all of these). `spawn` and `run` start a child.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.fakes.zygote_server import die_with_parent

ROOT = Path(__file__).resolve().parent.parent.parent
DEVNULL = subprocess.DEVNULL
PIPE = subprocess.PIPE
STDOUT = subprocess.STDOUT


def _as_from_a_shell() -> None:
    """The server's start: SIGINT as a shell or systemd leaves it (xdist's workers may ignore
    it, and an ignored signal stays ignored across exec); dies with the test process."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    die_with_parent()


class _Server:
    """The one server of this test process, started at its first use."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.path = ""

    def connect(self, request: dict[str, Any], fds: list[int]) -> tuple[socket.socket, int]:
        """Send a start request with the child's descriptors; (control socket, child pid)."""
        if self.proc is None or self.proc.poll() is not None:
            self._start()
        control = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        control.connect(self.path)
        socket.send_fds(control, [json.dumps(request).encode()], fds)
        answer = control.recv(4096)
        if not answer:
            control.close()
            raise RuntimeError("the fork server ended")
        return control, json.loads(answer)["pid"]

    def _start(self) -> None:
        self.path = os.path.join(tempfile.mkdtemp(prefix="zygote-"), "socket")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.fakes.zygote_server", self.path], cwd=ROOT, env=env,
            stdin=DEVNULL, stdout=PIPE, preexec_fn=_as_from_a_shell)
        assert self.proc.stdout is not None
        with self.proc.stdout:
            if self.proc.stdout.readline() != b"ready\n":
                raise RuntimeError("the fork server did not start")
        atexit.register(self.stop)

    def stop(self) -> None:
        """End the server (and any child left), reaping it so its CPU time is counted."""
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX,
                                                         socket.SOCK_SEQPACKET) as control:
            control.connect(self.path)
            control.send(b'{"quit": true}')
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        with contextlib.suppress(OSError):
            os.unlink(self.path)
            os.rmdir(os.path.dirname(self.path))


SERVER = _Server()


def _read_at_start_up(env: dict[str, str]) -> dict[str, str]:
    """The variables Python reads only when it starts (encoding, locale, flags): a child has
    the server's, so a test that sets them needs a process of its own."""
    return {k: v for k, v in env.items() if k.startswith(("PYTHON", "LC_")) or k == "LANG"
            if k not in ("PYTHONPATH", "PYTHONUNBUFFERED")}


def _request(module: str, args: list[str], cwd: Path | str, env: dict[str, str],
             open_files: int | None, stdio: dict[int, int]) -> tuple[socket.socket, int]:
    if _read_at_start_up(env) != _read_at_start_up(dict(os.environ)):
        for fd in stdio.values():
            os.close(fd)
        raise ValueError("this environment changes how Python starts: start a real process")
    request = {"module": module, "args": list(args), "cwd": str(cwd), "env": dict(env),
               "open_files": open_files, "stdio": list(stdio)}
    try:
        return SERVER.connect(request, list(stdio.values()))
    finally:
        for fd in stdio.values():
            os.close(fd)


def _child_stdio(stdin: int | None, stdout: int | None,
                 stderr: int | None) -> tuple[dict[int, int], dict[int, int]]:
    """({child fd: descriptor to send}, {child fd: our read end}) for PIPE/DEVNULL/STDOUT/None
    (None: the server's own, /dev/null for stdin and the test process's stdout/stderr)."""
    send: dict[int, int] = {}
    ours: dict[int, int] = {}
    if stdin == DEVNULL:
        send[0] = os.open(os.devnull, os.O_RDONLY)
    for target, how in ((1, stdout), (2, stderr)):
        if how == PIPE:
            ours[target], send[target] = os.pipe()
        elif how == DEVNULL:
            send[target] = os.open(os.devnull, os.O_WRONLY)
        elif how == STDOUT:
            send[target] = os.dup(send[1]) if 1 in send else os.dup(1)
        else:
            send[target] = os.dup(target)
    return send, ours


CHILDREN_CPU = [0.0]  # seconds of CPU the children of this test process used, for profiling


def _exit_code(answer: bytes) -> int:
    """The exit code from the server's "STATUS CPU-SECONDS" (nothing: the server ended, and
    its children were killed with it)."""
    if not answer:
        return -signal.SIGKILL
    status, cpu = answer.split()
    CHILDREN_CPU[0] += float(cpu)
    return os.waitstatus_to_exitcode(int(status))


class Process:
    """A forked child as asyncio.subprocess.Process shows one: pid, returncode, stdout, stderr,
    send_signal/terminate/kill, wait(), communicate()."""

    def __init__(self, pid: int, control: socket.socket) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self.stdin = None
        self.stdout: asyncio.StreamReader | None = None
        self.stderr: asyncio.StreamReader | None = None
        self.pipes_closed: list[asyncio.Future[None]] = []  # stdout/stderr read to their end
        control.setblocking(False)
        self._exited = asyncio.ensure_future(self._watch(control))

    async def _watch(self, control: socket.socket) -> int:
        try:
            answer = await asyncio.get_running_loop().sock_recv(control, 64)
        finally:
            control.close()
        self.returncode = _exit_code(answer)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    async def wait(self) -> int:
        """The exit code, once the program has ended and its output pipes are read to the end
        (as asyncio's own does since Python 3.12: no pipe is left open behind)."""
        await asyncio.gather(*map(asyncio.shield, self.pipes_closed))
        return await asyncio.shield(self._exited)

    async def read_pipe(self, fd: int) -> asyncio.StreamReader:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(loop=loop)
        closed = loop.create_future()
        self.pipes_closed.append(closed)

        class Protocol(asyncio.StreamReaderProtocol):
            def connection_lost(self, exc: Exception | None) -> None:
                super().connection_lost(exc)
                if not closed.done():
                    closed.set_result(None)

        await loop.connect_read_pipe(lambda: Protocol(reader, loop=loop), os.fdopen(fd, "rb", 0))
        return reader

    async def communicate(self) -> tuple[bytes, bytes]:
        async def everything(stream: asyncio.StreamReader | None) -> bytes:
            return await stream.read() if stream is not None else b""

        out, err = await asyncio.gather(everything(self.stdout), everything(self.stderr))
        await self.wait()
        return out, err


async def spawn(module: str, *args: str, cwd: Path | str, env: dict[str, str],
                stdin: int | None = None, stdout: int | None = None,
                stderr: int | None = None, open_files: int | None = None) -> Process:
    """`python -m module args…` as asyncio.create_subprocess_exec would start it."""
    send, ours = _child_stdio(stdin, stdout, stderr)
    try:
        control, pid = _request(module, list(args), cwd, env, open_files, send)
    except BaseException:
        for fd in ours.values():
            os.close(fd)
        raise
    proc = Process(pid, control)
    if 1 in ours:
        proc.stdout = await proc.read_pipe(ours[1])
    if 2 in ours:
        proc.stderr = await proc.read_pipe(ours[2])
    return proc


def run(module: str, *args: str, cwd: Path | str, env: dict[str, str],
        timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """`python -m module args…` to completion, as subprocess.run(capture_output=True, text=True)."""
    send, ours = _child_stdio(None, PIPE, PIPE)
    control, pid = _request(module, list(args), cwd, env, None, send)
    output: dict[int, bytes] = {1: b"", 2: b""}
    deadline = time.monotonic() + timeout
    with control, selectors.DefaultSelector() as sel:
        for target, fd in ours.items():
            sel.register(fd, selectors.EVENT_READ, target)
        while sel.get_map():
            if not (ready := sel.select(max(0.0, deadline - time.monotonic()))):
                os.kill(pid, signal.SIGKILL)
                for fd in ours.values():
                    os.close(fd)
                raise subprocess.TimeoutExpired([module, *args], timeout)
            for key, _ in ready:
                if chunk := os.read(key.fd, 65536):
                    output[key.data] += chunk
                else:
                    sel.unregister(key.fd)
                    os.close(key.fd)
        code = _exit_code(control.recv(64))
    return subprocess.CompletedProcess([module, *args], code, output[1].decode(),
                                       output[2].decode())
