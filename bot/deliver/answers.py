"""What the dispatcher records for each answer a service gives: one small handler per outcome.

A SENT answer is recorded in one place, `Answers.sent`; every handler says whether the rest
of the subscriber's batch may go on now.
"""

from __future__ import annotations

import itertools
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta

from bot.deliver.schedule import DigestPeriod
from notifiers.base import Delivery, Message, Notifier, Outcome
from storage import outbox
from storage import subscribers as sub_repo
from storage.records import DigestMark, Subscriber
from storage.store import AsyncStore

log = logging.getLogger(__name__)

PERMANENT_FAILURES_TO_DEACTIVATE = 3

Handler = Callable[[Notifier, Subscriber, Message, Delivery], Awaitable[bool]]
Mark = tuple[Sequence[int], datetime, "tuple[int, DigestMark] | None"]  # mark_sent's arguments


def backoff(attempts: int) -> float:
    """Per-row backoff: 30 s doubling to an hour, with jitter."""
    return min(3600.0, 30.0 * 2 ** max(attempts, 0)) * random.uniform(0.8, 1.2)


class Answers:
    """Turns a `Delivery` into outbox and subscriber changes; `broken` is shared with the
    dispatcher (a channel named there is stopped)."""

    def __init__(self, store: AsyncStore, now: Callable[[], datetime],
                 digest_period: DigestPeriod | None, broken: dict[str, str]) -> None:
        self.store = store
        self.now = now
        self.digest_period = digest_period  # digests are recorded per local date or week
        self.broken = broken
        # Accepted messages whose "sent" mark the store has not written yet, per channel: a
        # mark that fails (full disk) stays here and is written before anything else is sent
        # on that channel, so bookkeeping can never make a message go twice.
        self.owed: dict[str, dict[int, Mark]] = {}
        self._keys = itertools.count()
        self._handlers: dict[Outcome, Handler] = {
            Outcome.SENT: self.sent, Outcome.RETRY: self._retry, Outcome.FAILED: self._failed,
            Outcome.GONE: self._gone, Outcome.PAUSED: self._paused, Outcome.BROKEN: self._broken,
        }

    async def apply(self, notifier: Notifier, sub: Subscriber, message: Message,
                    delivery: Delivery) -> bool:
        """Record the service's answer; False when the rest of this subscriber's batch must wait."""
        handler = self._handlers.get(delivery.outcome)
        return await handler(notifier, sub, message, delivery) if handler else False

    async def sent(self, notifier: Notifier, sub: Subscriber, message: Message,
                   delivery: Delivery) -> bool:
        owed = self.owed.setdefault(notifier.channel, {})
        key = next(self._keys)
        owed[key] = mark = (message.row_ids, self.now(), self._digest(sub, message))
        await self.store.call(outbox.mark_sent, *mark)  # a refusal leaves the mark owed
        del owed[key]
        if sub.permanent_failures:
            await self.store.call(sub_repo.reset_permanent_failures, sub.id)
        return True

    async def settle(self, channel: str) -> int:
        """Write the owed marks of this channel; raises while the store still refuses."""
        owed = self.owed.get(channel, {})
        written = 0
        for key, mark in sorted(owed.items()):
            await self.store.call(outbox.mark_sent, *mark)
            del owed[key]
            written += 1
        return written

    async def _retry(self, notifier: Notifier, sub: Subscriber, message: Message,
                     delivery: Delivery) -> bool:
        if delivery.rate_limited:
            return await self._postpone(message, delivery)
        now = self.now()
        wait = delivery.retry_after
        if wait is None:
            wait = backoff(max(r.attempts for r in message.rows))
        gave_up = await self.store.call(outbox.mark_retry, message.row_ids, delivery.reason, now,
                                        now + timedelta(seconds=wait))
        if gave_up:
            log.warning("%s: %d rows for subscriber %d failed after retries: %s",
                        notifier.channel, len(gave_up), sub.id, delivery.reason)
        return False

    async def _postpone(self, message: Message, delivery: Delivery) -> bool:
        """Slowing down is the whole channel's business, not this message's failure: the rows
        wait without spending one of their ten attempts."""
        wait = delivery.retry_after if delivery.retry_after is not None else backoff(0)
        await self.store.call(outbox.postpone, message.row_ids,
                              self.now() + timedelta(seconds=wait), delivery.reason)
        return False

    async def _failed(self, notifier: Notifier, sub: Subscriber, message: Message,
                      delivery: Delivery) -> bool:
        await self.store.call(outbox.mark_failed, message.row_ids, delivery.reason, self.now())
        if not delivery.counts_against_recipient:
            return True
        n = await self.store.call(sub_repo.add_permanent_failure, sub.id)
        limit = getattr(notifier, "max_permanent_failures", PERMANENT_FAILURES_TO_DEACTIVATE)
        if n < limit:
            return True
        await self._deactivate(notifier, sub, f"{n} permanent failures: {delivery.reason}")
        return False

    async def _gone(self, notifier: Notifier, sub: Subscriber, message: Message,
                    delivery: Delivery) -> bool:
        await self.store.call(outbox.mark_failed, message.row_ids, delivery.reason, self.now())
        if not delivery.whole_address:
            await self._deactivate(notifier, sub, delivery.reason)
            return False
        n = await self.store.call(sub_repo.deactivate_address, notifier.channel, sub.address,
                                  delivery.reason)
        log.warning("%s %s deactivated: %s%s", notifier.channel, sub.address, delivery.reason,
                    f" ({n} forum topics)" if n > 1 else "")
        return False

    async def _paused(self, notifier: Notifier, sub: Subscriber, message: Message,
                      delivery: Delivery) -> bool:
        await self.store.call(sub_repo.pause, sub.id, f"paused: {delivery.reason}")
        log.warning("%s %s paused: %s", notifier.channel, sub.address, delivery.reason)
        return False

    async def _broken(self, notifier: Notifier, sub: Subscriber, message: Message,
                      delivery: Delivery) -> bool:
        if notifier.channel not in self.broken:
            self.broken[notifier.channel] = delivery.reason
            log.error("%s notifier stopped: %s (pending messages are kept)",
                      notifier.channel, delivery.reason)
        return False

    def _digest(self, sub: Subscriber, message: Message) -> tuple[int, DigestMark] | None:
        due = [r.due_at for r in message.rows if r.due_at is not None]
        mark = self.digest_period(sub, max(due)) if self.digest_period and due else None
        return (sub.id, mark) if mark else None

    async def _deactivate(self, notifier: Notifier, sub: Subscriber, reason: str) -> None:
        await self.store.call(sub_repo.deactivate, sub.id, reason)
        log.warning("%s %s deactivated: %s", notifier.channel, sub.address, reason)
