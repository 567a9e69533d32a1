"""`run --once` on a terminal: one progress bar (rich) that owns the bottom line while log lines
print above it, and that ends cleanly when the cycle stops early."""

from __future__ import annotations

import logging
import sys
from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from bot.poll.cycle import UNAVAILABLE
from storage.records import PollOutcome


class TerminalProgress:
    """The cycle's `on_polled` callback, used as a context manager around the cycle."""

    def __init__(self) -> None:
        self.console = Console(file=sys.stderr, highlight=False, soft_wrap=True)
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[state]}"), TimeElapsedColumn(),
            console=self.console, redirect_stderr=True, redirect_stdout=True)
        self.task = self.progress.add_task("polling", total=None, state="")
        self._streams: list[tuple[logging.StreamHandler, object]] = []

    def __enter__(self) -> TerminalProgress:
        self.progress.start()
        # rich now prints what is written to sys.stderr above the bar; the log handlers hold
        # the stream they were given at start-up, so they are pointed at it too.
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.StreamHandler) and handler.stream is sys.__stderr__:
                self._streams.append((handler, handler.setStream(sys.stderr)))
        return self

    def __call__(self, done: int, total: int, outcome: PollOutcome) -> None:
        state = outcome.error or ("baseline" if outcome.baseline
                                  else f"{len(outcome.new_papers)} new")
        description = outcome.keyword.display[:40]
        if outcome.error == UNAVAILABLE:
            description, state = "stopped early", f"{UNAVAILABLE}; {total - done} not tried"
        self.progress.update(self.task, completed=done, total=total, description=description,
                             state=state[:60])

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        for handler, stream in self._streams:
            handler.setStream(stream)  # type: ignore[arg-type]
        self.progress.stop()
