"""Fetch stage: reading an HTTP answer with a cap on its decoded size, while it streams in.

A 1 MB gzip answer can inflate to 1 GiB and an endless answer never stops; both must fail as
a bad answer long before they cost memory. Decoding is ours (zlib with `max_length`), so no
single network chunk can inflate past the cap either.
"""

from __future__ import annotations

import zlib

import httpx

MAX_ANSWER_BYTES = 20 * 1024 * 1024  # a page of max_papers entries needs a few MB
ACCEPT_ENCODING = "gzip"

_STEP = 1 << 20  # inflate at most this much at a time: no buffer is ever copied whole
_WBITS = {"gzip": zlib.MAX_WBITS | 16, "x-gzip": zlib.MAX_WBITS | 16, "deflate": zlib.MAX_WBITS}


class UnreadableAnswer(Exception):
    """The decoded answer passed the cap, or its encoding is not one we can decode."""


async def read_bounded(response: httpx.Response, limit: int = MAX_ANSWER_BYTES) -> bytes:
    """The decoded body of a streamed response; raises UnreadableAnswer past `limit` bytes."""
    encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("", "identity", *_WBITS):
        raise UnreadableAnswer(f"unsupported content encoding {encoding[:40]!r}")
    inflate = zlib.decompressobj(_WBITS[encoding]) if encoding in _WBITS else None
    parts: list[bytes] = []
    size = 0
    async for chunk in response.aiter_raw():
        while chunk:
            if inflate is None:
                piece, chunk = chunk[: limit + 1 - size], b""
            else:
                piece = _inflate(inflate, chunk, min(limit + 1 - size, _STEP))
                chunk = inflate.unconsumed_tail if piece else b""  # no progress: next chunk
            size += len(piece)
            if size > limit:
                raise UnreadableAnswer(f"larger than {limit / 2**20:g} MB decoded")
            parts.append(piece)
    return b"".join(parts)


def _inflate(inflate: zlib._Decompress, chunk: bytes, room: int) -> bytes:
    try:
        return inflate.decompress(chunk, room)
    except zlib.error as exc:
        raise UnreadableAnswer(f"undecodable compressed answer ({exc})") from None
