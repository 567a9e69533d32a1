"""The shared packer: splits a batch of papers into messages on paper boundaries, by limits.

No notifier re-implements splitting; each only says how big one rendered paper is.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from notifiers.base import Limits

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class Piece(Generic[R]):
    """One rendered paper: its content and what it costs against the limits."""

    content: R
    size: int
    parts: int = 1


def pack(items: Sequence[T], render: Callable[[T], Piece[R]], limits: Limits, *,
         overhead: int = 0, overhead_parts: int = 0,
         shorten: Callable[[T, int], Piece[R]] | None = None) -> list[list[tuple[T, Piece[R]]]]:
    """Greedy packing in order; a paper too big alone is shortened to fit (never split)."""
    max_size = (limits.max_chars - overhead) if limits.max_chars else None
    max_parts = (limits.max_parts - overhead_parts) if limits.max_parts else None
    groups: list[list[tuple[T, Piece[R]]]] = []
    current: list[tuple[T, Piece[R]]] = []
    size = parts = 0
    for item in items:
        piece = render(item)
        if max_size is not None and piece.size > max_size:
            if shorten is None:
                raise ValueError(f"a paper needs {piece.size} units, the limit is {max_size}")
            piece = shorten(item, max_size)
        full = (
            (max_size is not None and size + piece.size > max_size)
            or (max_parts is not None and parts + piece.parts > max_parts)
            or (limits.max_papers is not None and len(current) >= limits.max_papers)
        )
        if current and full:
            groups.append(current)
            current, size, parts = [], 0, 0
        current.append((item, piece))
        size += piece.size
        parts += piece.parts
    if current:
        groups.append(current)
    return groups
