"""One channel's send-out in progress: who is being served, who is read ahead, who waits.

The dispatcher drives it round by round; it holds no store and sends nothing itself.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable

from notifiers.base import Message, Notifier
from storage.records import Subscriber

READ_AHEAD = 64  # due subscribers read per outbox query during a send-out

# Sends a subscriber's batch (or its remaining messages); returns (sent, messages left to wait).
Serve = Callable[[Subscriber, "list[Message] | None"], Awaitable[tuple[int, list[Message]]]]


class SendOut:
    """At most `max_in_flight` recipients served at once, refilled as soon as one is done.

    A recipient that must wait for its own limit gives its slot up: its remaining messages
    wait in `later` (id → monotonic ready time, messages) while others are served.
    """

    def __init__(self, notifier: Notifier, serve: Serve) -> None:
        self.notifier = notifier
        self.width = notifier.limits.max_in_flight
        self.batch = max(self.width * 4, READ_AHEAD)
        self.serve = serve
        self.running: dict[int, asyncio.Task[tuple[int, list[Message]]]] = {}
        self.subs: dict[int, Subscriber] = {}
        self.backlog: deque[Subscriber] = deque()
        self.later: dict[int, tuple[float, list[Message]]] = {}
        self.exhausted = False  # the last read found fewer due subscribers than it asked for
        self.sent = self.served = 0

    @property
    def finished(self) -> bool:
        return not self.running and not self.later

    def busy(self) -> list[int]:
        """Subscribers the outbox read must skip: they are already in hand."""
        return [*self.running, *self.later]

    def wants_more(self) -> bool:
        return not self.backlog and not self.exhausted and self._free()

    def refill(self, fresh: list[Subscriber]) -> None:
        self.backlog.extend(fresh)
        self.exhausted = len(fresh) < self.batch

    def start_ready(self) -> None:
        """Give free slots to waiting recipients whose own limit has passed, earliest first."""
        clock = time.monotonic()
        ready = sorted((sid for sid, (t, _) in self.later.items() if t <= clock),
                       key=lambda sid: self.later[sid][0])
        for sid in ready:
            if not self._free():
                break
            _, messages = self.later.pop(sid)
            self._start(self.subs[sid], messages)

    def start_backlog(self) -> None:
        while self.backlog and self._free():
            sub = self.backlog.popleft()
            if sub.id not in self.running and sub.id not in self.later:
                self.subs[sub.id] = sub
                self._start(sub, None)

    async def wait(self) -> set[asyncio.Task[tuple[int, list[Message]]]]:
        """Until a recipient is done, or (with a free slot) a waiting one becomes ready."""
        wake = min((t for t, _ in self.later.values()), default=None)
        timeout = None  # a full pool: the next free slot is what to wait for
        if wake is not None and self._free():
            timeout = max(0.0, wake - time.monotonic())
        if not self.running:  # only recipients waiting for their own limit: sleep to the first
            await asyncio.sleep(timeout or 0)
            return set()
        done, _ = await asyncio.wait(self.running.values(), timeout=timeout,
                                     return_when=asyncio.FIRST_COMPLETED)
        return done

    def collect(self, done: set[asyncio.Task[tuple[int, list[Message]]]]) -> None:
        for sid in [sid for sid, task in self.running.items() if task in done]:
            n, rest = self.running.pop(sid).result()
            self.sent += n
            if rest:
                self.later[sid] = (time.monotonic() + self.notifier.ready_in(self.subs[sid]), rest)
            else:
                self.served += 1
                self.subs.pop(sid, None)
        if not self.backlog:
            self.exhausted = False  # rows may have become due meanwhile: look again

    async def finish(self) -> None:
        """Let the recipients being served end (a store fault: what they send is recorded)."""
        await asyncio.gather(*self.running.values(), return_exceptions=True)

    def cancel(self) -> None:
        for task in self.running.values():
            task.cancel()

    def _free(self) -> bool:
        return len(self.running) < self.width

    def _start(self, sub: Subscriber, messages: list[Message] | None) -> None:
        self.running[sub.id] = asyncio.create_task(self.serve(sub, messages))
