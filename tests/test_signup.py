"""Email self-service over HTTP ([web] signup): the sign-up form, the mailed link (double opt-in),
the preferences page and its CSRF token, and the abuse limits. The real email face serves its
routes on a local server; its notifier mails the fake SMTP server; the store is a real file.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from bot.config import ConfigError, EmailConfig, WebConfig, load_config
from bot.faces.email import EmailFace
from bot.faces.signup_tokens import SignupTokens
from bot.faces.tokens import InvalidToken, Signer
from storage import signups
from storage import subscribers as sub_repo
from storage.store import Store
from tests.conftest import Clock
from tests.signup_site import (
    HOSTILE,
    KEYWORD,
    READER,
    SECRET,
    SENDER,
    Answer,
    Site,
    body,
    form_of,
    idle,
    open_site,
    shown,
    without_nonce,
)
from tests.test_bad_input import TEXT, check_store


@pytest.fixture
async def site(tmp_path: Path, clock: Clock) -> AsyncIterator[Site]:
    async with open_site(tmp_path, clock) as opened:
        yield opened


# --- sign-up and confirmation -------------------------------------------------------------------


async def test_the_form_works_without_javascript_and_runs_only_its_own_script(site: Site) -> None:
    page = await site.get("subscribe")
    assert page.status == 200
    assert '<form method="post" action="subscribe"' in page.text
    for name in ("address", "keywords", "cadence", "time", "day", "timezone", "website"):
        assert f'name="{name}"' in page.text
    assert 'value="instant" id="cadence-instant" checked' in page.text  # the channel's default
    policy = page.headers["Content-Security-Policy"]
    nonce = re.search(r"script-src 'nonce-([^']+)'", policy).group(1)  # type: ignore[union-attr]
    assert f'<script nonce="{nonce}">' in page.text and "default-src 'none'" in policy
    assert page.headers["Cache-Control"] == "no-store"
    assert page.headers["Referrer-Policy"] == "no-referrer"


async def test_sign_up_mails_a_link_and_subscribes_nothing_until_it_is_confirmed(
        site: Site) -> None:
    answer = await site.sign_up(keywords=f"{KEYWORD}\n\n  Graph Neural Networks \n{KEYWORD}")
    assert answer.status == 200
    assert "a message with a link is on its way" in shown(answer.text)
    link = await site.link()
    mail = site.mails_to(READER)[0]
    assert mail.message["Subject"] == "Daily Papers: confirm your subscription"
    assert "List-Unsubscribe" not in mail.message  # nobody is subscribed yet
    text = body(mail)
    assert f"  - {KEYWORD}\n  - Graph Neural Networks\n" in text
    assert "as one digest a day at 07:30 (Europe/Berlin time)" in text
    assert await site.followed() == [] and await site.subscriber() is None

    asked = await site.get(link)  # opening the link only asks
    assert asked.status == 200 and "Confirm your subscription" in asked.text
    assert READER in shown(asked.text) and KEYWORD in asked.text
    assert await site.followed() == []

    preferences = await site.confirm(link)
    assert sorted(await site.followed()) == ["Graph Neural Networks", KEYWORD]
    sub = await site.subscriber()
    assert (sub.digest_time, sub.timezone, sub.active) == ("daily 07:30", "Europe/Berlin", True)
    page = await site.get(preferences)
    assert page.status == 200 and "Confirmed: you are subscribed." in shown(page.text)

    again = await site.post(link, {})  # a second press: already done, nothing doubles
    assert again.status == 303 and "/preferences?t=" in again.location
    assert len(await site.followed()) == 2


async def test_a_confirmed_keyword_gets_its_first_look_at_once(site: Site) -> None:
    await site.sign_up()
    await site.confirm(await site.link())

    def polled(store: Store) -> bool:
        row = next(store.db.query("SELECT last_success FROM keywords WHERE display = ?",
                                  [KEYWORD]), None)
        return row is not None and row["last_success"] is not None

    await idle(site)
    assert await site.app.store.run(polled)


async def test_known_and_unknown_addresses_get_the_same_answer(site: Site) -> None:
    await site.sign_up("known@example.org")
    await site.confirm(await site.link("known@example.org"))
    known = await site.sign_up("known@example.org")
    unknown = await site.sign_up("nobody@example.org")
    assert known.status == unknown.status == 200
    assert without_nonce(known.text).replace("known@", "X@") == \
        without_nonce(unknown.text).replace("nobody@", "X@")
    await site.link("known@example.org", count=2)  # the owner of the box decides, as before
    await site.link("nobody@example.org")


async def test_three_mails_per_address_a_day_then_the_same_answer_without_a_mail(
        site: Site) -> None:
    answers = [await site.sign_up("Reader@Example.org" if i % 2 else READER) for i in range(4)]
    assert {a.status for a in answers} == {200}
    assert len({shown(a.text).lower() for a in answers}) == 1
    await site.link(count=3)
    await idle(site)
    assert len(site.smtp.messages) == 3  # one mailbox, however the local part is cased
    site.clock.advance(timedelta(days=1, minutes=1))
    await site.sign_up()
    await site.link(count=4)


async def test_twenty_sign_ups_per_client_an_hour(site: Site) -> None:
    site.app.cfg.web.signup_per_client = 2
    proxy = {"X-Forwarded-For": "203.0.113.7"}
    assert (await site.sign_up("a@example.org", headers=proxy)).status == 200
    assert (await site.sign_up("b@example.org", headers=proxy)).status == 200
    refused = await site.sign_up("c@example.org", headers=proxy)
    assert refused.status == 429 and "Too many sign-ups" in refused.text
    other = await site.sign_up("c@example.org", headers={"X-Forwarded-For": "198.51.100.1"})
    assert other.status == 200
    await site.link("c@example.org")
    stored = await site.app.store.run(lambda s: [r["client"] for r in s.db.query(
        "SELECT client FROM signups")])
    assert not any("203.0.113.7" in c or "198.51" in c for c in stored)  # keyed hashes only
    site.clock.advance(timedelta(hours=1, seconds=1))
    assert (await site.sign_up("d@example.org", headers=proxy)).status == 200


async def test_the_honeypot_answers_like_a_sign_up_and_does_nothing(site: Site) -> None:
    trapped = await site.sign_up(website="http://spam.example")
    assert trapped.status == 200 and "on its way" in trapped.text
    await idle(site)
    assert await site.app.store.run(lambda s: s.db.table("signups").count) == 0
    assert site.smtp.messages == []


@pytest.mark.parametrize(("fields", "problem"), [
    ({"address": "not an address"}, "is not a usable email address"),
    ({"keywords": "   \n "}, "give at least one"),
    ({"keywords": 'ok keyword\nunbalanced "quote'}, "Keyword 'unbalanced \"quote'"),
    ({"cadence": "weekly", "day": "someday"}, "'someday' is not a day"),
    ({"time": "25:00"}, "'25:00' is not a time of day"),
    ({"cadence": "hourly"}, "choose as soon as they are found"),
    ({"cadence": "default"}, "choose as soon as they are found"),
    ({"timezone": "Europe/Berln"}, "Did you mean Europe/Berlin,"),
])
async def test_bad_input_gets_the_form_back_with_the_problem_and_nothing_happens(
        site: Site, fields: dict[str, str], problem: str) -> None:
    answer = await site.sign_up(**fields)
    assert answer.status == 400
    assert problem in shown(answer.text)
    assert 'id="problems"' in answer.text and 'action="subscribe"' in answer.text
    await idle(site)
    assert await site.app.store.run(lambda s: s.db.table("signups").count) == 0
    assert site.smtp.messages == []


async def test_too_many_keywords_at_once(site: Site) -> None:
    site.app.cfg.web.signup_max_keywords = 2
    answer = await site.sign_up(keywords="one keyword\ntwo keywords\nthree keywords")
    assert answer.status == 400 and "at most 2 at once, not 3" in answer.text


async def test_everything_typed_is_escaped(site: Site) -> None:
    answer = await site.sign_up(address="<b>x</b>", keywords=HOSTILE)
    assert "<script>alert" not in answer.text and "<b>x</b>" not in answer.text
    assert "&lt;b&gt;x&lt;/b&gt;" in answer.text
    await site.sign_up(keywords=HOSTILE)
    asked = await site.get(await site.link())
    assert "<script>alert" not in asked.text and "&lt;script&gt;alert" in asked.text


async def test_a_link_expires_after_48_hours(site: Site) -> None:
    await site.sign_up()
    link = await site.link()
    site.clock.advance(timedelta(hours=48, seconds=1))
    asked = await site.get(link)
    assert asked.status == 410 and "has expired" in asked.text
    token = parse_qs(urlparse(link).query)["t"][0]
    assert (await site.post(link, {"t": token})).status == 410
    assert await site.subscriber() is None


async def test_forged_and_misused_tokens_are_refused(site: Site) -> None:
    await site.sign_up()
    link = await site.link()
    token = parse_qs(urlparse(link).query)["t"][0]
    forged = SignupTokens(Signer("not the key"), site.url).confirm_token(READER, 1)
    for bad in (forged, token[:-2], "", "x" * 5000):
        answer = await site.get(f"subscribe/confirm?t={bad}")
        assert answer.status == 400 and "not valid" in answer.text
    assert (await site.get(f"preferences?t={token}")).status == 400  # a link is not a page key
    tokens = SignupTokens(Signer(SECRET), site.url)
    with pytest.raises(InvalidToken):
        tokens.open_confirm(tokens.preferences_token(READER))
    with pytest.raises(InvalidToken):
        Signer(SECRET).verify(tokens.preferences_token(READER))  # nor an unsubscribe token
    other = tokens.confirm_token("someone@example.org", 1)  # signed, but not this sign-up's
    assert (await site.get(f"subscribe/confirm?t={other}")).status == 410
    assert await site.subscriber() is None


async def test_limits_of_chat_hold_at_confirmation_and_refuse_everything(site: Site) -> None:
    site.app.cfg.web.signup_max_keywords = 2
    await site.sign_up(keywords="first keyword\nsecond keyword")
    await site.confirm(await site.link())
    await site.sign_up(keywords="third keyword")
    link = await site.link(count=2)
    token = parse_qs(urlparse(link).query)["t"][0]
    refused = await site.post(link, {"t": token})
    assert refused.status == 409
    assert "This address already follows 2 keywords" in shown(refused.text)
    assert await site.followed() == ["first keyword", "second keyword"]
    site.app.cfg.web.signup_max_keywords = 50
    site.app.cfg.arxiv.max_keywords = 2
    full = await site.post(link, {"t": token})
    assert full.status == 409 and "This instance is full" in shown(full.text)


async def test_a_deferred_confirmation_mail_is_tried_again(site: Site) -> None:
    site.smtp.fail("451", rcpt=READER)
    await site.sign_up()
    await site.link()
    assert [r[0] for r in site.smtp.refusals] == ["rcpt"]


async def test_tokens_never_reach_the_log(site: Site, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    await site.sign_up()
    link = await site.link()
    preferences = await site.confirm(link)
    await site.get(preferences)
    secrets = [parse_qs(urlparse(u).query)["t"][0] for u in (link, preferences)]
    logged = "\n".join(r.getMessage() for r in caplog.records
                       if r.name != "mail.log")  # the fake SMTP server's own chatter
    assert "sign-up confirmed by reader@example.org" in logged
    assert not any(s in logged or s[:20] in logged for s in secrets)


# --- the preferences page ------------------------------------------------------------------------


async def subscribed_site(site: Site, keywords: str = f"{KEYWORD}\ngraph neural networks",
                          ) -> tuple[str, str]:
    """Sign READER up; (preferences URL, its page)."""
    await site.sign_up(keywords=keywords)
    preferences = await site.confirm(await site.link())
    page = await site.get(preferences)
    assert page.status == 200
    return preferences, page.text


async def change(site: Site, preferences: str, page: str, action: str,
                 **fields: str) -> Answer:
    return await site.post(preferences, {**form_of(page, action), **fields})


async def test_remove_and_add_keywords(site: Site) -> None:
    preferences, page = await subscribed_site(site)
    removed = await change(site, preferences, page, "remove", keyword="graph neural networks")
    assert removed.status == 303
    assert await site.followed() == [KEYWORD]
    page = (await site.get(removed.location)).text
    assert "Keyword removed" in page and "graph neural networks" not in page

    added = await change(site, preferences, page, "add", keyword="vision language model")
    assert added.status == 303
    assert await site.followed() == [KEYWORD, "vision language model"]

    bad = await change(site, preferences, page, "add", keyword='bad "quote')
    assert bad.status == 400 and "unbalanced" in shown(bad.text).lower()
    assert 'value="bad &#34;quote"' in bad.text  # what was typed stays in the field
    assert await site.followed() == [KEYWORD, "vision language model"]


async def test_change_cadence_and_zone_moves_waiting_papers(site: Site) -> None:
    preferences, page = await subscribed_site(site)
    assert 'value="daily" id="cadence-daily" checked' in page
    assert 'value="Europe/Berlin"' in page
    saved = await change(site, preferences, page, "settings", cadence="weekly", day="fri",
                         time="18:15", timezone="Tokyo")
    assert saved.status == 303
    sub = await site.subscriber()
    assert (sub.digest_time, sub.timezone) == ("weekly fri 18:15", "Asia/Tokyo")
    page = (await site.get(saved.location)).text
    assert "Delivery saved." in page
    assert "as one digest a week, Friday at 18:15 (Asia/Tokyo time)" in shown(page)

    bad = await change(site, preferences, page, "settings", cadence="daily", time="7 am",
                       timezone="Tokyo")
    assert bad.status == 400 and "'7 am' is not a time of day" in shown(bad.text)
    assert (await site.subscriber()).digest_time == "weekly fri 18:15"


async def test_unsubscribe_from_everything_and_come_back_only_by_signing_up(site: Site) -> None:
    preferences, page = await subscribed_site(site)
    left = await change(site, preferences, page, "leave")
    assert left.status == 303 and await site.followed() == []
    page = (await site.get(left.location)).text
    assert "is unsubscribed from everything" in shown(page)
    assert 'name="action" value="add"' not in page
    # A form kept from before cannot bring it back: only a confirmed sign-up can.
    sneaky = await site.post(preferences, {"action": "add", "keyword": KEYWORD,
                                           "csrf": _csrf(site)})
    assert sneaky.status == 400 and "sign up again" in shown(sneaky.text)
    assert await site.followed() == []

    await site.sign_up(keywords=KEYWORD)
    await site.confirm(await site.link(count=2))
    assert await site.followed() == [KEYWORD]
    reason = await site.app.store.run(
        lambda s: sub_repo.is_suppressed(s.db, "email", READER, sub_repo.ALL))
    assert reason is None


def _csrf(site: Site) -> str:
    return SignupTokens(Signer(SECRET), site.url).form_token(READER, site.clock.now())


async def test_changes_need_the_pages_own_csrf_token(site: Site) -> None:
    preferences, page = await subscribed_site(site)
    fields = form_of(page, "leave")
    other = SignupTokens(Signer(SECRET), site.url).form_token("other@example.org",
                                                              site.clock.now())
    for csrf in ("", "forged.token", other):
        refused = await site.post(preferences, {**fields, "csrf": csrf})
        assert refused.status == 403 and "nothing was changed" in shown(refused.text)
    site.clock.advance(timedelta(hours=24, minutes=1))
    stale = await site.post(preferences, {**fields})
    assert stale.status == 403 and 'href="preferences?t=' in stale.text
    assert len(await site.followed()) == 2


async def test_the_preferences_page_for_an_invalid_link(site: Site) -> None:
    forged = SignupTokens(Signer("not the key"), site.url).preferences_token(READER)
    answer = await site.get(f"preferences?t={forged}")
    assert answer.status == 400 and "not valid" in answer.text
    assert (await site.post(f"preferences?t={forged}", {"action": "leave"})).status == 400


async def test_every_mail_links_the_preferences_page(site: Site) -> None:
    _, _ = await subscribed_site(site)
    sub = await site.subscriber()
    await site.face.tell(sub, "a note")
    await site.smtp.wait_for(lambda: len(site.mails_to(READER)) >= 2)
    note = body(site.mails_to(READER)[1])
    manage = re.search(r"Manage your subscription: (\S+)", note)
    assert manage is not None
    page = await site.get(manage.group(1))
    assert page.status == 200 and READER in page.text


# --- configuration -------------------------------------------------------------------------------


def test_signup_keys_default_and_checked(tmp_path: Path) -> None:
    assert WebConfig().signup is False
    path = tmp_path / "config.toml"
    path.write_text("[web]\nsignup = true\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"'web.signup' needs email on"):
        load_config(path)
    path.write_text('[email]\nhost = "smtp.example.org"\nsender = "p@example.org"\n'
                    "[web]\nsignup = true\nsignup_per_client = 0\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"'web.signup_per_client' must be between 1"):
        load_config(path)
    path.write_text('[email]\nhost = "smtp.example.org"\nsender = "p@example.org"\n'
                    "[web]\nsignup = true\nsignup_mails_per_address = 5\n", encoding="utf-8")
    cfg = load_config(path)
    assert (cfg.web.signup, cfg.web.signup_mails_per_address, cfg.web.signup_per_client,
            cfg.web.signup_max_keywords) == (True, 5, 20, 50)


def test_without_signup_there_are_no_pages_and_no_manage_link() -> None:
    face = EmailFace(EmailConfig(host="smtp.example.org", sender=SENDER), WebConfig(), "")
    paths = {r.path for r in face.routes()}  # type: ignore[attr-defined]
    assert paths == {"/unsubscribe"}
    assert face.notifier.manage is None


def test_sign_up_rows_are_pruned_after_four_days(tmp_path: Path) -> None:
    store = Store(tmp_path / "p.db")
    now = datetime(2026, 1, 1, tzinfo=UTC)
    limits = signups.Limits(3, 20)
    req = signups.SignupRequest(READER, (KEYWORD,), "instant", None, "client")
    signups.admit(store.db, req, limits, now)
    signups.admit(store.db, req, limits, now + timedelta(days=4, seconds=1))
    assert store.db.table("signups").count == 1
    store.close()


# --- generated bad input (the chat fuzz's texts) -------------------------------------------------

FORMS = 400


def browser_text(text: str) -> str:
    """What a browser sends for a string with lone surrogates: U+FFFD in their place."""
    return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")


VALID = {"address": ["a@example.org", READER], "keywords": [KEYWORD, "x y\nvision model"],
         "cadence": ["instant", "daily", "weekly"], "time": ["08:00", "23:59"],
         "day": ["mon", "sun"], "timezone": ["", "Europe/Berlin", "Berlin"],
         "keyword": [KEYWORD, "graph neural networks", "vision model"],
         "action": ["add", "remove", "settings"]}


@st.composite
def forms(draw: st.DrawFn) -> dict[str, str]:
    """A right form with none, one or two fields wrong: the wrong one is what is answered."""
    form = {name: draw(st.sampled_from(good)) for name, good in VALID.items()}
    for name in draw(st.lists(st.sampled_from(sorted(VALID)), max_size=2, unique=True)):
        form[name] = draw(TEXT)
    return form


@pytest.mark.filterwarnings("ignore:Generating overly large repr")
def test_generated_forms_are_answered_and_change_nothing_unconfirmed(
        tmp_path: Path) -> None:
    """Sign-up and preferences forms filled with the chat fuzz's texts: every one is answered
    with a page (no 500), a sign-up subscribes nobody, and the store stays valid."""
    with asyncio.Runner() as runner:
        context = open_site(tmp_path, Clock())
        site = runner.run(context.__aenter__())
        site.app.cfg.web.signup_per_client = 100_000
        try:
            preferences = runner.run(subscribed_site(site))[0]
            answered: dict[tuple[str, int], int] = {}

            @settings(max_examples=FORMS, deadline=None, database=None,
                      phases=(Phase.explicit, Phase.generate),
                      suppress_health_check=list(HealthCheck))
            @given(forms(), st.booleans())
            def post(form: dict[str, str], signup: bool) -> None:
                async def run() -> None:
                    data = {k: browser_text(v) for k, v in form.items()}
                    if signup:
                        answer = await site.post("subscribe", {**data, "website": ""})
                        assert answer.status in (200, 400), (data, answer.status)
                    else:
                        page = (await site.get(preferences)).text
                        fields = {**form_of(page, "add"), **data}
                        answer = await site.post(preferences, fields)
                        assert answer.status in (303, 400), (fields, answer.status)
                    key = ("subscribe" if signup else "preferences", answer.status)
                    answered[key] = answered.get(key, 0) + 1
                    assert "</html>" in answer.text or answer.status == 303
                    followed = await site.followed()
                    others = await site.app.store.run(lambda s: s.db.execute(
                        "SELECT count(*) FROM subscribers WHERE address != ?",
                        [READER]).fetchone()[0])
                    assert others == 0 and len(followed) <= 50
                    await site.app.store.run(check_store)

                runner.run(run())

            post()
            print(f"\ngenerated forms: {FORMS}, answers by status: {answered}")
        finally:
            runner.run(context.__aexit__(None, None, None))
