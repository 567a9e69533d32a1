"""The one pacer every channel sends through (notifiers/pacer.py), on a clock the test moves."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from notifiers.base import Limits
from notifiers.pacer import Pacer
from notifiers.slack import SlackNotifier
from notifiers.telegram import TelegramLimits
from storage.records import Subscriber


class FakeTime:
    """A clock that moves only when the test says; sleepers wake when it passes their time."""

    def __init__(self) -> None:
        self.now = 1000.0
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        future = asyncio.get_running_loop().create_future()
        self._sleepers.append((self.now + seconds, future))
        await future

    async def advance(self, seconds: float) -> None:
        self.now += seconds
        for when, future in list(self._sleepers):
            if when <= self.now:
                self._sleepers.remove((when, future))
                future.set_result(None)
        for _ in range(5):  # let the woken takers run to their next wait
            await asyncio.sleep(0)


def pacer_for(limits: Limits, time: FakeTime) -> Pacer:
    return Pacer(limits, clock=time.clock, sleep=time.sleep)


async def takes(pacer: Pacer, time: FakeTime, address: str, n: int) -> list[float]:
    """When each of `n` sends to `address`, one after the other, may go."""
    out: list[float] = []

    async def run() -> None:
        for _ in range(n):
            await pacer.turn(address)
            out.append(time.now)

    task = asyncio.create_task(run())
    await time.advance(0)
    while not task.done():
        await time.advance(0.5)
    return out


async def test_a_counted_window_allows_a_burst_then_waits_for_the_oldest_to_leave() -> None:
    time = FakeTime()
    pacer = pacer_for(Limits(overall_rate=3 / 60, rate_window=60.0), time)
    sent = await takes(pacer, time, "a@example.org", 5)
    assert [t - 1000 for t in sent] == [0, 0, 0, 60, 60]


async def test_an_even_rate_spaces_every_send() -> None:
    time = FakeTime()
    pacer = pacer_for(Limits(overall_rate=1.0), time)
    sent = await takes(pacer, time, "x", 4)
    assert [t - 1000 for t in sent] == [0, 1, 2, 3]


async def test_each_recipient_waits_its_own_interval_and_groups_longer() -> None:
    time = FakeTime()
    pacer = pacer_for(TelegramLimits(per_recipient_interval=1.0, group_per_minute=20), time)
    assert [t - 1000 for t in await takes(pacer, time, "42", 3)] == [0, 1, 2]
    assert pacer.ready_in("42") == 1.0  # the last one left just now
    assert pacer.ready_in("7") == 0
    start = time.now
    assert [t - start for t in await takes(pacer, time, "-100", 3)] == [0, 3, 6]


async def test_a_recipients_interval_counts_from_the_answer_to_its_last_send() -> None:
    """A send that travelled long still leaves the service a whole interval to the next."""
    time = FakeTime()
    pacer = pacer_for(Limits(per_recipient_interval=1.0), time)
    await pacer.turn("42")
    await time.advance(5)  # the service answered only now
    pacer.sent("42")
    assert pacer.ready_in("42") == 1.0
    assert [t - 1000 for t in await takes(pacer, time, "42", 1)] == [6]


async def test_a_priority_taker_goes_ahead_of_those_already_waiting() -> None:
    time = FakeTime()
    pacer = pacer_for(Limits(overall_rate=1.0), time)
    order: list[str] = []

    async def send(name: str, priority: bool = False) -> None:
        await pacer.turn(name, priority=priority)
        order.append(name)

    waiting = [asyncio.create_task(send(f"out{i}")) for i in range(3)]
    await time.advance(0)
    reply = asyncio.create_task(send("reply", priority=True))
    while not all(t.done() for t in [*waiting, reply]):
        await time.advance(0.5)
    assert order[:2] == ["out0", "reply"]


async def test_a_pause_holds_every_send_until_it_ends() -> None:
    time = FakeTime()
    pacer = pacer_for(Limits(), time)
    pacer.pause(30)
    sent = await takes(pacer, time, "x", 1)
    assert sent == [1030]


async def test_limits_replaced_on_a_notifier_reach_its_pacer() -> None:
    notifier = SlackNotifier("http://127.0.0.1:9/api/", "xoxb-test")
    channel = Subscriber(id=1, channel="slack", address="C1")
    await notifier.pacer.turn("C1")
    assert notifier.ready_in(channel) == pytest.approx(1.0, abs=0.1)
    notifier.limits = dataclasses.replace(notifier.limits, per_recipient_interval=0)
    await notifier.pacer.turn("C1")
    assert notifier.ready_in(channel) == pytest.approx(1.0, abs=0.1)  # nothing more booked
    assert notifier.pacer.limits.per_recipient_interval == 0


async def test_a_send_out_pause_does_not_hold_replies_and_a_held_chat_waits_alone() -> None:
    """Telegram's 429 to a send-out (retry_after 3600) pauses send-outs; a command reply is
    still tried at once. A reply refused for a while holds its own chat, not the others."""
    time = FakeTime()
    pacer = pacer_for(TelegramLimits(per_recipient_interval=1.0), time)
    pacer.pause(3600)
    done: list[tuple[str, float]] = []

    async def send(address: str, priority: bool) -> None:
        await pacer.turn(address, priority=priority)
        done.append((address, time.now - 1000))

    send_out = asyncio.create_task(send("10", priority=False))
    await time.advance(0)
    await send("7", priority=True)
    pacer.hold("7", 30)  # the reply to 7 was refused: retry after 30 s
    later = asyncio.create_task(send("7", priority=True))
    await send("8", priority=True)
    while not later.done():
        await time.advance(1)
    assert done == [("7", 0), ("8", 0), ("7", 30)]
    assert not send_out.done()
    send_out.cancel()
