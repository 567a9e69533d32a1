"""Polling by harvest: read each announcement once through OAI-PMH and match every keyword locally.

One `ListRecords` per set and page (`arXivRaw`, `from` the stored datestamp minus one day),
through the search client's gate and retries. Each page is matched against every keyword with
a valid baseline and committed in one transaction, as a search poll of those keywords would
be; the set's datestamp moves with it, so a harvest that fails resumes where it stopped and a
day missed while down is harvested later. Cost grows with papers, not with keywords.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from bot.fetch.arxiv import ArxivClient
from bot.fetch.matcher import Matcher
from bot.fetch.oai import OaiPage
from bot.poll.keyword import PollSettings, needs_baseline
from storage import harvests, polls
from storage.records import Keyword, Paper
from storage.store import AsyncStore

log = logging.getLogger(__name__)

OVERLAP = timedelta(days=1)
FIRST_LOOK_BACK = timedelta(days=2)  # a new instance starts with the last announcements
RESTARTS = 1  # a badResumptionToken restarts the set from its datestamp this often


class HarvestError(Exception):
    """The harvest could not complete (OAI error, or arXiv unavailable): nothing after the
    last committed page was written; the next harvest resumes from the stored datestamp."""


@dataclass
class HarvestReport:
    pages: int = 0
    records: int = 0
    new_papers: dict[int, list[Paper]] = field(default_factory=dict)  # keyword id → new
    submitted: list[datetime] = field(default_factory=list)  # v1 dates of new submissions
    quiet_sets: list[str] = field(default_factory=list)  # answered noRecordsMatch
    keywords: int = 0

    @property
    def new_count(self) -> int:
        return sum(len(papers) for papers in self.new_papers.values())


async def harvest(client: ArxivClient, store: AsyncStore, keywords: Sequence[Keyword], *,
                  oai_url: str, sets: Sequence[str], settings: PollSettings,
                  now: Callable[[], datetime]) -> HarvestReport:
    """One harvest of every set; raises HarvestError (or arXiv's errors) when incomplete."""
    started = now()
    ready = [kw for kw in keywords if not needs_baseline(kw, settings.max_papers, started)]
    matcher = Matcher((kw.id, kw.query) for kw in ready)
    by_id = {kw.id: kw for kw in ready}
    report = HarvestReport(keywords=len(ready))
    for spec in sets or [""]:
        await _harvest_set(client, store, spec, oai_url, matcher, by_id, settings, started,
                           report)
    await store.call(harvests.mark_harvested, list(by_id), started)
    return report


async def _harvest_set(client: ArxivClient, store: AsyncStore, spec: str, oai_url: str,
                       matcher: Matcher, by_id: dict[int, Keyword], settings: PollSettings,
                       started: datetime, report: HarvestReport) -> None:
    stored = await store.call(harvests.datestamp, spec)
    since = (stored - OVERLAP) if stored else (started - FIRST_LOOK_BACK).date()
    first = {"verb": "ListRecords", "metadataPrefix": "arXivRaw", "from": since.isoformat()}
    if spec:
        first["set"] = spec
    params, restarts = first, 0
    while True:
        page = await client.list_records(oai_url, params)
        if page.error == "noRecordsMatch":
            report.quiet_sets.append(spec or "all")
            return
        if page.error == "badResumptionToken" and restarts < RESTARTS:
            log.warning("harvest of %s: resumption token refused; starting again from %s",
                        spec or "all of arXiv", since)
            params, restarts = first, restarts + 1
            continue
        if page.error:
            raise HarvestError(f"OAI-PMH {page.error}: {page.message}")
        await _commit(store, page, spec, matcher, by_id, settings, started, report)
        if not page.token:
            return
        params = {"verb": "ListRecords", "resumptionToken": page.token}


async def _commit(store: AsyncStore, page: OaiPage, spec: str, matcher: Matcher,
                  by_id: dict[int, Keyword], settings: PollSettings, started: datetime,
                  report: HarvestReport) -> None:
    papers = [r.paper for r in page.records]
    # Seconds of CPU with tens of thousands of keywords: off the event loop, like parsing.
    matched = await asyncio.to_thread(matcher.match, papers)
    matches = {by_id[kid]: found for kid, found in matched.items()}
    floor = started - timedelta(days=settings.notify_max_age_days)
    stamp: date | None = page.last_datestamp
    new = await store.call(polls.commit_harvest_page, matches, now=started,
                           max_papers=settings.max_papers, notify_floor=floor,
                           set_spec=spec, datestamp=stamp)
    for kid, found in new.items():
        report.new_papers.setdefault(kid, []).extend(found)
    report.pages += 1
    report.records += len(papers)
    report.submitted.extend(r.paper.published for r in page.records if r.new_submission)
