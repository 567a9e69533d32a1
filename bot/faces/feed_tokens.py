"""The private feed's URL: /feeds/s/{token}.atom, the token signed as unsubscribe tokens are
(with DAILY_PAPERS_SECRET) under its own domain, naming the subscriber by number (never its
address: feed URLs end up in feed readers' databases) and its feed epoch, so unsubscribing
from everything revokes every URL handed out before."""

from __future__ import annotations

from bot.faces.tokens import InvalidToken, Signer
from bot.render.feeds import private_path
from storage.records import Subscriber

FEED = b"daily-papers/feed/v1."


class FeedTokens:
    """Makes and checks private feed tokens, and the URLs that carry them."""

    def __init__(self, signer: Signer, public_url: str) -> None:
        self.signer = signer
        self.base = public_url.rstrip("/")

    def token(self, sub: Subscriber) -> str:
        return self.signer.seal(str(sub.id), str(sub.feed_epoch), FEED)

    def url(self, sub: Subscriber) -> str:
        return f"{self.base}{private_path(self.token(sub))}"

    def open(self, token: str) -> tuple[int, int]:
        """(subscriber id, feed epoch) of an authentic token; raises InvalidToken."""
        number, epoch = self.signer.open(token, FEED)
        if not (number.isdigit() and epoch.isdigit()):
            raise InvalidToken("unknown scope")
        return int(number), int(epoch)


def feed_tokens(secret: str, public_url: str) -> FeedTokens:
    return FeedTokens(Signer(secret), public_url)
