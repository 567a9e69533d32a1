"""The email notifier against a real local SMTP server (aiosmtpd): security modes, login, how
each SMTP answer is reported, connection reuse, the per-minute pace, and the dispatcher's use."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.deliver.dispatcher import Dispatcher
from notifiers.base import Delivery, Outcome
from notifiers.email import EmailNotifier, SmtpSettings
from storage import outbox, polls
from storage import subscribers as sub_repo
from storage.records import OutboxRow, Paper, Subscriber
from storage.store import AsyncStore
from tests.conftest import Clock, KeywordFactory, PaperFactory, SubscriberFactory, sent_papers
from tests.fakes.smtp_server import FakeSMTP

SENDER = "Daily Papers <papers@example.org>"
USER, PASSWORD = "papers@example.org", "s3cret-pw"


def sub(n: int = 1, failures: int = 0) -> Subscriber:
    return Subscriber(id=n, channel="email", address=f"reader{n}@example.org",
                      permanent_failures=failures)


def rows_for(s: Subscriber, papers: list[Paper]) -> list[OutboxRow]:
    return [OutboxRow(100 * s.id + i, s.id, p, ("video understanding",))
            for i, p in enumerate(papers)]


def make_notifier(fake: FakeSMTP, **changes: object) -> EmailNotifier:
    settings = SmtpSettings(host=fake.host, port=fake.port, security=fake.security,
                            sender=SENDER, username=fake.username or "",
                            password=fake.password or "")
    tls = fake.client_tls_context() if fake.security != "none" else None
    return EmailNotifier(replace(settings, **changes),
                         links=lambda a, k: f"https://papers.example.org/unsubscribe?t={a}.{k}",
                         tls_context=tls)


async def send_one(n: EmailNotifier, s: Subscriber, papers: list[Paper]) -> Delivery:
    [message] = n.pack(s, rows_for(s, papers))
    return await n.send(s, message)


@pytest.fixture
async def plain() -> AsyncIterator[FakeSMTP]:
    async with FakeSMTP() as fake:
        yield fake


async def test_plain_delivery_is_one_multipart_mail(plain: FakeSMTP, paper: PaperFactory) -> None:
    n = make_notifier(plain)
    try:
        assert (await send_one(n, sub(), [paper(), paper()])).outcome is Outcome.SENT
    finally:
        await n.close()
    [mail] = plain.messages
    assert mail.rcpt_tos == ["reader1@example.org"]
    assert mail.mail_from == "papers@example.org"
    assert mail.message.get_content_type() == "multipart/alternative"
    assert mail.message["Subject"] == "2 new papers: video understanding"
    assert not mail.tls and mail.authenticated_as is None


async def test_return_path_is_the_envelope_sender(plain: FakeSMTP, paper: PaperFactory) -> None:
    n = make_notifier(plain, return_path="bounces@example.org")
    try:
        await send_one(n, sub(), [paper()])
    finally:
        await n.close()
    assert plain.messages[0].mail_from == "bounces@example.org"
    assert plain.messages[0].message["From"] == SENDER


async def test_starttls_with_login(paper: PaperFactory) -> None:
    async with FakeSMTP(security="starttls", username=USER, password=PASSWORD) as fake:
        n = make_notifier(fake)
        try:
            assert (await send_one(n, sub(), [paper()])).outcome is Outcome.SENT
        finally:
            await n.close()
        [mail] = fake.messages
        assert mail.tls and mail.authenticated_as == USER


async def test_implicit_tls_with_login_and_a_ca_file(paper: PaperFactory, tmp_path: Path) -> None:
    async with FakeSMTP(security="tls", username=USER, password=PASSWORD) as fake:
        ca_file = fake.write_ca(tmp_path / "ca.pem")
        settings = SmtpSettings(host=fake.host, port=fake.port, security="tls", sender=SENDER,
                                username=USER, password=PASSWORD, ca_file=str(ca_file))
        n = EmailNotifier(settings, links=lambda a, k: "https://papers.example.org/u")
        try:
            assert (await send_one(n, sub(), [paper()])).outcome is Outcome.SENT
        finally:
            await n.close()
        [mail] = fake.messages
        assert mail.tls and mail.authenticated_as == USER


async def test_untrusted_certificate_stops_the_channel(paper: PaperFactory) -> None:
    async with FakeSMTP(security="tls") as fake:
        settings = SmtpSettings(host=fake.host, port=fake.port, security="tls", sender=SENDER)
        n = EmailNotifier(settings, links=lambda a, k: "https://papers.example.org/u")
        try:
            delivery = await send_one(n, sub(), [paper()])
        finally:
            await n.close()
    assert delivery.outcome is Outcome.BROKEN and "email.ca_file" in delivery.reason


async def test_refused_login_stops_the_channel_naming_the_user_not_the_password(
        paper: PaperFactory) -> None:
    async with FakeSMTP(security="starttls", username=USER, password=PASSWORD) as fake:
        n = make_notifier(fake, password="wrong-password")
        try:
            delivery = await send_one(n, sub(), [paper()])
        finally:
            await n.close()
        assert fake.auth_failures >= 1 and fake.messages == []  # one try per mechanism
    assert delivery.outcome is Outcome.BROKEN
    assert USER in delivery.reason and "SMTP_PASSWORD" in delivery.reason
    assert "wrong-password" not in delivery.reason


@pytest.mark.parametrize("answer", ["421", "451"])
@pytest.mark.parametrize("stage", ["rcpt", "data"])
async def test_temporary_answers_are_retried(plain: FakeSMTP, paper: PaperFactory, answer: str,
                                             stage: str) -> None:
    plain.fail(answer, stage=stage)  # type: ignore[arg-type]
    n = make_notifier(plain)
    try:
        first = await send_one(n, sub(), [paper()])
        second = await send_one(n, sub(), [paper()])
    finally:
        await n.close()
    assert first.outcome is Outcome.RETRY and answer in first.reason
    assert second.outcome is Outcome.SENT and len(plain.messages) == 1


async def test_a_dropped_connection_is_retried(plain: FakeSMTP, paper: PaperFactory) -> None:
    plain.fail("drop", stage="data")
    n = make_notifier(plain)
    try:
        first = await send_one(n, sub(), [paper()])
        second = await send_one(n, sub(), [paper()])
    finally:
        await n.close()
    assert first.outcome is Outcome.RETRY
    assert second.outcome is Outcome.SENT and plain.connections == 2


async def test_unreachable_server_is_retried(paper: PaperFactory) -> None:
    async with FakeSMTP() as fake:
        port = fake.port
    n = EmailNotifier(SmtpSettings(host="127.0.0.1", port=port, security="none", sender=SENDER),
                      links=lambda a, k: "https://papers.example.org/u")
    try:
        delivery = await send_one(n, sub(), [paper()])
    finally:
        await n.close()
    assert delivery.outcome is Outcome.RETRY and "cannot reach" in delivery.reason


@pytest.mark.parametrize("answer", ["550", "551", "553", "550 5.1.10 Recipient address rejected"])
async def test_mailbox_refusals_count_against_the_recipient(plain: FakeSMTP, paper: PaperFactory,
                                                            answer: str) -> None:
    plain.fail(answer, rcpt="reader1@example.org", times=None)
    n = make_notifier(plain, max_bounces=3)
    try:
        bounce = await send_one(n, sub(1), [paper()])
        last = await send_one(n, sub(1, failures=2), [paper()])
        other = await send_one(n, sub(2), [paper()])
    finally:
        await n.close()
    assert bounce == Delivery(Outcome.FAILED, bounce.reason, counts_against_recipient=True)
    assert last.outcome is Outcome.GONE and "hard bounce" in last.reason
    assert other.outcome is Outcome.SENT
    assert [m.rcpt_tos for m in plain.messages] == [["reader2@example.org"]]


@pytest.mark.parametrize("answer", ["552", "554", "5.7.1"])
@pytest.mark.parametrize("stage", ["rcpt", "data"])
async def test_content_and_policy_refusals_fail_the_row_only(
        plain: FakeSMTP, paper: PaperFactory, answer: str, stage: str,
        caplog: pytest.LogCaptureFixture) -> None:
    plain.fail(answer, stage=stage)  # type: ignore[arg-type]
    n = make_notifier(plain)
    try:
        refused = await send_one(n, sub(1, failures=2), [paper()])
        after = await send_one(n, sub(1), [paper()])
    finally:
        await n.close()
    assert refused.outcome is Outcome.FAILED and not refused.counts_against_recipient
    assert any("refused by the SMTP server" in r.getMessage() for r in caplog.records)
    assert after.outcome is Outcome.SENT and plain.connections == 1


async def test_one_connection_serves_a_batch_of_recipients(plain: FakeSMTP,
                                                           paper: PaperFactory) -> None:
    n = make_notifier(plain)
    try:
        for i in range(1, 6):
            assert (await send_one(n, sub(i), [paper()])).outcome is Outcome.SENT
    finally:
        await n.close()
    assert plain.connections == 1 and len(plain.messages) == 5
    assert {m.connection for m in plain.messages} == {1}


async def test_max_per_minute_spaces_sends(plain: FakeSMTP, paper: PaperFactory) -> None:
    now = [1000.0]
    waits: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        waits.append(seconds)
        now[0] += seconds

    settings = SmtpSettings(host=plain.host, port=plain.port, security="none", sender=SENDER,
                            max_per_minute=2)
    n = EmailNotifier(settings, links=lambda a, k: "https://papers.example.org/u",
                      clock=lambda: now[0], sleep=fake_sleep)
    try:
        for i in range(1, 4):
            now[0] += 1.0
            assert (await send_one(n, sub(i), [paper()])).outcome is Outcome.SENT
    finally:
        await n.close()
    assert waits == [pytest.approx(58.0)]  # sent at 1001, 1002; the third waits until 1061
    assert len(plain.messages) == 3


# --- through the dispatcher and the outbox ------------------------------------------------------


async def queue(store: AsyncStore, clock: Clock, kw, papers: list[Paper]) -> None:
    """A poll that found `papers` new, released for instant delivery."""
    now = clock.now()
    await store.call(polls.commit_poll, kw, papers, baseline=False, now=now, max_papers=100,
                     notify_floor=now - timedelta(days=14), total_results=len(papers))
    await store.call(outbox.release, now, lambda s: now)


async def test_dispatcher_retries_a_4xx_and_deactivates_only_the_bouncing_address(
        plain: FakeSMTP, store: AsyncStore, clock: Clock, paper: PaperFactory,
        add_keyword: KeywordFactory, add_subscriber: SubscriberFactory) -> None:
    kw = await add_keyword("graph neural networks")
    good = await add_subscriber("email", "good@example.org", kw)
    bad = await add_subscriber("email", "gone@example.org", kw)
    n = make_notifier(plain, max_bounces=1)
    n.now = clock.now
    dispatcher = Dispatcher(store, {"email": n}, clock.now)
    await queue(store, clock, kw, [paper(), paper()])
    plain.fail("451", rcpt="good@example.org")
    plain.fail("550", rcpt="gone@example.org")
    try:
        await dispatcher.drain()
        assert plain.messages == []
        clock.advance(timedelta(hours=2))
        await dispatcher.drain()
    finally:
        await n.close()
    [mail] = plain.messages
    assert mail.rcpt_tos == ["good@example.org"]
    assert mail.message["Subject"] == "2 new papers: graph neural networks"
    assert (await store.call(sub_repo.get, good.id)).active  # type: ignore[union-attr]
    gone = await store.call(sub_repo.get, bad.id)
    assert gone is not None and not gone.active and "550" in (gone.inactive_reason or "")
    assert len(await store.call(sent_papers, good.id)) == 2


async def test_auth_failure_stops_the_email_channel_and_keeps_the_rows(
        store: AsyncStore, clock: Clock, paper: PaperFactory, add_keyword: KeywordFactory,
        add_subscriber: SubscriberFactory, caplog: pytest.LogCaptureFixture) -> None:
    kw = await add_keyword("graph neural networks")
    reader = await add_subscriber("email", "reader@example.org", kw)
    async with FakeSMTP(security="starttls", username=USER, password=PASSWORD) as fake:
        n = make_notifier(fake, password="nope")
        dispatcher = Dispatcher(store, {"email": n}, clock.now)
        await queue(store, clock, kw, [paper()])
        try:
            await dispatcher.drain()
        finally:
            await n.close()
    assert "email" in dispatcher.broken
    stopped = [r for r in caplog.records if "email notifier stopped" in r.getMessage()]
    assert len(stopped) == 1 and USER in stopped[0].getMessage()
    assert len(await store.call(outbox.due_rows, reader.id, clock.now())) == 1
    assert datetime.now(UTC)  # the rows are pending, not failed


async def test_a_refused_sender_stops_the_channel_and_costs_no_recipient_a_bounce(
        plain: FakeSMTP, store: AsyncStore, clock: Clock, paper: PaperFactory,
        add_keyword: KeywordFactory, add_subscriber: SubscriberFactory,
        caplog: pytest.LogCaptureFixture) -> None:
    kw = await add_keyword("graph neural networks")
    readers = [await add_subscriber("email", f"reader{i}@example.org", kw) for i in range(3)]
    n = make_notifier(plain, max_bounces=1)
    dispatcher = Dispatcher(store, {"email": n}, clock.now)
    await queue(store, clock, kw, [paper()])
    plain.fail("550 5.1.0 Sender address rejected: not owned by user", stage="mail", times=None)
    try:
        await dispatcher.drain()
    finally:
        await n.close()
    assert plain.messages == []
    assert "email" in dispatcher.broken
    stopped = [r.getMessage() for r in caplog.records if "email notifier stopped" in r.getMessage()]
    assert len(stopped) == 1 and "check [email] sender" in stopped[0]
    for reader in readers:  # a bad sender is the operator's to fix, not the readers' bounce
        sub = await store.call(sub_repo.get, reader.id)
        assert sub is not None and sub.active and sub.permanent_failures == 0
        assert len(await store.call(outbox.due_rows, reader.id, clock.now())) == 1


async def test_a_note_is_a_plain_mail_with_the_unsubscribe_header(plain: FakeSMTP) -> None:
    n = make_notifier(plain)
    try:
        delivery = await n.tell(sub(), "Daily Papers: a note", "arXiv rejected 'ti:('.")
    finally:
        await n.close()
    assert delivery.outcome is Outcome.SENT
    [mail] = plain.messages
    assert mail.message.get_content_type() == "text/plain"
    assert "arXiv rejected 'ti:('." in mail.message.get_content()
    assert str(mail.message["List-Unsubscribe"]).strip().startswith("<https://papers.example.org/")
