"""Benchmark of how long the `daily-papers` command takes to start and finish, as a person
at a terminal feels it: `--help`, `status` and `subscribe`, each run as a fresh process, and
`run --once` on a config without keywords (the daemon's start-up and one empty cycle, no web
server, no channel; nothing to ask arXiv).

Run from the repository root: `python -m bench.bench_startup [--runs 9]`. Prints, per command,
the median and the fastest wall time and the median CPU time of the runs, in seconds (target
for `--help`: ≤ 0.3 s), then the heaviest modules `--help` imports (`python -X importtime`).
The commands work on a temporary config and database; nothing reaches the network.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONFIG = """[arxiv]
keywords = ["graph neural networks"]
[digest]
path = ""
"""

IDLE_CONFIG = """[arxiv]
keywords = []
[digest]
path = ""
[storage]
path = "idle.db"
"""  # a database of its own: the one of `subscribe` above holds a keyword to poll

COMMANDS: dict[str, list[str]] = {
    "python -c pass (the floor)": [],
    "--help": ["--help"],
    "status": ["status"],
    "subscribe": ["subscribe", "--telegram", "-1001234567890", "graph neural networks"],
    "run --once (no keywords)": ["--config", "idle.toml", "run", "--once"],
}


def timed(args: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the child): CPU time hardly moves with the machine's load.
    Empty `args` time the bare interpreter, the floor of every command."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    command = ["-m", "bot", *args] if args else ["-c", "pass"]
    subprocess.run([sys.executable, *command], cwd=cwd, env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def heaviest_imports(cwd: Path, env: dict[str, str], top: int = 5) -> list[tuple[int, str]]:
    """(cumulative microseconds, module) of the slowest top-level imports of `--help`."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "bot", "--help"], cwd=cwd,
                          env=env, check=True, capture_output=True, text=True)
    rows = []
    for line in done.stderr.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and parts[1].strip().isdigit() and not parts[2].startswith("  "):
            rows.append((int(parts[1]), parts[2].strip()))
    return sorted(rows, reverse=True)[:top]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=9, help="runs per command (default 9)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        (cwd / "config.toml").write_text(CONFIG, encoding="utf-8")
        (cwd / "idle.toml").write_text(IDLE_CONFIG, encoding="utf-8")
        env = {k: v for k, v in os.environ.items() if not k.endswith("_TOKEN")}
        env["DAILY_PAPERS_CONFIG"] = str(cwd / "config.toml")
        env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent)
        timed(["status"], cwd, env)  # creates the database: later runs time the steady state
        for name, command in COMMANDS.items():
            walls, cpus = zip(*(timed(command, cwd, env) for _ in range(args.runs)), strict=True)
            label = name if not command else f"daily-papers {name}"
            print(f"{label:<40} median {statistics.median(walls):.3f} s, "
                  f"fastest {min(walls):.3f} s, CPU median {statistics.median(cpus):.3f} s "
                  f"({args.runs} runs)" + ("  target <= 0.3 s" if name == "--help" else ""))
        imports = ", ".join(f"{mod} {us / 1000:.0f} ms" for us, mod in heaviest_imports(cwd, env))
        print(f"heaviest imports of --help: {imports}")


if __name__ == "__main__":
    main()
