"""Fetch stage: the process-wide arXiv request gate every request (retries too) passes through.

Hand-written because the rule is "one at a time, starts `interval` seconds apart, and a user
who is waiting goes first": aiolimiter is a leaky bucket that allows bursts and has no
priorities, and an asyncio.Lock alone has neither spacing nor lanes.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator


class Turn:
    """One holder's turn; `sent()` marks when its request actually went on the wire."""

    def __init__(self, started: float) -> None:
        self.sent_at = started

    def sent(self) -> None:
        self.sent_at = time.monotonic()


class RequestGate:
    """One holder at a time; each starts at least `interval` seconds after the last one did.

    Spacing runs start to start, so a cycle of K requests costs `interval` × K whatever the
    latency, as long as an answer takes less than the interval: arXiv's rule is one request
    every `interval` seconds on one connection, not a pause after each answer. "Start" is the
    moment the previous request was sent (`Turn.sent`, after connecting), so arrivals at the
    server stay `interval` apart even when a connection set-up delayed one of them. Never two
    in flight: a holder whose answer takes longer than the interval delays the next one.

    Two FIFO lanes: interactive waiters are granted before every normal waiter. The next
    holder is chosen only when the slot is actually free, so an interactive request that
    arrives while others wait out the interval still goes next. Cancelled waiters leave
    their lane; a waiter cancelled just after being granted passes the turn on.
    """

    def __init__(self, interval: float) -> None:
        self.interval = interval
        # A margin for the jitter between sending and the server's clock (network, a busy
        # server loop): 1 % of the interval, at most 30 ms (3.03 s for arXiv's 3 s).
        self.spacing = interval + min(0.01 * interval, 0.03)
        self._priority: deque[asyncio.Future[None]] = deque()
        self._normal: deque[asyncio.Future[None]] = deque()
        self._busy = False
        self._last_sent: float | None = None
        self._timer: asyncio.TimerHandle | None = None

    @property
    def waiting(self) -> tuple[int, int]:
        """(interactive, normal) waiters queued now."""
        return len(self._priority), len(self._normal)

    @contextlib.asynccontextmanager
    async def turn(self, *, interactive: bool = False) -> AsyncIterator[Turn]:
        """Hold the gate for one request."""
        await self._acquire(interactive)
        turn = Turn(time.monotonic())
        try:
            yield turn
        finally:
            self._last_sent = turn.sent_at
            self._busy = False
            self._dispatch()

    async def _acquire(self, interactive: bool) -> None:
        if not self._busy and not self._priority and not self._normal and self._delay() <= 0:
            self._busy = True
            return
        lane = self._priority if interactive else self._normal
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        lane.append(granted)
        self._dispatch()
        try:
            await granted
        except asyncio.CancelledError:
            if granted.done() and not granted.cancelled():
                self._busy = False  # granted, but its owner is gone: pass the turn on
                self._dispatch()
            else:
                with contextlib.suppress(ValueError):
                    lane.remove(granted)
            raise

    def next_start_in(self) -> float:
        """Seconds until the spacing lets the next request start (0 when it may now)."""
        return max(self._delay(), 0.0)

    def _delay(self) -> float:
        if self._last_sent is None:
            return 0.0
        return self._last_sent + self.spacing - time.monotonic()

    def _dispatch(self) -> None:
        """Grant the gate to the next live waiter if it is free and the interval has passed."""
        if self._busy or self._timer is not None:
            return
        delay = self._delay()
        if delay > 0:
            if self._priority or self._normal:
                self._timer = asyncio.get_running_loop().call_later(delay, self._on_timer)
            return
        for lane in (self._priority, self._normal):
            while lane:
                waiter = lane.popleft()
                if not waiter.done():
                    self._busy = True
                    waiter.set_result(None)
                    return

    def _on_timer(self) -> None:
        self._timer = None
        self._dispatch()
