"""Logging for every stage: text or JSON lines; secrets and unsubscribe tokens always redacted."""

from __future__ import annotations

import logging
import re
import sys
import threading
from collections.abc import Iterable
from types import TracebackType

from pythonjsonlogger.json import JsonFormatter

TOKEN_PATTERN = re.compile(r"([?&]t=)[A-Za-z0-9_\-.~%]+")
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


_FILTER = RedactFilter()


def redactor() -> RedactFilter:
    """The process-wide filter, so a secret generated later can be added to it."""
    return _FILTER


def setup_logging(*, verbose: bool = False, fmt: str = "text",
                  secrets: Iterable[str] = ()) -> None:
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
    for noisy in ("httpx", "httpcore", "telegram", "apscheduler", "aiosqlite", "slack_sdk",
                  "slack_bolt", "aiohttp", "asyncio", "hpack"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _log_uncaught(kind: type[BaseException], value: BaseException | None,
                  tb: TracebackType | None) -> None:
    """A traceback nobody caught goes through the redacting handler too, never raw to stderr:
    library errors quote tokens (python-telegram-bot's InvalidToken names the bot token)."""
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, value or kind(), tb)
        return
    logging.getLogger("bot").critical("uncaught error", exc_info=(kind, value, tb))
