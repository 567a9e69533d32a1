"""Fetch stage: arXiv's own clock, read from the HTTP Date of its answers.

Newness (the notify-age floor, baseline freshness, the time a poll records) is judged by our
clock unless it disagrees with arXiv's by more than a day: a clock 100 days ahead or a stale one
at boot must not re-send or silently swallow papers.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

log = logging.getLogger(__name__)

TRUST = timedelta(days=1)
# A Date outside these bounds is not a clock reading at all: it is ignored.
_EARLIEST = datetime(2020, 1, 1, tzinfo=UTC)
_LATEST = datetime(2200, 1, 1, tzinfo=UTC)


class ArxivClock:
    """The last Date arXiv sent, carried forward on the monotonic clock."""

    def __init__(self) -> None:
        self._reading: tuple[datetime, float] | None = None
        self._disagreed = False

    def observe(self, header: str | None) -> None:
        try:
            when = parsedate_to_datetime(header or "")
        except (TypeError, ValueError, OverflowError):
            return
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        if _EARLIEST <= when < _LATEST:
            self._reading = (when.astimezone(UTC), time.monotonic())

    def now(self, ours: datetime) -> datetime:
        """`ours`, or arXiv's time when the two disagree by more than TRUST."""
        if self._reading is None:
            return ours
        when, at = self._reading
        theirs = when + timedelta(seconds=time.monotonic() - at)
        if abs(theirs - ours) <= TRUST:
            if self._disagreed:
                log.info("our clock agrees with arXiv's again")
            self._disagreed = False
            return ours
        if not self._disagreed:
            days = (ours - theirs) / timedelta(days=1)
            log.warning("our clock is %.1f days %s arXiv's (HTTP Date): newness is judged by "
                        "arXiv's clock until they agree; check the time sync of this machine",
                        abs(days), "ahead of" if days > 0 else "behind")
        self._disagreed = True
        return theirs
