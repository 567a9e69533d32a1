"""What every fake server shares: waking tests whenever it records something, so none sleeps."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class Changes:
    """A fake calls bump() after each recorded event; tests wait until a predicate holds."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def bump(self) -> None:
        event, self._event = self._event, asyncio.Event()
        event.set()

    async def until(self, predicate: Callable[[], bool]) -> None:
        while True:
            event = self._event
            if predicate():
                return
            await event.wait()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float,
                       describe: Callable[[], str]) -> None:
        """Return once `predicate()` holds; on timeout say what the fake saw last."""
        try:
            async with asyncio.timeout(timeout):
                await self.until(predicate)
        except TimeoutError:
            raise AssertionError(
                f"condition not met within {timeout}s; {describe()}") from None
