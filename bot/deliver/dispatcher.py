"""The dispatcher: reads due outbox rows per channel, sends them, marks each message's rows.

It never waits on polling and polling never waits on it: they meet only in the outbox table.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable, Mapping
from datetime import datetime
from functools import partial

from bot import metrics
from bot.deliver.answers import Answers
from bot.deliver.schedule import DigestPeriod
from bot.deliver.sendout import SendOut
from bot.logs import StoreFaults
from notifiers.base import Delivery, Message, Notifier, Outcome
from storage import database, outbox
from storage.records import Subscriber
from storage.store import AsyncStore

log = logging.getLogger(__name__)

YIELD_AFTER = 0.05  # s: a recipient that must wait longer for its own limit gives its slot up
MAX_IDLE = 60.0  # re-check the outbox at least this often (rows written by the CLI)
FAULT_BACKOFF = (1.0, 60.0)  # s: first and longest wait between writes tried on a store fault
EXIT_TRIES = 3  # `run --once`: owed marks tried this many times before the process ends
SEND_GRACE = 3.0  # s a stop gives the sends in flight for the service's answer and their marks


class Dispatcher:
    """One send-out loop per channel; answers are recorded by `Answers`."""

    def __init__(self, store: AsyncStore, notifiers: Mapping[str, Notifier],
                 now: Callable[[], datetime], digest_period: DigestPeriod | None = None,
                 faults: StoreFaults | None = None) -> None:
        self.store = store
        self.notifiers = dict(notifiers)
        self.now = now
        self.faults = faults or StoreFaults(log)
        self._wake = {name: asyncio.Event() for name in self.notifiers}
        self.broken: dict[str, str] = {}  # channel → why it stopped
        self.stopping = False  # set by `stop`: no message starts any more
        self._sending = 0  # messages handed to a notifier whose answer is not recorded yet
        self._quiet = asyncio.Event()  # set while _sending is 0
        self._quiet.set()
        self.answers = Answers(store, now, digest_period, self.broken)

    def wake(self) -> None:
        for event in self._wake.values():
            event.set()

    async def run(self) -> None:
        """Serve every channel until cancelled."""
        async with asyncio.TaskGroup() as tg:
            for name in self.notifiers:
                tg.create_task(self._serve(name), name=f"dispatch-{name}")

    async def stop(self, serving: asyncio.Future[None], grace: float = SEND_GRACE) -> None:
        """A clean stop repeats nothing: no message starts any more, those in flight get
        `grace` seconds for the service's answer (cancelled, a message the service read would
        go again at the next start), and the marks owed for accepted ones are written."""
        self.stopping = True
        self.wake()
        deadline = asyncio.get_running_loop().time() + grace
        quiet = asyncio.ensure_future(self._quiet.wait())  # nothing in flight: only reads left
        await asyncio.wait({serving, quiet}, timeout=grace, return_when=asyncio.FIRST_COMPLETED)
        quiet.cancel()
        serving.cancel()
        await asyncio.gather(serving, return_exceptions=True)
        for name in self.notifiers:
            left = deadline - asyncio.get_running_loop().time()
            if not self.answers.owed.get(name):
                continue
            try:
                await asyncio.wait_for(self.answers.settle(name), max(left, 0.5))
            except (sqlite3.Error, TimeoutError):
                log.error("%s: %d accepted messages could not be marked sent before the stop; "
                          "the next start sends them again", name,
                          len(self.answers.owed.get(name, {})))

    async def drain(self) -> int:
        """Send everything due now on every channel (for `run --once`); returns messages sent.
        A store fault stops the channel's delivery: what was accepted is marked if it can be."""
        total = 0
        for name in self.notifiers:
            try:
                while name not in self.broken:
                    sent, handled = await self._round(name)
                    total += sent
                    if not handled:
                        break
            except sqlite3.Error as exc:
                self._refused(name, exc)
                await self._settle_before_exit(name)
        return total

    async def _serve(self, name: str) -> None:
        event = self._wake[name]
        pause = 0.0
        while name not in self.broken and not self.stopping:
            event.clear()
            try:
                await self._settle(name)
                _, handled = await self._round(name)
                pause = 0.0
                if handled:
                    continue
                nxt = await self.store.call(outbox.next_wakeup, name)
            except sqlite3.Error as exc:  # a full disk, a long lock: pause, send nothing
                self._refused(name, exc)
                pause = min(FAULT_BACKOFF[1], max(FAULT_BACKOFF[0], pause * 2))
                await asyncio.sleep(pause)
                continue
            timeout = MAX_IDLE
            if nxt is not None:
                timeout = min(MAX_IDLE, max(0.05, (nxt - self.now()).total_seconds()))
            waiter = asyncio.ensure_future(event.wait())
            try:
                await asyncio.wait({waiter}, timeout=timeout)
            finally:
                waiter.cancel()

    def _refused(self, name: str, exc: sqlite3.Error) -> None:
        owed = len(self.answers.owed.get(name, {}))
        self.faults.failed(f"delivery:{name}", (
            f"{name}: delivery paused, the store refused: {exc}; "
            f"{owed} accepted messages wait for their mark, nothing is sent meanwhile"))

    async def _settle(self, name: str) -> None:
        """Before sending anything on a channel: the marks owed for messages it already
        accepted, or (while the store is known to refuse) a small write, must go through."""
        if self.answers.owed.get(name):
            await self.answers.settle(name)
        elif self.faults.active:
            await self.store.call(database.probe_write, "dispatcher")
        else:
            return
        self.faults.wrote()

    async def _settle_before_exit(self, name: str) -> None:
        for attempt in range(EXIT_TRIES):
            try:
                await self._settle(name)
                return
            except sqlite3.Error:
                await asyncio.sleep(FAULT_BACKOFF[0] * 2 ** attempt)
        log.error("%s: %d accepted messages could not be marked sent; the next run may send "
                  "them again", name, len(self.answers.owed.get(name, {})))

    async def _round(self, name: str) -> tuple[int, int]:
        """Serve due subscribers until none is left, `max_in_flight` at a time.

        The pool is refilled as soon as one subscriber is done, so one slow recipient never
        holds up the others; only a few subscribers are read ahead of what can be sent soon.
        A recipient that must wait for its own limit (Telegram: 1 s per chat, 3 s per group,
        between the parts of a long batch) gives its slot up meanwhile (see `SendOut`).
        """
        notifier = self.notifiers[name]
        out = SendOut(notifier, partial(self._serve_subscriber, notifier))
        try:
            while name not in self.broken and not self.stopping:
                out.start_ready()
                if out.wants_more():
                    out.refill(await self.store.call(outbox.due_subscribers, name, self.now(),
                                                     out.batch, out.busy()))
                out.start_backlog()
                if out.finished:
                    break
                out.collect(await out.wait())
            await out.finish()  # stopped or broken: the sends in flight end and are recorded
        except sqlite3.Error:
            await out.finish()  # sends in flight end and record their answers (owed marks)
            raise
        finally:
            out.cancel()
        return out.sent, out.served

    async def _serve_subscriber(self, notifier: Notifier, sub: Subscriber,
                                messages: list[Message] | None = None) -> tuple[int, list[Message]]:
        """Send a subscriber's messages; returns how many were sent and the ones that must wait
        for the recipient's own limit (empty when done or when the rest must wait longer)."""
        if messages is None:
            messages = await self._pack(notifier, sub)
        sent = 0
        for i, message in enumerate(messages):
            if notifier.channel in self.broken or self.stopping:  # token refused, or a stop
                break
            if notifier.ready_in(sub) > YIELD_AFTER:
                return sent, messages[i:]
            if not await self._send(notifier, sub, message):
                break
            sent += 1
        return sent, []

    async def _send(self, notifier: Notifier, sub: Subscriber, message: Message) -> bool:
        """One message and the record of its answer, counted while in flight (see `stop`)."""
        self._sending += 1
        self._quiet.clear()
        try:
            delivery = await self._attempt(notifier, sub, message)
            metrics.DELIVERIES.labels(notifier.channel, delivery.outcome.value).inc()
            return await self.answers.apply(notifier, sub, message, delivery)
        finally:
            self._sending -= 1
            if not self._sending:
                self._quiet.set()

    @staticmethod
    async def _attempt(notifier: Notifier, sub: Subscriber, message: Message) -> Delivery:
        """The notifier's answer. An exception (a library's bug, an answer no client can read)
        may come after the service took the message: its rows end failed, never sent again,
        and the channel and the daemon go on (before: the daemon ended, and each restart sent
        the same message again before ending once more)."""
        try:
            return await notifier.send(sub, message)
        except Exception as exc:
            log.exception("%s: sending %d papers to %s failed unexpectedly (a bug, please "
                          "report it); they are marked failed, not sent again",
                          notifier.channel, len(message.rows), sub.address)
            return Delivery(Outcome.FAILED, f"unexpected error: {type(exc).__name__}",
                            counts_against_recipient=False)

    async def _pack(self, notifier: Notifier, sub: Subscriber) -> list[Message]:
        """The subscriber's due rows as messages; a rendering bug fails them, not the channel."""
        rows = await self.store.call(outbox.due_rows, sub.id, self.now())
        if not rows:
            return []
        try:
            return notifier.pack(sub, rows)
        except Exception:
            log.exception("%s: could not render %d papers for subscriber %d",
                          notifier.channel, len(rows), sub.id)
            await self.store.call(outbox.mark_failed, [r.id for r in rows], "render error",
                                  self.now())
            return []
