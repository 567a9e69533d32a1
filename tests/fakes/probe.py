"""A process that describes itself, for tests/test_zygote.py: a child of the fork server must
look like a fresh `python -m` process to the program it runs."""

from __future__ import annotations

import atexit
import json
import os
import resource
import signal
import sys
import threading


def describe() -> dict[str, object]:
    return {
        "argv": sys.argv, "cwd": os.getcwd(), "env": dict(os.environ), "name": __name__,
        "path0": sys.path[0], "fds": sorted(os.listdir("/proc/self/fd")),
        "open_files": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
        "stdout": [sys.stdout.encoding, sys.stdout.errors, sys.stdout.line_buffering,
                   sys.stdout.write_through, sys.stdout.isatty()],
        "signals": [str(signal.getsignal(s)) for s in (signal.SIGINT, signal.SIGTERM,
                                                       signal.SIGPIPE, signal.SIGCHLD)],
        "process_group": os.getpgrp(), "umask": os.umask(0o022),
        "main": [sys.modules["__main__"].__spec__.name, sys.modules["__main__"].__package__],
    }


def main() -> None:
    what = sys.argv[1]
    if what == "describe":
        print(json.dumps(describe()))
        print("to stderr", file=sys.stderr)
    elif what == "wait":  # until SIGTERM, which ends it with 0
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        print("waiting", flush=True)
        while True:
            signal.pause()
    elif what == "exit":
        sys.exit(int(sys.argv[2]))
    elif what == "finish":  # what Python does at the end: threads joined, atexit, a message
        atexit.register(print, "atexit ran", flush=True)
        threading.Thread(target=lambda: (threading.Event().wait(0.2), print("thread ran"))).start()
        print("buffered", end="")
        sys.exit("error: a message as the exit code")
    else:
        raise RuntimeError(f"probe asked to {what}")


if __name__ == "__main__":
    main()
