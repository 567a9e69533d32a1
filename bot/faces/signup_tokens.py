"""The signed tokens of email self-service: the mailed sign-up link, the preferences page link
and the preferences form's CSRF token. Signed as unsubscribe tokens are (per address, with
DAILY_PAPERS_SECRET), each under its own domain so one never passes for another."""

from __future__ import annotations

from datetime import datetime, timedelta

from bot.faces.tokens import InvalidToken, Signer

CONFIRM = b"daily-papers/signup-confirm/v1."
PREFERENCES = b"daily-papers/preferences/v1."
FORM = b"daily-papers/preferences-form/v1."
CLIENT = b"daily-papers/signup-client/v1."
LINK_LIFETIME = timedelta(hours=48)
FORM_LIFETIME = timedelta(hours=24)  # a preferences page left open longer asks for a reload
_SIGNUP = "signup:"
_ALL = "*"


class SignupTokens:
    """Makes and checks the three tokens, and the URLs that carry them."""

    def __init__(self, signer: Signer, public_url: str) -> None:
        self.signer = signer
        self.base = public_url.rstrip("/")

    def confirm_url(self, address: str, signup_id: int) -> str:
        return f"{self.base}/subscribe/confirm?t={self.confirm_token(address, signup_id)}"

    def confirm_token(self, address: str, signup_id: int) -> str:
        return self.signer.seal(address, f"{_SIGNUP}{signup_id}", CONFIRM)

    def open_confirm(self, token: str) -> tuple[str, int]:
        """(address, sign-up id); raises InvalidToken."""
        address, scope = self.signer.open(token, CONFIRM)
        number = scope.removeprefix(_SIGNUP)
        if scope == number or not number.isdigit():
            raise InvalidToken("unknown scope")
        return address, int(number)

    def preferences_url(self, address: str) -> str:
        return f"{self.base}/preferences?t={self.preferences_token(address)}"

    def preferences_token(self, address: str) -> str:
        return self.signer.seal(address, _ALL, PREFERENCES)

    def open_preferences(self, token: str) -> str:
        """The address whose page this is; raises InvalidToken."""
        address, scope = self.signer.open(token, PREFERENCES)
        if scope != _ALL:
            raise InvalidToken("unknown scope")
        return address

    def form_token(self, address: str, now: datetime) -> str:
        """The CSRF token of one rendering of the page: the address and when it was shown."""
        return self.signer.seal(address, str(int(now.timestamp())), FORM)

    def form_ok(self, address: str, token: str, now: datetime) -> bool:
        """The form was rendered for this address by this server within FORM_LIFETIME."""
        try:
            owner, issued = self.signer.open(token, FORM)
        except InvalidToken:
            return False
        if owner != address or not issued.isdigit():
            return False
        age = now.timestamp() - int(issued)
        return -60 <= age <= FORM_LIFETIME.total_seconds()

    def client(self, remote: str) -> str:
        """A client address as the store keeps it: a keyed hash, never the address itself."""
        return self.signer.fingerprint(remote, CLIENT)
