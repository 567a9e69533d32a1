"""The one pacer (deliver stage): spaces a channel's sends by its declared `Limits` (each
recipient's interval, the channel's overall rate) and holds them while the service asks."""

from __future__ import annotations

import asyncio
import bisect
import time
from collections.abc import Awaitable, Callable
from typing import Any

from notifiers.base import Limits

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[Any]]
FORGET_AFTER = 10_000  # recipients remembered before those whose slot has passed are dropped


class Pacer:
    """One per channel, shared by everything that sends on it (send-outs, replies, notes).

    Overall: at most `overall_rate × rate_window` sends in any `rate_window` seconds, or evenly
    spaced at `overall_rate` when there is no window. Priority takers (command replies) reserve
    the next free slot at once, so they never wait behind a send-out. Per recipient: one send
    per `limits.recipient_interval(address)` after the previous one was answered (`sent`);
    concurrent takers queue one interval apart.
    """

    def __init__(self, limits: Limits, *, clock: Clock = time.monotonic,
                 sleep: Sleep = asyncio.sleep) -> None:
        self.limits = limits
        self.clock = clock
        self.sleep = sleep
        self._slots: list[float] = []  # the latest overall slots taken, sorted
        self._next: dict[str, float] = {}  # recipient → clock time its next send may go
        self._paused_until = 0.0

    def pause(self, seconds: float) -> None:
        """The service asked a send-out to wait: every later send-out on the channel waits.
        Priority takers (command replies) are still tried: a flood wait is often per method
        or per chat, and a refused reply holds only its own chat (`hold`)."""
        self._paused_until = max(self._paused_until, self.clock() + seconds)

    def hold(self, address: str, seconds: float) -> None:
        """The service asked to wait before the next send to this recipient."""
        self._next[address] = max(self._next.get(address, 0.0), self.clock() + seconds)

    @property
    def paused_for(self) -> float:
        return max(0.0, self._paused_until - self.clock())

    def ready_in(self, address: str) -> float:
        """Seconds until a send to this recipient would not wait on the recipient's own limit."""
        return max(0.0, self._next.get(address, 0.0) - self.clock())

    async def turn(self, address: str, *, priority: bool = False) -> None:
        """Wait until a send to `address` keeps every limit, and count it as sent now.
        A priority send (a command reply) never waits for a send-out's pause."""
        if not priority:
            await self._wait_pause()
        await self._recipient_turn(address)
        if priority:
            await self._reserve_overall()
        else:
            await self._take_overall()
            await self._wait_pause()  # the service may have asked to wait meanwhile
        self.sent(address)

    def sent(self, address: str) -> None:
        """Count the recipient's interval from now: `turn` does when the send leaves, and the
        sender again once the service answered, so the service never sees two sends to one
        recipient closer than the interval, however long the first one travelled."""
        interval = self.limits.recipient_interval(address)
        if interval > 0:
            self._next[address] = max(self._next.get(address, 0.0), self.clock() + interval)

    async def _wait_pause(self) -> None:
        while (wait := self.paused_for) > 0:
            await self.sleep(wait)

    # -- per recipient ---------------------------------------------------------------------------

    async def _recipient_turn(self, address: str) -> None:
        """Take this recipient's next slot (concurrent takers queue one interval apart)."""
        interval = self.limits.recipient_interval(address)
        if interval <= 0:
            return
        now = self.clock()
        if len(self._next) > FORGET_AFTER:
            self._next = {k: t for k, t in self._next.items() if t > now}
        slot = max(now, self._next.get(address, 0.0))
        self._next[address] = slot + interval
        if slot > now:
            await self.sleep(slot - now)

    # -- overall ---------------------------------------------------------------------------------

    def _quota(self) -> tuple[int, float] | None:
        """(sends, seconds): at most that many sends in any window of that length."""
        rate, window = self.limits.overall_rate, self.limits.rate_window
        if not rate:
            return None
        if not window:
            return 1, 1.0 / rate
        return max(1, round(rate * window)), window

    def _free_slot(self, quota: tuple[int, float], now: float) -> float:
        """When the next send may go by the overall rate (possibly already past)."""
        count, window = quota
        return now if len(self._slots) < count else self._slots[-count] + window

    def _book(self, slot: float, count: int) -> None:
        bisect.insort(self._slots, slot)
        del self._slots[:-count]

    async def _reserve_overall(self) -> None:
        """Priority: book the next free slot at once, so later takers queue behind it."""
        quota = self._quota()
        if quota is None:
            return
        now = self.clock()
        slot = max(now, self._free_slot(quota, now))
        self._book(slot, quota[0])
        if slot > now:
            await self.sleep(slot - now)

    async def _take_overall(self) -> None:
        quota = self._quota()
        if quota is None:
            return
        count, window = quota
        while True:
            now = self.clock()
            slot = self._free_slot(quota, now)
            if slot <= now:
                # Even spacing keeps its grid, so a slightly late taker (sleep overshoot) does
                # not lower the rate; a counted window counts real send times, so it holds.
                on_grid = count == 1 and now - slot < window
                self._book(slot if on_grid else now, count)
                return
            await self.sleep(slot - now)
