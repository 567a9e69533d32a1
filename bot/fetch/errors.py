"""Errors of the fetch stage (arXiv → poll), shaped by what the poll cycle must do next.

Kept apart from `bot/arxiv.py` so the Atom parser can raise them without an import cycle.
"""

from __future__ import annotations


class ArxivError(Exception):
    """Any failure to get a usable answer from arXiv."""


class ArxivRejected(ArxivError):
    """arXiv answered with an error feed: permanent for this query, do not poll it again."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ArxivUnavailable(ArxivError):
    """Transient: the client gave up after its retries. Try again next cycle."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SuspiciousAnswer(ArxivUnavailable):
    """Every attempt answered, but the poll stage's check found each answer suspicious."""


class CircuitOpen(ArxivUnavailable):
    """Too many consecutive failed requests: the rest of this cycle must stop."""


class RetryBudgetExhausted(ArxivUnavailable):
    """The cycle's retry budget is spent: no more retries until the next cycle."""


class ArxivBadAnswer(ArxivError):
    """The answer is not an Atom feed (HTML page, truncated XML, DTD): retried like a 5xx."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
