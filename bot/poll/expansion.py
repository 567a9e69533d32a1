"""After the polls: what they found new becomes outbox rows, one short transaction at a time,
so commands, health checks, the CLI and SIGTERM never wait behind a million-row fan-out.

A cancelled expansion (SIGTERM) leaves its records in the store; the next one goes on from
their cursors.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import datetime

from storage import fanout, outbox
from storage.records import Subscriber
from storage.store import AsyncStore

# After each batch the writer stays free for this share of the batch's time: another process
# waiting on the lock (the CLI) gets its turn instead of timing out.
PAUSE_SHARE = 0.1


async def expand_owed(store: AsyncStore, now: Callable[[], datetime],
                      due_at: Callable[[Subscriber], datetime]) -> int:
    """Every owed record expanded; then rows an older release left waiting for their cycle's
    end are released. Returns the outbox rows written or released."""
    written = 0
    while True:
        started = time.monotonic()
        batch = await store.call(fanout.expand, due_at)
        written += batch.written
        if not batch.more:
            break
        await asyncio.sleep((time.monotonic() - started) * PAUSE_SHARE)
    return written + await store.call(outbox.release_waiting, now(), due_at)
