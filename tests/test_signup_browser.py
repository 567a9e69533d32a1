"""The sign-up and preferences pages in a real browser (headless Chromium, tests/browser.py) on a
phone-sized screen: sign up, confirm from the mail the fake SMTP server caught, change the
cadence, remove a keyword, unsubscribe; and the same sign-up with JavaScript off."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from storage import subscribers as sub_repo
from tests.browser import Tab, chromium, needs_chromium
from tests.conftest import Clock
from tests.signup_site import KEYWORD, LINK, READER, Site, body, open_site

pytestmark = [pytest.mark.slow, needs_chromium]

SCRIPTED = 'graph <img src=x onerror="document.title=1"> networks'.replace('"', "'")


@pytest.fixture
async def site(tmp_path: Path, clock: Clock) -> AsyncIterator[Site]:
    async with open_site(tmp_path, clock) as opened:
        yield opened


async def mailed_link(site: Site, count: int = 1) -> str:
    await site.smtp.wait_for(lambda: len(site.mails_to(READER)) >= count)
    found = LINK.search(body(site.mails_to(READER)[count - 1]))
    assert found is not None
    return found.group(1)


async def readable(tab: Tab) -> None:
    """What every page must be on a phone: no sideways scrolling, text not tiny."""
    assert not await tab.overflows()
    size = await tab.js("parseFloat(getComputedStyle(document.body).fontSize)")
    assert size >= 16


async def test_sign_up_confirm_change_cadence_remove_a_keyword_unsubscribe(
        tmp_path: Path, site: Site) -> None:
    async with chromium(tmp_path) as tab:
        await tab.emulate(phone=True, zone="Asia/Tokyo")
        await tab.open(f"{site.url}subscribe")
        assert await tab.text("#title") == "Sign up"
        assert await tab.js("document.querySelector('#timezone').value") == "Asia/Tokyo"
        await readable(tab)
        await tab.fill("#address", READER)
        await tab.fill("#keywords", f"{KEYWORD}\n{SCRIPTED}")
        await tab.tap("#cadence-weekly")
        await tab.set_value("#day", "wed")
        await tab.set_value("#time", "09:15")
        await tab.click("#submit")
        assert await tab.text("#title") == "Check your inbox"
        assert READER in await tab.text("#message")
        await readable(tab)
        assert await site.followed() == []

        await tab.open(await mailed_link(site))
        assert await tab.text("#title") == "Confirm your subscription"
        assert "one digest a week, Wednesday at 09:15 (Asia/Tokyo time)" in await tab.text(
            "#message")
        assert SCRIPTED in await tab.text("#keywords")  # shown as text, never run
        assert await tab.js("document.querySelectorAll('img').length") == 0
        await readable(tab)
        await tab.click("#confirm")

        assert await tab.text("#title") == "Your subscription"
        assert "Confirmed" in await tab.text("#notice")
        assert sorted(await site.followed()) == sorted([KEYWORD, SCRIPTED])
        await readable(tab)

        await tab.tap("#cadence-daily")
        await tab.set_value("#time", "06:45")
        await tab.fill("#timezone", "Berlin")
        await tab.click("#save")
        assert await tab.text("#notice") == "Delivery saved."
        assert "one digest a day at 06:45 (Europe/Berlin time)" in await tab.text("#delivery")
        sub = await site.subscriber()
        assert (sub.digest_time, sub.timezone) == ("daily 06:45", "Europe/Berlin")

        await tab.click("#keywords li:first-child .remove")  # "graph <img…", sorted first
        assert "Keyword removed" in await tab.text("#notice")
        assert await site.followed() == [KEYWORD]
        assert await tab.text("#keywords") == f"{KEYWORD}\nRemove"

        await tab.click("#leave")
        assert await tab.text("#title") == "Unsubscribed"
        assert "unsubscribed from everything" in await tab.text("#message")
        await readable(tab)
    assert await site.followed() == []
    reason = await site.app.store.run(
        lambda s: sub_repo.is_suppressed(s.db, "email", READER, sub_repo.ALL))
    assert reason == "preferences page"


async def test_the_pages_work_with_javascript_off(tmp_path: Path, site: Site) -> None:
    async with chromium(tmp_path) as tab:
        await tab.emulate(phone=True, zone="Asia/Tokyo", scripts=False)
        await tab.open(f"{site.url}subscribe")
        assert await tab.js("document.querySelector('#timezone').value") == ""  # no preset
        await tab.fill("#address", READER)
        await tab.fill("#keywords", KEYWORD)
        await tab.click("#submit")
        assert await tab.text("#title") == "Check your inbox"
        await tab.open(await mailed_link(site))
        await tab.click("#confirm")
        assert await tab.text("#title") == "Your subscription"
        await tab.click("#keywords li .remove")
        assert await site.followed() == []
    sub = await site.subscriber()
    assert (sub.digest_time, sub.timezone) == ("instant", None)  # the channel's defaults
