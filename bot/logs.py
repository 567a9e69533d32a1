"""Logging for every stage: text or JSON lines; secrets and link tokens always redacted."""

from __future__ import annotations

import logging
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable
from types import TracebackType

from pythonjsonlogger.json import JsonFormatter

# Unsubscribe and preferences tokens ride in query strings, private feed tokens in the path.
TOKEN_PATTERN = re.compile(r"([?&]t=|/feeds/s/)[A-Za-z0-9_\-.~%]+")
REDACTED = "[redacted]"


class RedactFilter(logging.Filter):
    """Replaces every secret value and unsubscribe token in the message, args and exception text."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def add(self, secret: str) -> None:
        if secret and len(secret) >= 4 and secret not in self.secrets:
            self.secrets = sorted([*self.secrets, secret], key=len, reverse=True)

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        return TOKEN_PATTERN.sub(r"\1" + REDACTED, text)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        record.msg = self.redact(message)
        record.args = None
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        # Formatters that re-render exc_info (the JSON one does) would bring the secret back.
        record.exc_info = None
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        return True


class RateLimitedLog:
    """At most one line per `interval` for a fault that can repeat thousands of times a second
    (a flood of connections, replayed requests); the next line says how many were left out."""

    def __init__(self, logger: logging.Logger, interval: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self.interval = interval
        self.clock = clock
        self._next = float("-inf")
        self._left_out = 0

    def log(self, level: int, msg: str, *args: object) -> bool:
        """Log now if the last line is `interval` old; True when a line was written."""
        now = self.clock()
        if now < self._next:
            self._left_out += 1
            return False
        if self._left_out:
            msg += f" ({self._left_out} more like it in the last {self.interval:g} s)"
        self.logger.log(level, msg, *args)
        self._next = now + self.interval
        self._left_out = 0
        return True


class Episode:
    """A fault that lasts (a full disk, a replaced database file): one line when it starts
    (or its reason changes) and one when it is over, however often it is seen in between."""

    def __init__(self, logger: logging.Logger, clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self.clock = clock
        self.reason: str | None = None
        self.since: float | None = None

    @property
    def active(self) -> bool:
        return self.reason is not None

    def seen(self, reason: str | None, over: str = "resolved") -> None:
        """Report the current state: a reason while the fault lasts, None once it is gone;
        `over` names what is fine again in the closing line."""
        if reason == self.reason:
            return
        if reason is None:
            lasted = self.clock() - (self.since or self.clock())
            self.logger.info("%s after %.0f s (was: %s)", over, lasted, self.reason)
            self.reason = self.since = None
            return
        if self.reason is None:
            self.since = self.clock()
        self.reason = reason
        self.logger.error("%s", reason)


class StoreFaults:
    """The store refusing writes at run time (a full disk, a lock held past the busy timeout,
    an I/O error): one line per place (poll cycle, delivery, lease…) and episode, one line when
    any write succeeds again; /healthz lists the places meanwhile."""

    def __init__(self, logger: logging.Logger,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self.clock = clock
        self.lines: dict[str, str] = {}  # place → the line it logged
        self.since: float | None = None

    @property
    def active(self) -> bool:
        return bool(self.lines)

    def failed(self, place: str, line: str) -> None:
        if self.lines.get(place) == line:
            return
        if not self.lines:
            self.since = self.clock()
        self.lines[place] = line
        self.logger.error("%s", line)

    def wrote(self) -> None:
        """A write went through: the episode is over for every place."""
        if not self.lines:
            return
        lasted = self.clock() - (self.since or self.clock())
        self.logger.warning("the store writes again after %.0f s", lasted)
        self.lines.clear()
        self.since = None


_FILTER = RedactFilter()


def redactor() -> RedactFilter:
    """The process-wide filter, so a secret generated later can be added to it."""
    return _FILTER


def setup_logging(*, verbose: bool = False, fmt: str = "text", secrets: Iterable[str] = (),
                  quiet: Iterable[str] = ()) -> None:
    """`quiet`: more library loggers held at WARNING (the channels' own, from the registry)."""
    for secret in secrets:
        _FILTER.add(secret)
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    handler.addFilter(_FILTER)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    # Library chatter stays quiet even with --verbose: polling must not flood the log,
    # and request URLs can carry tokens (the Telegram bot token is part of its URL path).
    sys.excepthook = _log_uncaught
    threading.excepthook = lambda args: _log_uncaught(args.exc_type, args.exc_value,
                                                      args.exc_traceback)
    for noisy in ("httpx", "httpcore", "aiosqlite", "aiohttp", "asyncio", "hpack", *quiet):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _log_uncaught(kind: type[BaseException], value: BaseException | None,
                  tb: TracebackType | None) -> None:
    """A traceback nobody caught goes through the redacting handler too, never raw to stderr:
    library errors quote tokens (python-telegram-bot's InvalidToken names the bot token)."""
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, value or kind(), tb)
        return
    logging.getLogger("bot").critical("uncaught error", exc_info=(kind, value, tb))
