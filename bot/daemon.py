"""The daemon: lease, migrations, config sync, the poll scheduler, the dispatcher, faces and web.

`run` loops until SIGINT/SIGTERM; `run --once` does one cycle, delivers what is due and exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sqlite3
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from bot import channels, metrics
from bot.app import App, Face, utcnow
from bot.config import Config, Secrets
from bot.deliver.dispatcher import Dispatcher
from bot.deliver.schedule import digest_period_factory, due_at_factory
from bot.fetch.arxiv import ArxivClient
from bot.logs import Episode, redactor
from bot.poll import calendar, rounds
from bot.poll.cycle import CycleReport, OnPolled, run_cycle
from bot.poll.expansion import expand_owed
from bot.poll.harvest import HarvestReport, harvest
from bot.render.job import outputs, write_digest_from_store
from bot.sync import sync_config
from storage import lease, outbox, papers, retention
from storage import subscribers as sub_repo
from storage.opening import prepare_store
from storage.records import Keyword
from storage.store import AsyncStore, Store

if TYPE_CHECKING:
    from bot.faces.web import WebServer

log = logging.getLogger(__name__)

HEARTBEAT = 10.0
STOP_GRACE = 8.0


async def wait_event(event: asyncio.Event, timeout: float) -> bool:
    """Wait for the event at most `timeout` seconds; unlike wait_for, never eats a cancel."""
    waiter = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait({waiter}, timeout=timeout)
    finally:
        waiter.cancel()
    return event.is_set()


def build_faces(cfg: Config, secrets: Secrets) -> list[Face]:
    """One face per channel that is on (a channel without one gets a notifier-only face)."""
    return [channel.build(cfg, secrets) for channel in channels.switched_on(cfg, secrets)]


class Daemon:
    def __init__(self, cfg: Config, secrets: Secrets,
                 now: Callable[[], datetime] = utcnow, on_polled: OnPolled | None = None) -> None:
        self.cfg = cfg
        self.secrets = secrets
        self.now = now
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.faces = build_faces(cfg, secrets)
        self.last_report: CycleReport | None = None
        self.started = now()
        self.on_polled = on_polled
        self.once = False

    async def run(self, *, once: bool = False) -> CycleReport | None:
        self.once = once
        store = prepare_store(self.cfg.storage.path, migrate=True, holder=self.holder)
        store.close()
        astore = await AsyncStore(self.cfg.storage.path).open()
        stop = asyncio.Event()
        self._install_signals(stop)
        try:
            async with ArxivClient(self.cfg.arxiv.api_url,
                                   request_interval=self.cfg.arxiv.request_interval,
                                   timeout=self.cfg.arxiv.timeout,
                                   contact=self.cfg.arxiv.contact) as client:
                app = App(self.cfg, self.secrets, astore, client, self.now, stop)
                return await self._run_app(app, once=once)
        finally:  # the lease is given back if the store lets it (a dead holder's is taken over)
            await astore.close(last=lambda s: lease.release(s.db, self.holder))

    def _install_signals(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)

    async def _run_app(self, app: App, *, once: bool) -> CycleReport | None:
        app.unsubscribe_secret = (self.secrets.daily_papers_secret
                                  or await app.store.run(Store.generated_secret))
        redactor().add(app.unsubscribe_secret)
        for warning in channels.warnings(self.cfg, self.secrets):
            app.warnings.append(warning)
            log.warning("%s", warning)
        await self._sync(app)
        notifiers = {f.name: f.notifier for f in self.faces if f.notifier is not None}
        dispatcher = Dispatcher(app.store, notifiers, self.now, digest_period_factory(self.cfg),
                                faults=app.store_faults)
        app.wake_dispatcher = dispatcher.wake
        web: WebServer | None = None
        started: list[Face] = []
        try:
            for face in self.faces:
                if await self._start_channel(app, dispatcher, face.name, face.start(app)):
                    started.append(face)
                else:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(face.stop(), STOP_GRACE / 2)
            for name, notifier in notifiers.items():
                if name not in dispatcher.broken:
                    await self._start_channel(app, dispatcher, name, notifier.start())
            if not once and self._web_needed(started):
                web = self._web_server(app)
                await web.start(started)
                app.serves_web = True
            if once:
                return await self._once(app, dispatcher)
            await self._forever(app, dispatcher)
            return self.last_report
        finally:
            if web is not None:
                await web.stop()
            for face in reversed(started):
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(face.stop(), STOP_GRACE / 2)
            for notifier in notifiers.values():
                with contextlib.suppress(Exception):
                    await notifier.close()

    def _web_server(self, app: App) -> WebServer:
        """aiohttp's server and the routes, imported only when the server runs (a third of the
        start-up of `run` without it)."""
        from bot.faces.web import DaemonView, WebServer

        view = DaemonView(self.started, self.cfg.arxiv.poll_interval, lambda: self.last_report,
                          lambda: self.refresh_gauges(app))
        return WebServer(self.cfg.web, view, app)

    def _web_needed(self, started: list[Face]) -> bool:
        """The web server runs for faces with routes (Slack in HTTP mode, email's unsubscribe
        pages) or when config.toml has a [web] section (/healthz, /metrics); the Atom feeds
        and the page are served whenever it runs, and /feed says when it does not."""
        if any(face.routes() for face in started) or "web" in self.cfg.written:
            return True
        log.info("web server off: no channel needs it; add a [web] section to config.toml "
                 "for /healthz, /metrics and the Atom feeds")
        return False

    async def _start_channel(self, app: App, dispatcher: Dispatcher, name: str,
                             starting: Awaitable[None]) -> bool:
        """A channel that cannot start (refused token, unreachable service) stays off with its
        rows kept, and the others go on. The reason goes through the redacting log: library
        errors quote tokens (python-telegram-bot's InvalidToken does)."""
        try:
            await starting
        except Exception as exc:
            reason = redactor().redact(f"{name} is off: it could not start: {exc}")
            log.error("%s", reason)
            log.debug("%s start failure", name, exc_info=True)
            app.warnings.append(reason)
            dispatcher.broken[name] = reason
            return False
        return True

    async def _sync(self, app: App) -> None:
        on = {c.name for c in channels.switched_on(self.cfg, self.secrets)}
        await app.store.run(lambda s: sync_config(s, self.cfg, self.now(), on=on))

    async def _once(self, app: App, dispatcher: Dispatcher) -> CycleReport:
        report = await self._cycle(app)
        await dispatcher.drain()
        await self._digest(app, report)
        try:
            await self._housekeeping(app)
        except sqlite3.Error as exc:  # retention waits for the next run; the cycle is done
            log.error("retention skipped, the store refused: %s", exc)
        return report

    async def _forever(self, app: App, dispatcher: Dispatcher) -> None:
        async with asyncio.TaskGroup() as tg:
            serving = tg.create_task(dispatcher.run(), name="dispatcher")
            tasks = [
                tg.create_task(self._heartbeat(app), name="heartbeat"),
                tg.create_task(self._poller(app, dispatcher), name="poller"),
            ]
            await app.stop.wait()
            log.info("stopping")
            for task in tasks:
                task.cancel()
            await dispatcher.stop(serving)  # the sends in flight are answered and marked

    async def _poller(self, app: App, dispatcher: Dispatcher) -> None:
        try:  # a fan-out a crash or a stop interrupted goes on before anything is polled
            if await expand_owed(app.store, self.now, due_at_factory(self.cfg, self.now)):
                dispatcher.wake()
        except sqlite3.Error as exc:
            log.error("notifications owed not written yet, the store refused: %s", exc)
        await self._digest(app, None)
        if self.cfg.arxiv.schedule == "announcements":
            await self._rhythm(app, dispatcher)
            return
        interval = self.cfg.arxiv.poll_interval
        while not app.stop.is_set():
            await self._round(app, dispatcher, None)
            await wait_event(app.stop, interval)

    async def _rhythm(self, app: App, dispatcher: Dispatcher) -> None:
        """Poll after each announcement (rounds.plan says what is due), sleep in between."""
        while not app.stop.is_set():
            try:
                plan = await app.store.call(rounds.plan, self.cfg.arxiv, self.now())
            except sqlite3.Error as exc:
                app.store_faults.failed("planning", f"poll planning failed, the store refused: "
                                                    f"{exc}; next try in 60 s")
                await wait_event(app.stop, 60)
                continue
            if plan.keywords or plan.harvest:
                await self._round(app, dispatcher, plan.keywords)
                continue
            log.info("arXiv: nothing to poll until %s (%s)",
                     plan.wake.strftime("%Y-%m-%d %H:%M UTC"), calendar.SCHEDULE)
            await wait_event(app.stop, max(1.0, (plan.wake - self.now()).total_seconds()))

    async def _round(self, app: App, dispatcher: Dispatcher,
                     keywords: list[Keyword] | None) -> None:
        try:
            report = await self._cycle(app, keywords)
            dispatcher.wake()
            await self._digest(app, report)
            await self._housekeeping(app)
        except (sqlite3.Error, OSError) as exc:  # locked by another writer, disk full
            app.store_faults.failed("poll", f"poll cycle stopped, the store refused: {exc}; "
                                            "next try later")
        else:
            app.store_faults.wrote()

    async def _cycle(self, app: App, keywords: list[Keyword] | None = None) -> CycleReport:
        due_at = due_at_factory(self.cfg, self.now)
        arxiv = self.cfg.arxiv
        harvester = None
        if arxiv.source == "harvest":
            async def harvester(kws: Sequence[Keyword]) -> HarvestReport:
                return await harvest(app.client, app.store, kws, oai_url=arxiv.oai_url,
                                     sets=arxiv.harvest_sets, settings=app.poll_settings,
                                     now=self.now)
        report = await run_cycle(app.client, app.store, app.poll_settings, self.now, due_at,
                                 on_rejected=lambda kw, msg: self._tell_rejected(app, kw, msg),
                                 on_polled=self.on_polled, keywords=keywords,
                                 harvest=harvester)
        await self._record(app, report)
        self.last_report = report
        report.next_cycle = not self.once
        log.info("%s", report.summary())
        await self.refresh_gauges(app)
        return report

    async def _record(self, app: App, report: CycleReport) -> None:
        """The round into the announcement calendar, and its line into the report."""
        if not report.outcomes and report.harvest is None and report.harvest_error is None:
            return
        now = self.now()
        record = await app.store.call(rounds.record, self.cfg.arxiv, now,
                                      reached=report.reached, published=report.published)
        report.calendar = rounds.describe(record, now)

    async def _tell_rejected(self, app: App, kw: Keyword, message: str) -> None:
        faces = {f.name: f for f in self.faces}
        subs = await app.store.run(lambda s: sub_repo.subscribers_of(s.db, kw.id))
        for sub in subs:
            face = faces.get(sub.channel)
            tell = getattr(face, "tell", None)
            if tell is not None:
                with contextlib.suppress(Exception):
                    await tell(sub, f"arXiv rejected the keyword '{kw.display}': {message}. "
                                    "It will not be polled again until it is changed.")

    async def _digest(self, app: App, report: CycleReport | None) -> None:
        """After a cycle that changed something, or whenever a file is missing (None: only
        then, as at start, so the page served at / is there before the first poll)."""
        files = outputs(self.cfg)
        due = report is not None and report.changed
        if not files or not (due or not all(p.exists() for p in files)):
            return
        try:
            changed = await write_digest_from_store(app.store, self.cfg, self.now())
        except Exception as exc:  # the digest must never stop polling or delivery
            log.error("digest not written: %s", exc)
            return
        for path in changed:
            log.info("digest written to %s", path)

    async def _heartbeat(self, app: App) -> None:
        replaced = Episode(log)
        while not await wait_event(app.stop, HEARTBEAT):
            replaced.seen(app.store.replaced(), over="the database file is the open one again")
            try:
                ok = await app.store.call(lease.heartbeat, self.holder, self.now())
            except sqlite3.Error as exc:  # a passing lock; the lease lasts 60 s
                app.store_faults.failed("lease", f"lease heartbeat not written: {exc}")
                continue
            app.store_faults.wrote()
            if not ok:
                log.error("another process took over the database lease; stopping")
                app.stop.set()
                return

    async def _housekeeping(self, app: App) -> None:
        """Retention and a little vacuum; cheap enough to run after every cycle, and run by
        `run --once` too (a scheduled-CI deployment must not grow without limit)."""
        now = self.now()

        def clean(store: Store) -> retention.Pruned:
            pruned = retention.prune(store.db, now)
            store.maintenance()
            return pruned

        pruned = await app.store.run(clean)
        if pruned.seen or pruned.outbox or pruned.papers:
            log.info("retention: %d seen entries, %d ended notifications and %d papers older "
                     "than 90 days pruned", pruned.seen, pruned.outbox, pruned.papers)

    async def refresh_gauges(self, app: App) -> None:
        """After each cycle and at each scrape: outbox rows change while the dispatcher sends."""
        def read(store: Store) -> tuple[int, dict, dict]:
            return (papers.count(store.db), outbox.counts(store.db),
                    sub_repo.active_counts(store.db))

        metrics.set_store_gauges(*await app.store.run(read), channels=channels.names())
