"""Fetch stage: the arXiv API client that the poll cycle asks for one page of one query.

Keeps arXiv's terms (one connection, one request per interval through one gate, retries
included) and survives its known faults with retries, a per-cycle retry budget and a
circuit breaker. Raises only ArxivRejected (permanent) or ArxivUnavailable and subclasses.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, NoReturn

import httpx
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type

import bot
from bot.fetch.arxiv_clock import ArxivClock
from bot.fetch.atom import parse_feed
from bot.fetch.bounded import ACCEPT_ENCODING, MAX_ANSWER_BYTES, UnreadableAnswer, read_bounded
from bot.fetch.errors import (
    ArxivBadAnswer,
    ArxivRejected,
    ArxivUnavailable,
    CircuitOpen,
    RetryBudgetExhausted,
    SuspiciousAnswer,
)
from bot.fetch.gate import RequestGate, Turn
from bot.fetch.oai import OaiPage, parse_oai
from bot.fetch.reach import cause, unreachable
from bot.metrics import ARXIV_REQUESTS, ARXIV_RETRIES
from notifiers.retry_after import parse_retry_after
from storage.records import Feed

log = logging.getLogger("bot.fetch.arxiv")

MAX_WAIT = 300.0  # seconds: cap of backoff and of an honoured Retry-After
DEADLINE_FACTOR = 4  # a whole answer may take this many times the per-read timeout

Check = Callable[[Feed], str | None]



def backoff_delay(
    attempt: int, base: float, retry_after: float | None = None,
    rand: Callable[[], float] = random.random,
) -> float:
    """Wait before retry number `attempt` (1-based): the server's Retry-After when it gave
    one, else exponential backoff with full jitter; both capped at MAX_WAIT."""
    if retry_after is not None:
        return min(retry_after, MAX_WAIT)
    return rand() * min(MAX_WAIT, base * 2 ** (attempt - 1))


@dataclass(frozen=True)
class _Request:
    """One kind of arXiv request: where, what, how its answer is read."""

    url: str
    params: dict[str, str]
    parse: Callable[[bytes], Any]
    label: str  # for the retry log line
    accept: str = "application/atom+xml"


class _Transient(Exception):
    """One failed attempt worth retrying; converted to a public error when retries end."""

    def __init__(self, outcome: str, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.outcome = outcome
        self.reason = reason
        self.retry_after = retry_after


class ArxivClient:
    """One per process: every arXiv request of the daemon goes through this client's gate."""

    def __init__(
        self,
        api_url: str,
        *,
        request_interval: float = 3.0,
        timeout: float = 30,
        contact: str = "",
        max_attempts: int = 4,
        retry_budget: int = 40,
        breaker_threshold: int = 5,
        backoff_base: float | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        max_answer_bytes: int = MAX_ANSWER_BYTES,
    ) -> None:
        self.api_url = api_url
        self.max_answer_bytes = max_answer_bytes
        self.deadline = timeout * DEADLINE_FACTOR
        self.gate = RequestGate(request_interval)
        self.max_attempts = max(1, max_attempts)
        self.retry_budget = retry_budget
        self.breaker_threshold = breaker_threshold
        self.backoff_base = (
            backoff_base if backoff_base is not None else max(request_interval, 0.05)
        )
        self._http = httpx.AsyncClient(
            headers={"User-Agent": user_agent(contact), "Accept": "application/atom+xml",
                     "Accept-Encoding": ACCEPT_ENCODING},
            timeout=httpx.Timeout(timeout, connect=min(10, timeout)),
            limits=httpx.Limits(max_connections=1),
            follow_redirects=True,
            transport=transport,
        )
        self._retries_left = retry_budget
        self._consecutive_failures = 0
        self._circuit_open = False
        self.clock = ArxivClock()
        self._told_unreachable = False

    async def __aenter__(self) -> ArxivClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    def start_cycle(self) -> None:
        """A new poll cycle: full retry budget, breaker closed."""
        self._retries_left = self.retry_budget
        self._consecutive_failures = 0
        self._circuit_open = False
        self._told_unreachable = False

    @property
    def circuit_open(self) -> bool:
        return self._circuit_open

    async def fetch(
        self, query: str, start: int, max_results: int, *, interactive: bool = False,
        check: Check | None = None,
    ) -> Feed:
        """One page of `query`, newest submissions first.

        `check(feed)` returns a reason when the answer looks wrong (the poll stage decides);
        such an answer is retried like a transient error. Interactive fetches (a user is
        waiting) go ahead in the gate and ignore an open breaker.
        """
        self._refuse_if_open(interactive)
        params = {
            "search_query": query, "start": str(start), "max_results": str(max_results),
            "sortBy": "submittedDate", "sortOrder": "descending",
        }
        request = _Request(self.api_url, params, parse_feed, f"query {query!r}")
        return await self._retrying(request, interactive, check)

    async def list_records(self, oai_url: str, params: dict[str, str]) -> OaiPage:
        """One OAI-PMH page, through the same gate, spacing, retries and breaker. OAI errors
        (noRecordsMatch, badResumptionToken, …) come back in the page, by name."""
        self._refuse_if_open(False)
        shown = params.get("resumptionToken") or params.get("from", "")
        request = _Request(oai_url, params, parse_oai, f"harvest {shown!r}", "text/xml")
        return await self._retrying(request, False, None)

    async def _retrying(self, request: _Request, interactive: bool, check: Check | None) -> Any:
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(_Transient),
            wait=self._wait,
            stop=lambda state: self._must_stop(state, interactive),
            before_sleep=lambda state: self._before_retry(state, request.label),
            retry_error_callback=lambda state: self._give_up(state, interactive),
            sleep=asyncio.sleep,
        )
        return await retrying(self._attempt, request, interactive, check)

    def _refuse_if_open(self, interactive: bool) -> None:
        if self._circuit_open and not interactive:
            raise CircuitOpen(
                f"arXiv unavailable: {self.breaker_threshold} consecutive failed requests"
            )

    async def _attempt(self, request: _Request, interactive: bool, check: Check | None) -> Any:
        async with self.gate.turn(interactive=interactive) as turn:
            # Checked again inside: the breaker may have opened while this fetch waited.
            self._refuse_if_open(interactive)
            response, body = await self._send(request, turn)
        self.clock.observe(response.headers.get("Date"))
        try:
            feed = await self._read(response, body, request.parse)
            reason = check(feed) if check is not None else None
            if reason:
                raise _Transient("suspicious", f"suspicious answer: {reason}")
        except _Transient as failure:
            self._failed(failure.outcome)
            raise
        except ArxivRejected:
            self._succeeded("rejected")
            raise
        except ArxivUnavailable:
            self._failed("http_other")
            raise
        self._succeeded("ok")
        return feed

    async def _send(self, request: _Request, turn: Turn) -> tuple[httpx.Response, bytes]:
        # httpx's timeout bounds each read; a server dripping a byte now and then would hold
        # the gate, and with it every other keyword, for ever. The whole answer gets a deadline,
        # and a cap on its decoded size (gzip bombs, endless answers).
        try:
            async with (asyncio.timeout(self.deadline),
                        self._http.stream("GET", request.url, params=request.params,
                                          headers={"Accept": request.accept},
                                          extensions={"trace": _on_sent(turn)}) as response):
                return response, await read_bounded(response, self.max_answer_bytes)
        except UnreadableAnswer as exc:
            self._failed("bad_answer")
            raise _Transient("bad_answer", f"bad answer: {exc}") from None
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.ProxyError) as exc:
            self._failed("connection")
            raise _Transient("connection", unreachable(request.url, exc)) from None
        except TimeoutError:
            self._failed("timeout")
            raise _Transient("timeout", f"timeout (no whole answer in {self.deadline:g} s)"
                             ) from None
        except httpx.TimeoutException as exc:
            self._failed("timeout")
            raise _Transient("timeout", f"timeout ({type(exc).__name__})") from None
        except httpx.RequestError as exc:
            self._failed("connection")
            raise _Transient("connection", f"connection error ({cause(exc)})") from None

    async def _read(self, response: httpx.Response, body: bytes,
                    parse: Callable[[bytes], Any]) -> Any:
        status = response.status_code
        if 200 <= status < 300 or status == 400:
            try:
                return await asyncio.to_thread(parse, body)
            except ArxivBadAnswer as exc:
                if status == 400:
                    raise ArxivUnavailable(
                        f"HTTP 400 without an error feed ({exc.reason})"
                    ) from None
                raise _Transient("bad_answer", f"bad answer: {exc.reason}") from None
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        what = f"HTTP {status} {response.reason_phrase}".strip()
        if status == 429:
            raise _Transient("http_429", what, retry_after)
        if status == 406:
            raise _Transient("http_406", what, retry_after)
        if status >= 500:
            raise _Transient("http_5xx", what, retry_after)
        raise ArxivUnavailable(what)

    def _succeeded(self, outcome: str) -> None:
        ARXIV_REQUESTS.labels(outcome).inc()
        self._consecutive_failures = 0

    def _failed(self, outcome: str) -> None:
        ARXIV_REQUESTS.labels(outcome).inc()
        self._consecutive_failures += 1
        if self._consecutive_failures >= self.breaker_threshold:
            self._circuit_open = True

    def _wait(self, state: RetryCallState) -> float:
        """The backoff, or longer when the gate's spacing holds the retry back: the delay the
        retry log states is the real one."""
        failure = _failure(state)
        backoff = backoff_delay(state.attempt_number, self.backoff_base, failure.retry_after)
        return max(backoff, self.gate.next_start_in())

    def _must_stop(self, state: RetryCallState, interactive: bool) -> bool:
        return (
            state.attempt_number >= self.max_attempts
            or self._retries_left <= 0
            or (self._circuit_open and not interactive)
        )

    def _before_retry(self, state: RetryCallState, label: str) -> None:
        self._retries_left -= 1
        ARXIV_RETRIES.inc()
        failure = _failure(state)
        level = logging.INFO
        if failure.outcome == "connection" and failure.reason.startswith("cannot reach"):
            # arXiv out of reach: the host and cause once per cycle, not once per retry
            level = logging.DEBUG if self._told_unreachable else logging.WARNING
            self._told_unreachable = True
        log.log(level, "arXiv request failed (%s); retry %d of %d in %.1f s (%s)",
                failure.reason, state.attempt_number, self.max_attempts - 1,
                state.upcoming_sleep, label)

    def _give_up(self, state: RetryCallState, interactive: bool) -> NoReturn:
        failure = _failure(state)
        if self._circuit_open and not interactive:
            raise CircuitOpen(
                f"arXiv unavailable: {self.breaker_threshold} consecutive failed requests, "
                f"last: {failure.reason}"
            )
        if state.attempt_number >= self.max_attempts:
            if failure.outcome == "suspicious":
                raise SuspiciousAnswer(failure.reason)
            raise ArxivUnavailable(f"{failure.reason} (after {state.attempt_number} attempts)")
        raise RetryBudgetExhausted(f"retry budget of this cycle spent; last: {failure.reason}")


def _on_sent(turn: Turn) -> Callable[[str, dict], Awaitable[None]]:
    """httpcore trace hook: the gate's spacing counts from when the request was written
    (after any connection set-up), which is when the server sees it arrive."""

    async def trace(event: str, info: dict) -> None:
        if event.endswith("send_request_body.complete"):
            turn.sent()

    return trace


def user_agent(contact: str) -> str:
    """arXiv asks for a descriptive agent with a way to reach the operator."""
    mailto = f"; mailto:{contact}" if contact else ""
    return f"daily-papers/{bot.__version__} (+https://github.com/daily-papers{mailto})"


def _failure(state: RetryCallState) -> _Transient:
    exc = state.outcome.exception() if state.outcome is not None else None
    assert isinstance(exc, _Transient)
    return exc
