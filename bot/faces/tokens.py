"""Signed tokens: HMACs with the instance key over (address, scope), each use under a domain of
its own (unsubscribe links, sign-up and preferences links, private feed URLs). Apart from the
pages, so commands that hand out links (`subscribe`) do not import the web server.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass

from bot.fetch.keywords import KeywordError, parse_keyword

MAX_TOKEN_CHARS = 2000  # an address (254) and a keyword (200), base64: far below this
_DOMAIN = b"daily-papers/unsubscribe/v1."  # binds the MAC to this one use of the key
_ALL = "*"
_ONE = "k:"


class InvalidToken(Exception):
    """Forged, altered, truncated or unreadable: answered with 400, nothing changes."""


@dataclass(frozen=True)
class Claim:
    """What a valid token allows: stop `keyword` (a canonical form), or everything when None."""

    address: str
    keyword: str | None = None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Signer:
    """Makes and checks signed tokens with the key `App.unsubscribe_secret`: unsubscribe tokens
    here, and (under their own domains) the sign-up and preferences tokens."""

    def __init__(self, secret: str) -> None:
        if not secret:
            raise ValueError("the unsubscribe key is empty")
        self._key = hashlib.sha256(secret.encode("utf-8")).digest()

    def _mac(self, payload: str, domain: bytes) -> str:
        return _b64(hmac.new(self._key, domain + payload.encode("ascii"), "sha256").digest())

    def fingerprint(self, text: str, domain: bytes) -> str:
        """A keyed hash that names `text` without revealing it (a client address in the store)."""
        return self._mac(_b64(text.encode()), domain)

    def seal(self, address: str, scope: str, domain: bytes = _DOMAIN) -> str:
        """URL-safe text: base64url(address, scope) "." base64url(HMAC-SHA256), the MAC bound
        to `domain` so a token of one use is worthless for another."""
        payload = _b64(f"{address}\n{scope}".encode())
        return f"{payload}.{self._mac(payload, domain)}"

    def open(self, token: str, domain: bytes = _DOMAIN) -> tuple[str, str]:
        """(address, scope) of an authentic token; the MAC is compared in constant time, first."""
        if not token or len(token) > MAX_TOKEN_CHARS or not token.isascii():
            raise InvalidToken("missing or malformed token")
        payload, dot, mac = token.partition(".")
        if not dot or not hmac.compare_digest(mac.encode("ascii"),
                                              self._mac(payload, domain).encode("ascii")):
            raise InvalidToken("signature does not match")
        try:
            address, scope = _unb64(payload).decode("utf-8").split("\n")
        except ValueError:  # binascii.Error and UnicodeDecodeError are ValueErrors
            raise InvalidToken("unreadable payload") from None
        return address, scope

    def token(self, address: str, keyword: str | None = None) -> str:
        """An unsubscribe token for everything (None) or one keyword's canonical form."""
        return self.seal(address, _ALL if keyword is None else _ONE + keyword)

    def keyword_token(self, address: str, display: str) -> str:
        """The per-keyword token from a keyword's display text (what outbox rows carry)."""
        return self.token(address, canonical_of(display))

    def verify(self, token: str) -> Claim:
        """The claim of an authentic unsubscribe token."""
        address, scope = self.open(token)
        if scope == _ALL:
            return Claim(address)
        if scope.startswith(_ONE) and len(scope) > len(_ONE):
            return Claim(address, scope[len(_ONE):])
        raise InvalidToken("unknown scope")


def canonical_of(display: str) -> str:
    """A keyword's identity from its display text; stored displays always parse."""
    try:
        return parse_keyword(display).canonical
    except KeywordError:
        return display


def unsubscribe_url(public_url: str, token: str) -> str:
    return f"{public_url.rstrip('/')}/unsubscribe?t={token}"
