"""The daemon's HTTP server ([web]): every face's routes, /healthz and /metrics.

The access log names method, path and status only: query strings carry unsubscribe tokens.
"""

from __future__ import annotations

import asyncio
import errno
import hmac
import ipaddress
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

import bot
from bot import metrics
from bot.app import App, Face
from bot.config import ArxivConfig, WebConfig
from bot.faces.connections import (
    HEADER_SECONDS,
    LINGER_SECONDS,
    ConnectionGuard,
    connection_cap,
)
from bot.faces.digest_page import DigestPageRoute
from bot.faces.feed_routes import FeedRoutes
from bot.poll import calendar, rounds
from storage import announcements, outbox
from storage.store import Store

log = logging.getLogger(__name__)
MAX_BODY = 64 * 1024
PROBE_BUSY_MS = 1000
STORE_REFUSED = ("Daily Papers cannot save this right now: its database refused the change. "
                 "Nothing was changed; please try again in a few minutes.\n")


class WebUnavailable(Exception):
    """The [web] address cannot be listened on (port in use, no such address); the message
    is the operator's one line."""


class PathOnlyAccessLogger(AbstractAccessLogger):
    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info("%s %s %s", request.method, request.path, response.status)


@dataclass(frozen=True)
class DaemonView:
    """What the web server needs of the daemon, and nothing more."""

    started: datetime
    poll_interval: float
    last_report: Callable[[], Any]  # the last CycleReport, or None before the first cycle
    refresh_gauges: Callable[[], Awaitable[None]]


class WebServer:
    def __init__(self, cfg: WebConfig, view: DaemonView, app: App) -> None:
        self.cfg = cfg
        self.view = view
        self.app = app
        self.runner: web.AppRunner | None = None
        self.listener: asyncio.Server | None = None
        self.port: int | None = None
        self.started = time.monotonic()

    async def start(self, faces: Sequence[Face]) -> None:
        guard = ConnectionGuard(connection_cap(), MAX_BODY)
        server = web.Application(client_max_size=MAX_BODY,
                                 middlewares=[guard.middleware, self.store_refusals])
        server.add_routes([web.get("/healthz", self.healthz), web.get("/metrics", self.metrics)])
        server.add_routes(FeedRoutes(self.app).routes())  # served whenever the server runs
        server.add_routes(DigestPageRoute(self.app.cfg.digest.html_path).routes())
        for face in faces:
            server.add_routes(face.routes())
        # aiohttp's keep-alive timer also runs from the moment a client connects: it is the
        # time allowed for a whole request head, the first one included.
        self.runner = web.AppRunner(server, access_log_class=PathOnlyAccessLogger,
                                    access_log=logging.getLogger("bot.faces.web.access"),
                                    keepalive_timeout=HEADER_SECONDS,
                                    lingering_time=LINGER_SECONDS)
        await self.runner.setup()
        try:
            self.listener = await guard.listen(self.runner, self.cfg.host, self.cfg.port)
        except OSError as exc:
            await self.stop()
            raise WebUnavailable(self._refusal(exc)) from None
        self.port = self.listener.sockets[0].getsockname()[1]
        log.info("web server listening on http://%s:%s", self.cfg.host, self.port)

    def _refusal(self, exc: OSError) -> str:
        where = f"[web] {self.cfg.host}:{self.cfg.port}"
        if exc.errno == errno.EADDRINUSE:
            cause = ("is in use by another program (another daily-papers?): stop it, or set "
                     "[web] port to a free port")
        else:
            cause = f"cannot be listened on ({exc.strerror or exc}): check [web] host and port"
        return f"{where} {cause}"

    async def stop(self) -> None:
        if self.listener is not None:
            self.listener.close()
            self.listener = None
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    @web.middleware
    async def store_refusals(self, request: web.Request,
                             handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
                             ) -> web.StreamResponse:
        """A page whose change the store refuses (a full disk, a long lock) answers 503 with
        what to do; the log gets one line per episode, never a traceback."""
        try:
            return await handler(request)
        except sqlite3.Error as exc:
            self.app.store_faults.failed("web", f"web: {request.method} {request.path} not "
                                                f"saved, the store refused: {exc}")
            return web.Response(status=503, text=STORE_REFUSED, headers={"Retry-After": "60"})

    async def metrics(self, request: web.Request) -> web.Response:
        refused = metrics_refusal(request, self.app.secrets.daily_papers_metrics_token)
        if refused is not None:
            return refused
        try:
            await self.view.refresh_gauges()
        except Exception as exc:  # counters are still worth serving
            log.error("metrics: store gauges not refreshed: %s", exc)
        body = generate_latest(metrics.REGISTRY)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(self, request: web.Request) -> web.Response:
        status = await self.health()
        return web.json_response(status, status=200 if status["healthy"] else 503)

    async def health(self) -> dict[str, Any]:
        report = self.view.last_report()
        now = self.app.now()
        last = report.started if report else None
        fresh = self._fresh(report, now)
        arxiv: dict[str, Any] = {}
        try:
            writable, pending = await self.app.store.run(_probe)
            arxiv = await self.app.store.run(
                lambda s: arxiv_health(s, self.app.cfg.arxiv, now, self.view.started))
        except Exception as exc:  # the store itself is broken: that is the answer
            writable, pending = False, {}
            self.app.store_faults.failed("health", f"health check: store not writable: {exc}")
        else:
            self.app.store_faults.wrote()
        failed = report.failed if report else []
        # The public server names only [arxiv] keywords: the others exist because someone
        # subscribed to them, and are counted instead.
        failing = [o.keyword.display for o in failed if o.keyword.in_config]
        problems = [p for p in (self.app.store.replaced(),) if p]
        problems += self.app.store_faults.lines.values()
        return {
            "healthy": bool(fresh and writable and not problems
                            and arxiv.get("arxiv") != "unreachable"),
            **arxiv,
            "version": bot.__version__,
            "uptime_seconds": round(time.monotonic() - self.started, 1),
            "last_cycle": last.isoformat() if last else None,
            "last_cycle_result": report.summary(public=True) if report else None,
            "pending": pending,
            "failing_keywords": failing,
            "failing_private_keywords": len(failed) - len(failing),
            "problems": problems,
            "warnings": self.app.warnings,
        }


    def _fresh(self, report: Any, now: datetime) -> bool:
        """The poller is not stuck: with the interval schedule a cycle within two intervals;
        with announcements, none overdue for two hours (a quiet weekend is not stale)."""
        last = report.started if report else None
        reference = last or self.view.started
        if self.app.cfg.arxiv.schedule == "announcements":
            start = rounds.round_start(rounds.current(now, self.app.cfg.arxiv), self.app.cfg.arxiv)
            overdue = now - start > ROUND_GRACE and reference < start
            return not (overdue and self.view.started < start)
        limit = max(2 * self.view.poll_interval, 2 * (report.duration if report else 0.0))
        return (now - reference).total_seconds() < limit


ROUND_GRACE = timedelta(hours=2)
UNREACHABLE_AFTER = timedelta(hours=6)
UNREACHABLE_ROUNDS = 2


def arxiv_health(store: Store, arxiv: ArxivConfig, now: datetime,
                 started: datetime) -> dict[str, Any]:
    """"unreachable" when no round could reach arXiv for 6 hours and the last 2 scheduled
    attempts failed (whichever comes later); "quiet" on a day without announcement."""
    reached, failed = announcements.reach(store.db)
    cur = calendar.last_announcement(now)
    record = announcements.get(store.db, cur.key)
    if failed >= UNREACHABLE_ROUNDS and now - (reached or started) >= UNREACHABLE_AFTER:
        state = "unreachable"
    elif calendar.is_quiet_day(now) or (record is not None and record.state == "missed"):
        state = "quiet"
    elif record is not None and record.state == "seen":
        state = "ok"
    else:
        state = "waiting"
    return {
        "arxiv": state,
        "arxiv_last_answered": reached.isoformat() if reached else None,
        "last_announcement": cur.at.isoformat(),
        "last_announcement_result": record.state if record else "pending",
        "next_announcement": cur.following().at.isoformat(),
        "schedule": calendar.SCHEDULE,
    }


_FORWARDED = ("Forwarded", "X-Forwarded-For", "X-Real-IP")


def metrics_refusal(request: web.BaseRequest, token: str) -> web.Response | None:
    """/metrics is for the operator: with DAILY_PAPERS_METRICS_TOKEN set, a bearer token;
    without it, loopback clients only (a request a proxy forwarded is not one)."""
    if token:
        given = request.headers.get("Authorization", "")
        if hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return None
        return web.Response(status=401, text="a bearer token is required\n",
                            headers={"WWW-Authenticate": 'Bearer realm="metrics"'})
    if _is_loopback(request.remote) and not any(h in request.headers for h in _FORWARDED):
        return None
    return web.Response(status=403, text="/metrics answers loopback clients only; set "
                                         "DAILY_PAPERS_METRICS_TOKEN to scrape it from elsewhere\n")


def _is_loopback(remote: str | None) -> bool:
    try:
        return remote is not None and ipaddress.ip_address(remote).is_loopback
    except ValueError:
        return False


def _probe(store: Store) -> tuple[bool, dict[str, int]]:
    """A real write, but one that gives up on a held lock in about a second: a health check
    that hangs for the store's 10 s busy timeout is killed by the probe that asked."""
    conn = store.db.conn
    patience = conn.execute("PRAGMA busy_timeout").fetchone()[0]
    conn.execute(f"PRAGMA busy_timeout = {PROBE_BUSY_MS}")
    try:
        store.db.execute("INSERT OR REPLACE INTO settings (key, value) VALUES ('healthz', "
                         "strftime('%Y-%m-%dT%H:%M:%fZ'))")
    finally:
        conn.execute(f"PRAGMA busy_timeout = {int(patience)}")
    return True, outbox.pending_per_channel(store.db)
