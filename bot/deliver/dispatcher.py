"""The dispatcher: reads due outbox rows per channel, sends them, marks each message's rows.

It never waits on polling and polling never waits on it: they meet only in the outbox table.
"""

from __future__ import annotations

import asyncio
import logging
import random
import sqlite3
import time
from collections import deque
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta

from bot import metrics
from bot.deliver.schedule import DigestDate
from notifiers.base import Delivery, Message, Notifier, Outcome
from storage import outbox
from storage import subscribers as sub_repo
from storage.records import Subscriber
from storage.store import AsyncStore

log = logging.getLogger(__name__)

READ_AHEAD = 64  # due subscribers read per outbox query during a send-out
YIELD_AFTER = 0.05  # s: a recipient that must wait longer for its own limit gives its slot up
MAX_IDLE = 60.0  # re-check the outbox at least this often (rows written by the CLI)
PERMANENT_FAILURES_TO_DEACTIVATE = 3


def backoff(attempts: int) -> float:
    """Per-row backoff: 30 s doubling to an hour, with jitter."""
    return min(3600.0, 30.0 * 2 ** max(attempts, 0)) * random.uniform(0.8, 1.2)


class Dispatcher:
    def __init__(self, store: AsyncStore, notifiers: Mapping[str, Notifier],
                 now: Callable[[], datetime], digest_date: DigestDate | None = None) -> None:
        self.store = store
        self.notifiers = dict(notifiers)
        self.now = now
        self.digest_date = digest_date  # daily digests are recorded per local date
        self._wake = {name: asyncio.Event() for name in self.notifiers}
        self.broken: dict[str, str] = {}

    def wake(self) -> None:
        for event in self._wake.values():
            event.set()

    async def run(self) -> None:
        """Serve every channel until cancelled."""
        async with asyncio.TaskGroup() as tg:
            for name in self.notifiers:
                tg.create_task(self._serve(name), name=f"dispatch-{name}")

    async def drain(self) -> int:
        """Send everything due now on every channel (for `run --once`); returns messages sent."""
        total = 0
        for name in self.notifiers:
            while name not in self.broken:
                sent, handled = await self._round(name)
                total += sent
                if not handled:
                    break
        return total

    async def _serve(self, name: str) -> None:
        event = self._wake[name]
        while name not in self.broken:
            event.clear()
            try:
                _, handled = await self._round(name)
                if handled:
                    continue
                nxt = await self.store.call(outbox.next_wakeup, name)
            except sqlite3.Error as exc:  # a long lock or a full disk: rows stay, try again
                log.error("%s: dispatcher paused, the store refused: %s", name, exc)
                handled, nxt = 0, None
            timeout = MAX_IDLE
            if nxt is not None:
                timeout = min(MAX_IDLE, max(0.05, (nxt - self.now()).total_seconds()))
            waiter = asyncio.ensure_future(event.wait())
            try:
                await asyncio.wait({waiter}, timeout=timeout)
            finally:
                waiter.cancel()

    async def _round(self, name: str) -> tuple[int, int]:
        """Serve due subscribers until none is left, `max_in_flight` at a time.

        The pool is refilled as soon as one subscriber is done, so one slow recipient never
        holds up the others; only a few subscribers are read ahead of what can be sent soon.
        A recipient that must wait for its own limit (Telegram: 1 s per chat, 3 s per group,
        between the parts of a long batch) gives its slot up meanwhile: its remaining messages
        wait in `later` and other recipients are served.
        """
        notifier = self.notifiers[name]
        width = notifier.limits.max_in_flight
        running: dict[int, asyncio.Task[tuple[int, list[Message]]]] = {}
        subs: dict[int, Subscriber] = {}
        backlog: deque[Subscriber] = deque()
        later: dict[int, tuple[float, list[Message]]] = {}  # id → (monotonic ready, messages)
        sent = served = 0
        exhausted = False
        try:
            while name not in self.broken:
                clock = time.monotonic()
                for sid in sorted((i for i, (t, _) in later.items() if t <= clock),
                                  key=lambda i: later[i][0]):
                    if len(running) >= width:
                        break
                    _, messages = later.pop(sid)
                    running[sid] = asyncio.create_task(
                        self._serve_subscriber(notifier, subs[sid], messages))
                if not backlog and not exhausted and len(running) < width:
                    batch = max(width * 4, READ_AHEAD)
                    fresh = await self.store.call(outbox.due_subscribers, name, self.now(),
                                                  batch, [*running, *later])
                    backlog.extend(fresh)
                    exhausted = len(fresh) < batch
                while backlog and len(running) < width:
                    sub = backlog.popleft()
                    if sub.id not in running and sub.id not in later:
                        subs[sub.id] = sub
                        running[sub.id] = asyncio.create_task(
                            self._serve_subscriber(notifier, sub))
                if not running and not later:
                    break
                wake = min((t for t, _ in later.values()), default=None)
                timeout = None  # a full pool: the next free slot is what to wait for
                if wake is not None and len(running) < width:
                    timeout = max(0.0, wake - time.monotonic())
                if running:
                    done, _ = await asyncio.wait(running.values(), timeout=timeout,
                                                 return_when=asyncio.FIRST_COMPLETED)
                else:  # only recipients waiting for their own limit: sleep until the first
                    await asyncio.sleep(timeout or 0)
                    done = set()
                for sid in [sid for sid, task in running.items() if task in done]:
                    n, rest = running.pop(sid).result()
                    sent += n
                    if rest:
                        later[sid] = (time.monotonic() + notifier.ready_in(subs[sid]), rest)
                    else:
                        served += 1
                        subs.pop(sid, None)
                if not backlog:
                    exhausted = False  # rows may have become due meanwhile: look again
        finally:
            for task in running.values():
                task.cancel()
        return sent, served

    async def _serve_subscriber(self, notifier: Notifier, sub: Subscriber,
                                messages: list[Message] | None = None) -> tuple[int, list[Message]]:
        """Send a subscriber's messages; returns how many were sent and the ones that must wait
        for the recipient's own limit (empty when done or when the rest must wait longer)."""
        if messages is None:
            rows = await self.store.call(outbox.due_rows, sub.id, self.now())
            if not rows:
                return 0, []
            try:
                messages = notifier.pack(sub, rows)
            except Exception:  # a rendering bug must not stop the channel
                log.exception("%s: could not render %d papers for subscriber %d",
                              notifier.channel, len(rows), sub.id)
                await self.store.call(outbox.mark_failed, [r.id for r in rows], "render error",
                                      self.now())
                return 0, []
        sent = 0
        for i, message in enumerate(messages):
            if notifier.channel in self.broken:  # a refusal of our token ends the round
                break
            if notifier.ready_in(sub) > YIELD_AFTER:
                return sent, messages[i:]
            delivery = await notifier.send(sub, message)
            metrics.DELIVERIES.labels(notifier.channel, delivery.outcome.value).inc()
            if not await self._apply(notifier, sub, message, delivery):
                break
            sent += 1
        return sent, []

    async def _apply(self, notifier: Notifier, sub: Subscriber, message: Message,
                     delivery: Delivery) -> bool:
        """Record the service's answer; False when the rest of this subscriber's batch must wait."""
        now = self.now()
        ids = message.row_ids
        match delivery.outcome:
            case Outcome.SENT:
                await self.store.call(outbox.mark_sent, ids, now, self._digest(sub, message))
                if sub.permanent_failures:
                    await self.store.call(sub_repo.reset_permanent_failures, sub.id)
                return True
            case Outcome.RETRY if delivery.rate_limited:
                # Slowing down is the whole channel's business, not this message's failure:
                # the rows wait without spending one of their ten attempts.
                wait = delivery.retry_after if delivery.retry_after is not None else backoff(0)
                await self.store.call(outbox.postpone, ids, now + timedelta(seconds=wait),
                                      delivery.reason)
                return False
            case Outcome.RETRY:
                attempts = max(r.attempts for r in message.rows)
                wait = delivery.retry_after
                if wait is None:
                    wait = backoff(attempts)
                gave_up = await self.store.call(outbox.mark_retry, ids, delivery.reason, now,
                                                now + timedelta(seconds=wait))
                if gave_up:
                    log.warning("%s: %d rows for subscriber %d failed after retries: %s",
                                notifier.channel, len(gave_up), sub.id, delivery.reason)
                return False
            case Outcome.FAILED:
                await self.store.call(outbox.mark_failed, ids, delivery.reason, now)
                if delivery.counts_against_recipient:
                    n = await self.store.call(sub_repo.add_permanent_failure, sub.id)
                    limit = getattr(notifier, "max_permanent_failures",
                                    PERMANENT_FAILURES_TO_DEACTIVATE)
                    if n >= limit:
                        await self._deactivate(notifier, sub, f"{n} permanent failures: "
                                               f"{delivery.reason}")
                        return False
                return True
            case Outcome.GONE:
                await self.store.call(outbox.mark_failed, ids, delivery.reason, now)
                if delivery.whole_address:
                    n = await self.store.call(sub_repo.deactivate_address, notifier.channel,
                                              sub.address, delivery.reason)
                    log.warning("%s %s deactivated: %s%s", notifier.channel, sub.address,
                                delivery.reason, f" ({n} forum topics)" if n > 1 else "")
                else:
                    await self._deactivate(notifier, sub, delivery.reason)
                return False
            case Outcome.PAUSED:
                await self.store.call(sub_repo.pause, sub.id, f"paused: {delivery.reason}")
                log.warning("%s %s paused: %s", notifier.channel, sub.address, delivery.reason)
                return False
            case Outcome.BROKEN:
                if notifier.channel in self.broken:
                    return False
                self.broken[notifier.channel] = delivery.reason
                log.error("%s notifier stopped: %s (pending messages are kept)",
                          notifier.channel, delivery.reason)
                return False
        return False

    def _digest(self, sub: Subscriber, message: Message) -> tuple[int, str] | None:
        due = [r.due_at for r in message.rows if r.due_at is not None]
        date = self.digest_date(sub, max(due)) if self.digest_date and due else None
        return (sub.id, date) if date else None

    async def _deactivate(self, notifier: Notifier, sub: Subscriber, reason: str) -> None:
        await self.store.call(sub_repo.deactivate, sub.id, reason)
        log.warning("%s %s deactivated: %s", notifier.channel, sub.address, reason)
