"""Prometheus metrics shared by every stage of the pipeline; served at /metrics."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

ARXIV_REQUESTS = Counter(
    "daily_papers_arxiv_requests", "arXiv API requests by outcome", ["outcome"], registry=REGISTRY
)
ARXIV_RETRIES = Counter("daily_papers_arxiv_retries", "arXiv requests retried", registry=REGISTRY)
CYCLE_SECONDS = Histogram(
    "daily_papers_cycle_seconds", "Duration of one poll cycle", registry=REGISTRY
)
PAPERS_STORED = Gauge("daily_papers_papers_stored", "Papers in the store", registry=REGISTRY)
NEW_PAPERS = Counter(
    "daily_papers_new_papers", "Papers new for at least one keyword", registry=REGISTRY
)
OUTBOX = Gauge(
    "daily_papers_outbox_rows", "Outbox rows by channel and status", ["channel", "status"],
    registry=REGISTRY,
)
DELIVERIES = Counter(
    "daily_papers_deliveries", "Messages handed to a channel, by result", ["channel", "result"],
    registry=REGISTRY,
)
SUBSCRIBERS = Gauge(
    "daily_papers_subscribers", "Active subscribers per channel", ["channel"], registry=REGISTRY
)

OUTBOX_STATES = ("pending", "sent", "failed")


def set_store_gauges(papers: int, outbox: Mapping[tuple[str, str], int],
                     subscribers: Mapping[str, int], *, channels: Iterable[str] = ()) -> None:
    """Gauges read from the store; a (channel, status) with no rows is 0, never a stale value.

    `channels` are the registered ones: each has its series from the first scrape on."""
    PAPERS_STORED.set(papers)
    for channel in {*channels, *(c for c, _ in outbox), *subscribers}:
        for status in OUTBOX_STATES:
            OUTBOX.labels(channel, status).set(outbox.get((channel, status), 0))
        SUBSCRIBERS.labels(channel).set(subscribers.get(channel, 0))
