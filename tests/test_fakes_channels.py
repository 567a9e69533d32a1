"""Proves the channel fakes (deliver stage test doubles) against the real client libraries,
used exactly as production uses them: only the server address changes."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from email.message import EmailMessage
from pathlib import Path

import aiohttp
import aiosmtplib
import pytest
from aiohttp import web
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.web.async_client import AsyncWebClient
from telegram import LinkPreviewOptions, Update
from telegram.constants import ChatMemberStatus, ParseMode
from telegram.error import (
    BadRequest,
    ChatMigrated,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
)
from telegram.ext import (
    AIORateLimiter,
    Application,
    ChatMemberHandler,
    CommandHandler,
    ContextTypes,
    Defaults,
    ExtBot,
    MessageHandler,
    filters,
)

from tests.fakes.slack_server import FakeSlack, slack_escape
from tests.fakes.smtp_server import FakeSMTP
from tests.fakes.telegram_server import Failure, FakeTelegram, visible_text

# -- Telegram ---------------------------------------------------------------------------------


@pytest.fixture
async def telegram() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as fake:
        yield fake


@pytest.fixture
async def bot(telegram: FakeTelegram) -> AsyncIterator[ExtBot[None]]:
    bot = ExtBot(
        telegram.token,
        base_url=telegram.base_url,
        rate_limiter=AIORateLimiter(max_retries=0),
        defaults=Defaults(
            parse_mode=ParseMode.HTML, link_preview_options=LinkPreviewOptions(is_disabled=True)
        ),
    )
    async with bot:
        yield bot


def _application(fake: FakeTelegram) -> Application:
    return (
        Application.builder()
        .token(fake.token)
        .base_url(fake.base_url)
        .base_file_url(fake.base_file_url)
        .rate_limiter(AIORateLimiter(max_retries=0))
        .build()
    )


async def test_telegram_commands_round_trip_through_polling(telegram: FakeTelegram) -> None:
    async def subscribe(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        keyword = update.effective_message.text.partition(" ")[2].strip()
        await update.effective_message.reply_text(f"Subscribed to <b>{keyword}</b>",
                                                  parse_mode=ParseMode.HTML)

    app = _application(telegram)
    app.add_handler(CommandHandler("subscribe", subscribe))
    async with app:
        await app.bot.set_my_commands([("subscribe", "Watch a keyword")])
        await app.start()
        await app.updater.start_polling(timeout=5)
        telegram.push_command(42, "/subscribe graph  neural networks")
        telegram.push_command(-100500, "/subscribe@OtherBot ignored", chat_type="supergroup")
        telegram.push_command(-100500, "/subscribe@DailyPapersBot video", chat_type="supergroup",
                              thread_id=7)
        await telegram.wait_sent(2)
        await telegram.wait_updates_fetched()
        await app.updater.stop()
        await app.stop()

    assert telegram.calls_to("getMe") and telegram.calls_to("deleteWebhook")
    assert telegram.commands_set[0]["commands"] == [
        {"command": "subscribe", "description": "Watch a keyword"}
    ]
    private, = telegram.messages_to(42)
    assert private.visible_text == "Subscribed to graph  neural networks"
    assert private.parse_mode == "HTML"
    group, = telegram.messages_to(-100500)
    assert group.visible_text == "Subscribed to video"
    assert group.message_thread_id == 7
    assert len(telegram.sent) == 2


async def test_telegram_records_what_a_chat_would_show(
    telegram: FakeTelegram, bot: ExtBot[None]
) -> None:
    message = await bot.send_message(7, "<b>A &lt;B&gt; &amp; C</b> <a href='https://x'>link</a>",
                                     reply_to_message_id=3)
    assert message.chat_id == 7
    sent, = telegram.messages_to(7)
    assert sent.visible_text == "A <B> & C link"
    assert sent.previews_disabled
    assert sent.reply_to == 3
    assert telegram.arrivals(7) == [sent.at]


async def test_telegram_refuses_too_long_text_counted_in_utf16(
    telegram: FakeTelegram, bot: ExtBot[None]
) -> None:
    await bot.send_message(1, "<b>" + "a" * 4096 + "</b>")  # tags do not count
    with pytest.raises(BadRequest, match=r"(?i)message is too long"):
        await bot.send_message(1, "😀" * 2049)  # 2049 code points, 4098 UTF-16 units
    assert len(telegram.messages_to(1)) == 1


@pytest.mark.parametrize("html", ["<b>open", "<b><i>x</b></i>", "a<br>b", "<span>x</span>",
                                  "x < y"])
async def test_telegram_refuses_html_the_real_parser_rejects(
    bot: ExtBot[None], html: str
) -> None:
    with pytest.raises(BadRequest, match=r"(?i)can't parse entities"):
        await bot.send_message(1, html)


async def test_telegram_long_poll_wakes_on_push_and_offset_confirms(
    telegram: FakeTelegram, bot: ExtBot[None]
) -> None:
    first = telegram.push_command(1, "/list")
    assert [u.update_id for u in await bot.get_updates(timeout=0)] == [first]
    waiting = asyncio.create_task(bot.get_updates(offset=first + 1, timeout=30))
    await telegram.wait_for(lambda: telegram.polls_waiting == 1)
    assert telegram.confirmed_offset == first + 1
    second = telegram.push_command(1, "/help")
    update, = await waiting
    assert (update.update_id, update.message.text) == (second, "/help")
    assert update.message.entities[0].length == len("/help")
    assert await bot.get_updates(offset=second + 1, timeout=0) == ()
    await telegram.wait_updates_fetched()


async def test_telegram_accepts_json_bodies(telegram: FakeTelegram) -> None:
    async with aiohttp.ClientSession() as http:
        url = f"{telegram.base_url}{telegram.token}/sendMessage"
        payload = {"chat_id": "5", "text": "<i>hi</i>", "parse_mode": "HTML",
                   "disable_web_page_preview": True, "message_thread_id": 3}
        async with http.post(url, json=payload) as response:
            body = await response.json()
    assert body["ok"] and body["result"]["chat"]["id"] == 5
    sent, = telegram.messages_to(5, thread_id=3)
    assert sent.visible_text == "hi" and sent.previews_disabled


def test_visible_text_decodes_entities_like_telegram() -> None:
    assert visible_text("AT&T &#60;&#x3E; &nbsp;<tg-spoiler>s</tg-spoiler>") == "AT&T <> &nbsp;s"


async def test_telegram_programmed_failures_map_to_ptb_exceptions(
    telegram: FakeTelegram, bot: ExtBot[None], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PTB_TIMEDELTA", "true")
    telegram.block(10)
    telegram.fail(Failure.migrated(-1002), chat_id=20)
    telegram.fail(Failure.bad_request("Bad Request: not enough rights"))
    with pytest.raises(Forbidden, match="blocked by the user"):
        await bot.send_message(10, "hi")
    with pytest.raises(ChatMigrated) as migrated:
        await bot.send_message(20, "hi")
    assert migrated.value.new_chat_id == -1002
    with pytest.raises(BadRequest, match=r"(?i)not enough rights"):
        await bot.send_message(30, "hi")
    with pytest.raises(Forbidden):
        await bot.send_message(10, "still blocked")
    telegram.fail(Failure.server_error(502))
    with pytest.raises(NetworkError, match="Bad Gateway"):
        await bot.send_message(30, "hi")
    telegram.fail(Failure.retry_after(1), chat_id=30)
    with pytest.raises(RetryAfter) as limited:
        await bot.send_message(30, "hi")
    assert limited.value.retry_after == dt.timedelta(seconds=1)
    await bot.send_message(30, "after the pause")  # the limiter waited; the fake accepts again
    assert [m.visible_text for m in telegram.sent] == ["after the pause"]
    statuses = [c.status for c in telegram.calls_to("sendMessage")]
    assert statuses == [403, 400, 400, 403, 502, 429, 200]


async def test_telegram_wrong_token_is_invalid(telegram: FakeTelegram) -> None:
    bot = ExtBot("999:WRONG", base_url=telegram.base_url)
    try:
        with pytest.raises(InvalidToken):
            await bot.initialize()
    finally:
        await bot.shutdown()
    assert telegram.calls_to("getMe")[0].status == 401


async def test_telegram_member_status_and_chat(telegram: FakeTelegram, bot: ExtBot[None]) -> None:
    telegram.set_member_status(-100, ChatMemberStatus.ADMINISTRATOR, user_id=5)
    telegram.set_member_status(-100, ChatMemberStatus.OWNER, user_id=6)
    assert (await bot.get_chat_member(-100, 5)).status == ChatMemberStatus.ADMINISTRATOR
    assert (await bot.get_chat_member(-100, 6)).status == ChatMemberStatus.OWNER
    assert (await bot.get_chat_member(-100, 7)).status == ChatMemberStatus.MEMBER
    chat = await bot.get_chat(-1001234567890)
    assert chat.type == "supergroup"


async def test_telegram_membership_and_migration_updates_reach_handlers(
    telegram: FakeTelegram,
) -> None:
    seen: list[tuple[str, int]] = []
    both = asyncio.Event()

    async def on_member(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        seen.append((update.my_chat_member.new_chat_member.status, update.effective_chat.id))

    async def on_migrate(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        seen.append(("migrate", update.effective_message.migrate_to_chat_id))
        both.set()

    app = _application(telegram)
    app.add_handler(ChatMemberHandler(on_member, ChatMemberHandler.MY_CHAT_MEMBER))
    app.add_handler(MessageHandler(filters.StatusUpdate.MIGRATE & ~filters.ChatType.SUPERGROUP,
                                   on_migrate))
    async with app:
        await app.start()
        await app.updater.start_polling(timeout=5)
        telegram.push_my_chat_member(42)
        telegram.push_migration(-55, -1000000000055)
        async with asyncio.timeout(60):
            await both.wait()
        with pytest.raises(ChatMigrated):
            await app.bot.send_message(-55, "to the old group")
        await app.updater.stop()
        await app.stop()
    assert seen == [("kicked", 42), ("migrate", -1000000000055)]


async def test_telegram_counts_requests_per_window(
    telegram: FakeTelegram, bot: ExtBot[None]
) -> None:
    for _ in range(3):
        await bot.send_message(-9, "x")
    assert len(telegram.arrivals(-9)) == 3
    assert telegram.max_in_window(3600, chat_id=-9) == 3
    assert telegram.max_in_window(0, chat_id=-9) == 0


# -- Slack ------------------------------------------------------------------------------------


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack() as fake:
        yield fake


def _client(fake: FakeSlack, token: str | None = None, retries: int = 0) -> AsyncWebClient:
    handlers = [AsyncRateLimitErrorRetryHandler(max_retry_count=retries)] if retries else []
    return AsyncWebClient(token=token or fake.bot_token, base_url=fake.api_url,
                          retry_handlers=handlers)


def _section(text: str) -> dict[str, object]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


async def test_slack_post_message_is_recorded(slack: FakeSlack) -> None:
    client = _client(slack)
    auth = await client.auth_test()
    assert auth["team_id"] == "T0001"
    blocks = [{"type": "header", "text": {"type": "plain_text", "text": "2 new papers"}},
              _section("*<https://arxiv.org/abs/1|Title>*")]
    first = await client.chat_postMessage(channel="C1", text="2 new papers", blocks=blocks,
                                          unfurl_links=False, unfurl_media=False)
    second = await client.chat_postMessage(channel="C1", text="more", thread_ts=first["ts"])
    post, reply = slack.posts_to("C1")
    assert post.blocks == blocks and post.text == "2 new papers"
    assert post.unfurl_links is False and post.unfurl_media is False
    assert reply.thread_ts == post.ts and float(second["ts"]) > float(first["ts"])


@pytest.mark.parametrize(("blocks", "text", "error"), [
    ([_section("x")] * 51, "x", "invalid_blocks"),
    ([_section("x" * 3001)], "x", "invalid_blocks"),
    ([{"type": "header", "text": {"type": "plain_text", "text": "h" * 151}}], "x",
     "invalid_blocks"),
    ([{"type": "header", "text": {"type": "mrkdwn", "text": "*h*"}}], "x", "invalid_blocks"),
    ([_section("x" * 3000)] * 5, "x", "msg_blocks_too_long"),
    (None, "x" * 40_001, "msg_too_long"),
])
async def test_slack_refuses_what_slack_refuses(
    slack: FakeSlack, blocks: list[dict[str, object]] | None, text: str, error: str
) -> None:
    with pytest.raises(SlackApiError) as refused:
        await _client(slack).chat_postMessage(channel="C1", text=text, blocks=blocks)
    assert refused.value.response["error"] == error
    assert slack.posts == []


async def test_slack_channel_state_and_programmed_errors(slack: FakeSlack) -> None:
    client = _client(slack)
    slack.channels["C9"] = {"is_member": False, "name": "papers"}
    slack.channels["C8"] = {"exists": False}
    info = await client.conversations_info(channel="C9")
    assert info["channel"]["name"] == "papers" and info["channel"]["is_member"] is False
    for channel, error in [("C9", "not_in_channel"), ("C8", "channel_not_found")]:
        with pytest.raises(SlackApiError) as refused:
            await client.chat_postMessage(channel=channel, text="x")
        assert refused.value.response["error"] == error
    slack.fail("account_inactive")
    slack.fail("is_archived", channel="C2", times=None)
    for channel, error in [("C2", "is_archived"), ("C1", "account_inactive"),
                           ("C2", "is_archived")]:
        with pytest.raises(SlackApiError) as refused:
            await client.chat_postMessage(channel=channel, text="x")
        assert refused.value.response["error"] == error
    await client.chat_postMessage(channel="C1", text="fine now")
    with pytest.raises(SlackApiError) as bad_token:
        await _client(slack, token="xoxb-wrong").chat_postMessage(channel="C1", text="x")
    assert bad_token.value.response["error"] == "invalid_auth"
    assert [p.text for p in slack.posts] == ["fine now"]


async def test_slack_rate_limit_is_retried_by_the_sdk(slack: FakeSlack) -> None:
    slack.rate_limit(retry_after=0, channel="C1")
    await _client(slack, retries=1).chat_postMessage(channel="C1", text="eventually")
    assert [c.status for c in slack.calls_to("chat.postMessage")] == [429, 200]
    slack.rate_limit(retry_after=3)
    with pytest.raises(SlackApiError) as limited:
        await _client(slack).chat_postMessage(channel="C1", text="x")
    assert limited.value.response.status_code == 429
    assert limited.value.response.headers["Retry-After"] == "3"


async def test_slack_socket_mode_slash_command_is_acked(slack: FakeSlack) -> None:
    client = _client(slack)
    bolt = AsyncApp(client=client)

    @bolt.command("/papers")
    async def papers(ack, command, respond) -> None:  # type: ignore[no-untyped-def]
        await ack(f"Subscribed to {command['text'].partition(' ')[2]}")
        await respond("first papers follow")

    handler = AsyncSocketModeHandler(bolt, app_token=slack.app_token, web_client=client)
    await handler.connect_async()
    try:
        ack = await slack.send_slash_command(text="subscribe vision language")
        await slack.wait_for(lambda: bool(slack.responses))
    finally:
        await handler.close_async()
    assert ack == {"text": "Subscribed to vision language"}
    assert slack.responses[0].body["text"] == "first papers follow"
    assert slack.socket_connections == 1


async def test_slack_signed_command_passes_bolt_verification(slack: FakeSlack) -> None:
    bolt = AsyncApp(signing_secret="s3cret", client=_client(slack))

    @bolt.command("/papers")
    async def papers(ack, command) -> None:  # type: ignore[no-untyped-def]
        await ack(f"got {command['text']} from {command['team_id']}")

    runner = web.AppRunner(bolt.web_app(path="/slack/events"))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/slack/events"
    text = slack_escape("subscribe a & <b>")
    try:
        async with aiohttp.ClientSession() as http:
            body, headers = slack.signed_command_request("s3cret", text=text)
            async with http.post(url, data=body, headers=headers) as ok:
                assert (ok.status, await ok.text()) == (200, f"got {text} from T0001")
            body, headers = slack.signed_command_request("wrong", text=text)
            async with http.post(url, data=body, headers=headers) as forged:
                assert forged.status == 401
            body, headers = slack.signed_command_request("s3cret", timestamp=1_000_000)
            async with http.post(url, data=body, headers=headers) as stale:
                assert stale.status == 401
    finally:
        await runner.cleanup()


# -- SMTP -------------------------------------------------------------------------------------


def _mail(to: str = "reader@example.org") -> EmailMessage:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "papers@example.org", to, "2 new papers: gnn"
    msg.set_content("plain body")
    msg.add_alternative("<p>html body</p>", subtype="html")
    return msg


async def test_smtp_plain_records_the_parsed_message() -> None:
    async with FakeSMTP() as fake:
        errors, _ = await aiosmtplib.send(_mail(), hostname=fake.host, port=fake.port,
                                          sender="bounces@example.org")
    assert errors == {}
    mail, = fake.messages
    assert mail.mail_from == "bounces@example.org" and mail.rcpt_tos == ["reader@example.org"]
    assert mail.message["Subject"] == "2 new papers: gnn"
    assert [p.get_content_type() for p in mail.message.iter_parts()] == ["text/plain",
                                                                         "text/html"]
    assert mail.authenticated_as is None and not mail.tls


@pytest.mark.parametrize("security", ["starttls", "tls"])
async def test_smtp_tls_variants_with_auth(security: str, tmp_path: Path) -> None:
    async with FakeSMTP(security=security, username="bot", password="pw") as fake:
        ca_file = fake.write_ca(tmp_path / "ca.pem")
        await aiosmtplib.send(
            _mail(), hostname=fake.host, port=fake.port, username="bot", password="pw",
            use_tls=security == "tls", start_tls=security == "starttls", cert_bundle=str(ca_file),
        )
        with pytest.raises(aiosmtplib.SMTPAuthenticationError) as refused:
            await aiosmtplib.send(
                _mail(), hostname=fake.host, port=fake.port, username="bot", password="bad",
                use_tls=security == "tls", start_tls=security == "starttls",
                tls_context=fake.client_tls_context(),
            )
    assert refused.value.code == 535
    mail, = fake.messages
    assert mail.authenticated_as == "bot" and mail.tls
    assert fake.auth_failures >= 1  # aiosmtplib tries each advertised mechanism


async def test_smtp_one_connection_for_a_batch() -> None:
    async with FakeSMTP() as fake, aiosmtplib.SMTP(hostname=fake.host, port=fake.port) as smtp:
        for n in range(3):
            await smtp.send_message(_mail(f"r{n}@example.org"))
    assert fake.connections == 1
    assert {m.connection for m in fake.messages} == {1} and len(fake.messages) == 3


async def test_smtp_programmed_answers_at_rcpt_and_data() -> None:
    async with FakeSMTP() as fake:
        fake.fail("550", rcpt="gone@example.org", times=2)
        fake.fail("5.7.1", rcpt="spam@example.org", stage="data")
        async with aiosmtplib.SMTP(hostname=fake.host, port=fake.port) as smtp:
            await smtp.mail("papers@example.org")
            with pytest.raises(aiosmtplib.SMTPRecipientRefused) as gone:
                await smtp.rcpt("gone@example.org")
            await smtp.rset()
            errors, _ = await smtp.sendmail("papers@example.org",
                                            ["gone@example.org", "ok@example.org"],
                                            _mail().as_bytes())
            fake.fail("451", stage="data")
            with pytest.raises(aiosmtplib.SMTPDataError) as later:
                await smtp.send_message(_mail("ok@example.org"))
            with pytest.raises(aiosmtplib.SMTPDataError) as spam:
                await smtp.send_message(_mail("spam@example.org"))
    assert gone.value.code == 550
    assert errors["gone@example.org"][0] == 550
    assert later.value.code == 451
    assert (spam.value.code, "5.7.1" in spam.value.message) == (550, True)
    assert [m.rcpt_tos for m in fake.messages] == [["ok@example.org"]]


@pytest.mark.parametrize(("answer", "stage"), [("drop", "rcpt"), ("drop", "data"),
                                               ("421", "rcpt")])
async def test_smtp_dropped_connection_is_a_disconnect(answer: str, stage: str) -> None:
    async with FakeSMTP() as fake:
        fake.fail(answer, stage=stage)  # type: ignore[arg-type]
        with pytest.raises((aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPResponseException,
                            aiosmtplib.SMTPRecipientsRefused)) as failed:
            await aiosmtplib.send(_mail(), hostname=fake.host, port=fake.port)
    if answer == "drop":
        assert isinstance(failed.value, aiosmtplib.SMTPServerDisconnected)
    assert fake.messages == []
