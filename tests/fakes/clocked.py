"""A clock the test moves, for the real `daily-papers` process.

`python -m tests.fakes.clocked ARGS…` is `daily-papers ARGS…` whose wall clock (`bot.app.utcnow`)
reads the time from the file named by $DAILY_PAPERS_TEST_CLOCK: time stands still until the
test writes another (`FileClock.set`), so a test reaches a digest minute without waiting for it.
Only tests start it ($DAILY_PAPERS_NOW, the program's own, starts a clock that runs on).
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

ENV = "DAILY_PAPERS_TEST_CLOCK"


class FileClock:
    """The test's side: the time the process sees, written atomically."""

    def __init__(self, path: Path, start: datetime) -> None:
        self.path = path
        self.set(start)

    def set(self, when: datetime) -> None:
        self.current = when.astimezone(UTC)
        partial = self.path.with_suffix(".tmp")
        partial.write_text(self.current.isoformat(), encoding="utf-8")
        partial.replace(self.path)

    def advance(self, delta: timedelta) -> datetime:
        self.set(self.current + delta)
        return self.current

    def env(self) -> dict[str, str]:
        """What the process needs to read this clock (and to find the tests package)."""
        root = Path(__file__).resolve().parent.parent.parent
        return {ENV: str(self.path), "PYTHONPATH": str(root)}


def _file_time() -> datetime:
    return datetime.fromisoformat(Path(os.environ[ENV]).read_text(encoding="utf-8").strip())


def main() -> None:
    import bot.app

    bot.app._NOW = _file_time  # what utcnow() reads (DAILY_PAPERS_NOW's start-and-run clock)
    bot.app.utcnow = _file_time  # and before anything imports it by name
    from bot.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
