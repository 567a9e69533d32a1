"""One poll cycle: every watched keyword once, in a stable order; failures recorded, others go on.

At the end what the polls found new is expanded into outbox rows for the dispatcher.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from bot import metrics
from bot.fetch.arxiv import ArxivClient
from bot.fetch.errors import ArxivRejected, ArxivUnavailable, CircuitOpen
from bot.poll.expansion import expand_owed
from bot.poll.harvest import HarvestError, HarvestReport
from bot.poll.keyword import PollSettings, needs_baseline, poll_keyword
from storage import keywords as kw_repo
from storage.records import Keyword, PollOutcome, Subscriber
from storage.store import AsyncStore

log = logging.getLogger(__name__)

UNAVAILABLE = "arXiv unavailable"


@dataclass
class CycleReport:
    started: datetime
    outcomes: list[PollOutcome] = field(default_factory=list)
    stopped_early: str | None = None
    duration: float = 0.0
    released: int = 0
    harvest: HarvestReport | None = None
    harvest_error: str | None = None
    calendar: str = ""  # what arXiv last did and does next (the announcement calendar)

    @property
    def reached(self) -> bool:
        """arXiv answered at least once in this cycle."""
        return bool(self.completed) or self.harvest is not None

    @property
    def published(self) -> list[datetime]:
        """First-version dates of everything arXiv answered (for the calendar)."""
        dates = [when for o in self.outcomes for when in o.published]
        return dates + (self.harvest.submitted if self.harvest else [])
    planned: list[Keyword] = field(default_factory=list)  # what the cycle set out to poll
    next_cycle: bool = True  # False for `run --once`: nothing is "left for next cycle"

    @property
    def untried(self) -> list[Keyword]:
        """Keywords the cycle did not reach (it stopped early)."""
        tried = {o.keyword.id for o in self.outcomes}
        return [kw for kw in self.planned if kw.id not in tried]

    @property
    def failed(self) -> list[PollOutcome]:
        return [o for o in self.outcomes if o.error]

    @property
    def completed(self) -> list[PollOutcome]:
        return [o for o in self.outcomes if not o.error and not o.waiting_confirmation]

    @property
    def new_papers(self) -> int:
        harvested = self.harvest.new_count if self.harvest else 0
        return sum(len(o.new_papers) for o in self.outcomes) + harvested

    @property
    def changed(self) -> bool:
        """Something the digest shows may differ: a commit happened or a rejection was noted."""
        return any(o.changed or o.rejected for o in self.outcomes) or bool(
            self.harvest and self.harvest.new_papers)

    def summary(self, *, public: bool = False) -> str:
        """The cycle's log line; `public` names only [arxiv] keywords and counts the others
        (they exist because someone subscribed: /healthz must not tell them)."""
        shown = [o for o in self.failed if o.keyword.in_config or not public]
        failed = ", ".join(f"'{o.keyword.display}'" for o in shown)
        if len(shown) < len(self.failed):
            failed += f"{', ' if failed else ''}{len(self.failed) - len(shown)} private"
        failed = failed or "none"
        text = (f"cycle: {len(self.outcomes)} keywords polled, {len(self.completed)} ok, "
                f"{self.new_papers} new papers, {self.released} notifications queued, "
                f"{self.duration:.1f}s; failed: {failed}")
        if self.stopped_early:
            text += f"; stopped early: {self.stopped_early}"
        if self.untried:
            text += (f"; {len(self.untried)} keywords "
                     + ("left for next cycle" if self.next_cycle else "not tried")
                     + ("" if public else f": {names(self.untried)}"))
        if self.harvest is not None:
            text += (f"; harvest: {self.harvest.records} records in {self.harvest.pages} pages "
                     f"matched against {self.harvest.keywords} keywords")
        if self.harvest_error:
            text += f"; harvest failed: {self.harvest_error}"
        if self.calendar:
            text += f"; arXiv: {self.calendar}"
        return text


def names(keywords: list[Keyword]) -> str:
    return ", ".join(f"'{kw.display}'" for kw in keywords)


DueAt = Callable[[Subscriber], datetime]
OnRejected = Callable[[Keyword, str], Awaitable[None]]
OnPolled = Callable[[int, int, PollOutcome], None]  # (done, total, outcome): progress display


Harvest = Callable[[Sequence[Keyword]], Awaitable[HarvestReport]]


async def run_cycle(client: ArxivClient, store: AsyncStore, settings: PollSettings,
                    now: Callable[[], datetime], due_at: DueAt,
                    on_rejected: OnRejected | None = None,
                    on_polled: OnPolled | None = None,
                    keywords: Sequence[Keyword] | None = None,
                    harvest: Harvest | None = None) -> CycleReport:
    """Poll `keywords` (default: every watched one) by search; with `harvest`, only those
    that need a baseline go to search, then one harvest serves every keyword."""
    report = CycleReport(started=now())
    t0 = time.monotonic()
    client.start_cycle()
    watched = await store.call(kw_repo.to_poll)
    if keywords is None:
        keywords = watched
    if harvest is not None:
        keywords = [kw for kw in keywords
                    if needs_baseline(kw, settings.max_papers, report.started)]
    report.planned = list(keywords)
    try:
        for index, kw in enumerate(keywords):
            outcome = await _poll_one(client, store, kw, settings, now, on_rejected)
            report.outcomes.append(outcome)
            if on_polled is not None:
                on_polled(index + 1, len(keywords), outcome)
            if outcome.error == UNAVAILABLE:
                report.stopped_early = f"{UNAVAILABLE} after repeated failures"
                break
        if harvest is not None and not report.stopped_early:
            await _harvest(harvest, store, report)
        # Not in `finally`: a cancelled cycle (SIGTERM) leaves its records for the next start.
        report.released = await expand_owed(store, now, due_at)
    finally:
        report.duration = time.monotonic() - t0
        metrics.CYCLE_SECONDS.observe(report.duration)
        metrics.NEW_PAPERS.inc(report.new_papers)
    return report


async def _harvest(harvest: Harvest, store: AsyncStore, report: CycleReport) -> None:
    """The harvest's keywords are read again: the baselines just taken count."""
    keywords = await store.call(kw_repo.to_poll)
    try:
        report.harvest = await harvest(keywords)
    except (HarvestError, ArxivUnavailable) as exc:
        report.harvest_error = str(exc)
        log.warning("harvest failed: %s; the next one resumes from the stored datestamp", exc)


async def _poll_one(client: ArxivClient, store: AsyncStore, kw: Keyword, settings: PollSettings,
                    now: Callable[[], datetime], on_rejected: OnRejected | None) -> PollOutcome:
    try:
        return await _poll_known_faults(client, store, kw, settings, now, on_rejected)
    except sqlite3.OperationalError:  # the store itself (locked, full, I/O): the cycle stops
        raise
    except Exception as exc:
        # Whatever else one keyword's answer provokes is that keyword's failure: it must not
        # end the daemon, and a restart would only meet the same answer again.
        reason = f"internal error: {type(exc).__name__}: {str(exc)[:200]}"
        log.error("keyword '%s': poll failed: %s", kw.display, reason)
        log.debug("keyword '%s': poll failure", kw.display, exc_info=True)
        await store.call(kw_repo.record_failure, kw.id, reason, now())
        return PollOutcome(kw, error=reason)


async def _poll_known_faults(client: ArxivClient, store: AsyncStore, kw: Keyword,
                             settings: PollSettings, now: Callable[[], datetime],
                             on_rejected: OnRejected | None) -> PollOutcome:
    try:
        outcome = await poll_keyword(client, store, kw, settings, now)
    except ArxivRejected as exc:
        await store.call(kw_repo.record_rejected, kw.id, exc.message, now())
        log.warning("keyword '%s': arXiv rejected the query: %s", kw.display, exc.message)
        if on_rejected is not None:
            await on_rejected(kw, exc.message)
        return PollOutcome(kw, error=f"arXiv rejected the query: {exc.message}", rejected=True)
    except CircuitOpen as exc:
        reason = exc.reason
        if not reason.startswith(UNAVAILABLE):
            reason = f"{UNAVAILABLE}: {reason}"
        await store.call(kw_repo.record_failure, kw.id, reason, now())
        log.error("keyword '%s': %s", kw.display, reason)
        return PollOutcome(kw, error=UNAVAILABLE)
    except ArxivUnavailable as exc:
        await store.call(kw_repo.record_failure, kw.id, exc.reason, now())
        log.warning("keyword '%s': poll failed: %s", kw.display, exc.reason)
        return PollOutcome(kw, error=exc.reason)
    if outcome.waiting_confirmation:
        log.info("keyword '%s': empty answer, waiting 10 minutes to confirm before a baseline",
                 kw.display)
    else:
        log.info("keyword '%s': %d papers, %d new%s", kw.display, outcome.stored,
                 len(outcome.new_papers), " (baseline)" if outcome.baseline else "")
    return outcome
