"""The clock every stage reads: the wall clock, or one started at $DAILY_PAPERS_NOW.

Kept light (no network libraries), so commands that only read the store start fast."""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta


@functools.cache
def _clock() -> Callable[[], datetime]:
    """The wall clock, or one that starts at $DAILY_PAPERS_NOW (ISO time, UTC if no offset)
    and runs on from there: how a schedule is tried on a chosen day (and end-to-end tests
    show a Saturday without waiting for one). Read at the first call, not at import: the
    tests' fork server imports the program before it knows a process's environment."""
    start = os.environ.get("DAILY_PAPERS_NOW", "").strip()
    if not start:
        return lambda: datetime.now(UTC)
    try:
        when = datetime.fromisoformat(start)
    except ValueError:
        raise SystemExit(f"error: DAILY_PAPERS_NOW must be an ISO time, not {start!r}") from None
    when = when if when.tzinfo else when.replace(tzinfo=UTC)
    began = time.monotonic()
    return lambda: (when + timedelta(seconds=time.monotonic() - began)).astimezone(UTC)


def utcnow() -> datetime:
    return _clock()()
