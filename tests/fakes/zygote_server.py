"""The fork server's own side (see tests/fakes/zygote.py, the tests' side): imports the program
once, forks a child per request and makes each child what a fresh `python -m MODULE ARGS…`
would be. Run as `python -m tests.fakes.zygote_server SOCKET`.

The program's modules are imported once, by the server, with the server's environment: none may
read the environment when it is imported (bot.poll.clock reads $DAILY_PAPERS_NOW at its first
call). A wrapper module (tests.fakes.clocked) gets the program's modules afresh, the libraries
shared; Python's own start-up variables (PYTHONIOENCODING, LANG ...) need a real process.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import gc
import io
import json
import os
import resource
import selectors
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn

PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)
PRELOAD = ("bot.cli", "bot.daemon", "bot.faces.telegram", "bot.faces.slack", "bot.faces.email",
           "bot.faces.progress", "bot.faces.status", "bot.faces.commands", "bot.faces.settings",
           "bot.render.job", "bot.sync", "notifiers.apprise", "notifiers.telegram",
           "notifiers.slack")
PROGRAM = ("bot", "notifiers", "storage")  # packages a child of another module imports afresh


def die_with_parent() -> None:
    """In a child process: SIGKILL when the process that started it ends, however it ends.

    A pytest worker killed by its timeout would otherwise leave a polling daemon behind that
    slows every later test on the machine."""
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


@dataclass
class Start:
    """What a child becomes: `python -m module *args` in `cwd` with `env`."""

    module: str
    args: list[str]
    cwd: str
    env: dict[str, str]
    open_files: int | None
    stdio: dict[int, int]  # child's 0/1/2 -> descriptor received


def serve(path: str) -> Start:
    """Fork a child per request and report its exit status; returns only in a child."""
    for name in PRELOAD:
        __import__(name)
    gc.freeze()  # children share these pages: the collector leaves them alone
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(path)
    listener.listen(64)
    server = os.getpid()
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ, None)
    children: dict[int, socket.socket] = {}
    print("ready", flush=True)
    while True:
        for key, _ in sel.select():
            if key.data is None:
                conn, _ = listener.accept()
                message, fds, _, _ = socket.recv_fds(conn, 1 << 20, 3)
                request = json.loads(message)
                if request.get("quit"):
                    for pid in children:
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, signal.SIGKILL)
                        os.waitpid(pid, 0)
                    sys.exit(0)
                pid = os.fork()
                if pid == 0:
                    sel.close()
                    listener.close()
                    conn.close()
                    for other in children.values():
                        other.close()
                    die_with_parent()
                    if os.getppid() != server:
                        os._exit(1)
                    return Start(request["module"], request["args"], request["cwd"],
                                 request["env"], request["open_files"],
                                 dict(zip(request["stdio"], fds, strict=True)))
                for fd in fds:
                    os.close(fd)
                children[pid] = conn
                sel.register(os.pidfd_open(pid), selectors.EVENT_READ, pid)
                conn.send(json.dumps({"pid": pid}).encode())
            else:
                sel.unregister(key.fd)
                os.close(key.fd)
                _, status, usage = os.wait4(key.data, 0)
                conn = children.pop(key.data)
                with contextlib.suppress(OSError):
                    conn.send(f"{status} {usage.ru_utime + usage.ru_stime:.3f}".encode())
                conn.close()


def _stdio(*, unbuffered: bool) -> None:
    """sys.stdout and sys.stderr as Python makes them at start-up for these descriptors."""
    for name, fd in (("stdout", 1), ("stderr", 2)):
        old = getattr(sys, name)
        old.flush()
        raw = io.FileIO(fd, "w", closefd=False)
        stream = io.TextIOWrapper(
            raw if unbuffered else io.BufferedWriter(raw), encoding=old.encoding,
            errors=old.errors, line_buffering=not unbuffered and (fd == 2 or raw.isatty()),
            write_through=unbuffered)
        setattr(sys, name, stream)
        setattr(sys, f"__{name}__", stream)


def become(start: Start) -> None:
    """In the child: the descriptors, environment and argv of a fresh process, then the module
    runs as `python -m` runs it (its exit, exception or signal ends this process)."""
    for target, fd in start.stdio.items():
        os.dup2(fd, target)
    os.closerange(3, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
    os.chdir(start.cwd)
    os.environ.clear()
    os.environ.update(start.env)
    time.tzset()
    _stdio(unbuffered=bool(start.env.get("PYTHONUNBUFFERED")))
    if start.open_files is not None:
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (start.open_files, hard))
    extra = [p for p in start.env.get("PYTHONPATH", "").split(os.pathsep) if p]
    sys.path[:1] = [os.getcwd(), *[p for p in extra if p not in sys.path]]
    sys.argv = ["-m", *start.args]
    if start.module.split(".")[0] not in PROGRAM:  # a wrapper (tests.fakes.clocked) patches the
        for name in [m for m in sys.modules if m.split(".")[0] in PROGRAM]:  # program as it
            del sys.modules[name]  # imports it: it gets its modules fresh, the libraries shared
    import runpy

    _exit_as_python_does(lambda: runpy.run_module(start.module, run_name="__main__",
                                                  alter_sys=True))


def _exit_as_python_does(main: Callable[[], object]) -> NoReturn:
    """Python's own end of a process (the exit code or the traceback, then non-daemon threads
    joined, atexit functions run, stdout and stderr flushed) without tearing down the modules:
    that would write to every page shared with the server (55 ms of CPU at each start)."""
    code = 0
    try:
        main()
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            code = exc.code or 0
        else:
            print(exc.code, file=sys.stderr)
            code = 1
    except BaseException as exc:
        sys.excepthook(type(exc), exc, exc.__traceback__)
        code = 128 + signal.SIGINT if isinstance(exc, KeyboardInterrupt) else 1  # see below
    threading._shutdown()  # type: ignore[attr-defined]
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    if code == 128 + signal.SIGINT:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    os._exit(code)


if __name__ == "__main__":
    become(serve(sys.argv[1]))
