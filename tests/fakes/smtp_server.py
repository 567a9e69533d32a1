"""Test double for the deliver stage: an aiosmtpd server in the test's own loop that collects
what the email notifier sends and answers with programmable SMTP failures."""

from __future__ import annotations

import asyncio
import email
import email.policy
import ssl
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Literal

import trustme
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from tests.fakes.changes import Changes

Security = Literal["none", "starttls", "tls"]
Stage = Literal["mail", "rcpt", "data"]

# Short names tests use for the answers the notifier must tell apart.
ANSWERS = {
    "421": "421 4.3.2 Service not available, closing transmission channel",
    "451": "451 4.3.0 Temporary local problem, try again later",
    "550": "550 5.1.1 Mailbox unavailable: no such user",
    "551": "551 5.1.6 User not local",
    "552": "552 5.3.4 Message size exceeds fixed maximum message size",
    "553": "553 5.1.3 Mailbox name not allowed",
    "554": "554 5.6.0 Transaction failed",
    "5.7.1": "550 5.7.1 Message rejected as spam",
    "drop": "drop",
}


@dataclass
class ReceivedMail:
    """One message the server accepted, as the recipient's provider would hold it."""

    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    raw: bytes
    authenticated_as: str | None
    tls: bool
    connection: int


@dataclass
class _Programmed:
    answer: str
    times: int | None  # None: until cleared


class FakeSMTP:
    """`async with FakeSMTP(security="starttls", username="u", password="p") as fake:`.

    `security` is "none", "starttls" (STARTTLS required) or "tls" (implicit TLS); the TLS
    variants use a trustme CA exposed as `fake.ca` / `fake.client_tls_context()`.
    """

    def __init__(
        self,
        *,
        security: Security = "none",
        username: str | None = None,
        password: str | None = None,
        hostname: str = "fake-smtp.test",
    ) -> None:
        self.security = security
        self.username = username
        self.password = password
        self.hostname = hostname
        self.host = "127.0.0.1"
        self.port = 0
        self.ca: trustme.CA | None = trustme.CA() if security != "none" else None
        self.messages: list[ReceivedMail] = []
        self.connections = 0
        self.auth_failures = 0
        self.refusals: list[tuple[str, str, str]] = []  # (stage, recipient, answer)
        self._by_rcpt: dict[tuple[Stage, str], deque[_Programmed]] = {}
        self._fifo: dict[Stage, deque[_Programmed]] = {"mail": deque(), "rcpt": deque(),
                                                        "data": deque()}
        self._protocols: list[SMTP] = []
        self._changes = Changes()
        self._server: asyncio.Server | None = None
        self._server_ctx: ssl.SSLContext | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> FakeSMTP:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Listen on 127.0.0.1 with a free port; `port` is valid afterwards."""
        loop = asyncio.get_running_loop()
        self._server_ctx = self._server_context()
        self._server = await loop.create_server(
            self._new_protocol, self.host, 0,
            ssl=self._server_ctx if self.security == "tls" else None,
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for protocol in self._protocols:
            if protocol.transport is not None:
                protocol.transport.close()
        await self._server.wait_closed()

    def _server_context(self) -> ssl.SSLContext | None:
        if self.ca is None:
            return None
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ca.issue_cert(self.host, "localhost").configure_cert(ctx)
        return ctx

    def _new_protocol(self) -> SMTP:
        self.connections += 1
        self._changes.bump()
        auth = self.username is not None
        protocol = SMTP(
            _Handler(self, self.connections),
            hostname=self.hostname,
            tls_context=self._server_ctx if self.security == "starttls" else None,
            require_starttls=self.security == "starttls",
            authenticator=self._authenticate if auth else None,
            auth_required=auth,
            # aiosmtpd counts only STARTTLS as TLS: without this, implicit TLS hides AUTH.
            auth_require_tls=self.security == "starttls",
            loop=asyncio.get_running_loop(),
        )
        self._protocols.append(protocol)
        return protocol

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        if isinstance(data, LoginPassword) and (
            data.login.decode() == self.username and data.password.decode() == self.password
        ):
            return AuthResult(success=True, auth_data=self.username)
        self.auth_failures += 1
        self._changes.bump()
        # handled=False makes aiosmtpd send 535; the default sends nothing and the client hangs.
        return AuthResult(success=False, handled=False)

    # -- client side -------------------------------------------------------------------------

    def client_tls_context(self) -> ssl.SSLContext:
        """An SSLContext that trusts this server's certificate, for aiosmtplib's tls_context."""
        ctx = ssl.create_default_context()
        if self.ca is not None:
            self.ca.configure_trust(ctx)
        return ctx

    def write_ca(self, path: Path) -> Path:
        """Write the CA PEM for a client configured with a bundle file path."""
        assert self.ca is not None, "security='none' has no certificate authority"
        self.ca.cert_pem.write_to_path(str(path))
        return path

    # -- programming answers -----------------------------------------------------------------

    def email_table(self, sender: str = "Daily Papers <papers@example.org>", *,
                    ca_file: str = "") -> str:
        """The `[email]` table of a config.toml whose daemon reaches this server."""
        lines = ["[email]", f'host = "{self.host}"', f"port = {self.port}",
                 f'security = "{self.security}"']
        if self.username:
            lines.append(f'username = "{self.username}"')
        lines.append(f'sender = "{sender}"')
        if ca_file:
            lines.append(f'ca_file = "{ca_file}"')
        return "\n".join(lines) + "\n"

    def fail(
        self,
        answer: str,
        *,
        rcpt: str | None = None,
        stage: Stage = "rcpt",
        times: int | None = 1,
    ) -> None:
        """Answer RCPT (for `rcpt`, else the next recipients) or DATA (for a message that has
        `rcpt` among its recipients, else the next messages) with `answer`: a key of ANSWERS
        ("550", "5.7.1", "drop", …) or a full reply line. `times=None`: until cleared."""
        entry = _Programmed(ANSWERS.get(answer, answer), times)
        if rcpt is None:
            self._fifo[stage].append(entry)
        else:
            self._by_rcpt.setdefault((stage, rcpt.lower()), deque()).append(entry)

    def clear_failures(self) -> None:
        self._by_rcpt.clear()
        for queue in self._fifo.values():
            queue.clear()

    def _take(self, stage: Stage, recipients: list[str]) -> str | None:
        queues = [self._by_rcpt.get((stage, r.lower())) for r in recipients]
        for queue in [*queues, self._fifo[stage]]:
            if queue:
                entry = queue[0]
                if entry.times is not None:
                    entry.times -= 1
                    if entry.times <= 0:
                        queue.popleft()
                return entry.answer
        return None

    # -- waiting and inspection --------------------------------------------------------------

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 60) -> None:
        """Return once `predicate()` holds; re-checked after every connection, reply or mail."""
        await self._changes.wait_for(predicate, timeout, lambda: (
            f"messages: {len(self.messages)}, connections: {self.connections}, "
            f"refusals: {self.refusals[-5:]}"))

    async def wait_messages(self, count: int, timeout: float = 60) -> None:
        await self.wait_for(lambda: len(self.messages) >= count, timeout)

    def messages_to(self, address: str) -> list[ReceivedMail]:
        return [m for m in self.messages if address.lower() in (r.lower() for r in m.rcpt_tos)]


class _Handler:
    """aiosmtpd hooks for one connection; everything is recorded on the owning FakeSMTP."""

    def __init__(self, fake: FakeSMTP, connection: int) -> None:
        self.fake = fake
        self.connection = connection

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        answer = self.fake._take("mail", [])  # `stage="mail"` refusals of our sender
        if answer is not None:
            return await self._refuse(server, "mail", address, answer)
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        answer = self.fake._take("rcpt", [address])
        if answer is not None:
            return await self._refuse(server, "rcpt", address, answer)
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        answer = self.fake._take("data", envelope.rcpt_tos)
        if answer is not None:
            return await self._refuse(server, "data", ",".join(envelope.rcpt_tos), answer)
        raw = envelope.original_content or b""
        message = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self.fake.messages.append(ReceivedMail(
            mail_from=envelope.mail_from or "",
            rcpt_tos=list(envelope.rcpt_tos),
            message=message,
            raw=raw,
            authenticated_as=session.auth_data if session.authenticated else None,
            tls=session.ssl is not None or self.fake.security == "tls",
            connection=self.connection,
        ))
        self.fake._changes.bump()
        return "250 2.0.0 Message accepted for delivery"

    async def _refuse(self, server: SMTP, stage: Stage, recipient: str, answer: str) -> str:
        self.fake.refusals.append((stage, recipient, answer))
        self.fake._changes.bump()
        if answer == "drop" or answer.startswith("421"):
            assert server.transport is not None
            if answer == "drop":
                server.transport.abort()
            else:
                await server.push(answer)
                server.transport.close()
            # connection_lost cancels this hook, so aiosmtpd never writes to the dead socket.
            await asyncio.Future()
        return answer
