"""Each reader's cadence and zone: parsing, the due times across DST (New York, Berlin, Sydney,
Asia/Kolkata's half hour) with an injected clock, weekly digests once per local ISO week, and a
changed cadence moving pending rows (nothing lost, nothing sent twice)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from bot.config import Config, ConfigError, EmailConfig, TelegramConfig, load_config
from bot.deliver.cadence import Cadence, SettingError, parse_cadence, resolve_zone
from bot.deliver.dispatcher import Dispatcher
from bot.deliver.schedule import (
    Setting,
    digest_period_factory,
    due_at_factory,
    due_for,
    local_week,
    next_slot,
    settings_factory,
)
from bot.sync import sync_config
from storage import keywords as kw_repo
from storage import outbox, polls
from storage import subscribers as sub_repo
from storage.records import Keyword, Paper, Subscriber
from storage.store import AsyncStore, Store
from tests.conftest import Clock, KeywordFactory, SubscriberFactory
from tests.test_lifecycle import Recorder
from tests.test_lifecycle import publish as publish_at

KEYWORD = "graph neural networks"
BOB = "bob@example.org"


def at(zone: str, *args: int, fold: int = 0) -> datetime:
    """A local wall time in `zone`, as the UTC moment the code works with."""
    return datetime(*args, tzinfo=ZoneInfo(zone), fold=fold).astimezone(UTC)


# -- parsing ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "canonical"), [
    ("instant", "instant"), ("", "instant"), ("  INSTANT ", "instant"),
    ("daily 08:00", "daily 08:00"), ("Daily 8:05", "daily 08:05"), ("08:00", "daily 08:00"),
    ("23:59", "daily 23:59"), ("weekly mon 08:00", "weekly mon 08:00"),
    ("Weekly Sunday 0:00", "weekly sun 00:00"), ("weekly FRI 17:30", "weekly fri 17:30"),
])
def test_cadence_forms(text: str, canonical: str) -> None:
    cadence = parse_cadence(text)
    assert str(cadence) == canonical
    assert parse_cadence(canonical) == cadence  # the stored text reads back the same


@pytest.mark.parametrize(("text", "why"), [
    ("hourly", ""), ("daily", ""), ("daily 25:00", "'25:00' is not a time of day like 08:00"),
    ("8am", "'8am' is not a time of day like 08:00"), ("weekly 08:00", ""),
    ("weekly xyz 08:00", "'xyz' is not a day (mon, tue, wed, thu, fri, sat, sun)"),
    ("daily 08:00 09:00", ""), ("x" * 5000, ""),
])
def test_a_bad_cadence_names_the_value_and_what_is_accepted(text: str, why: str) -> None:
    with pytest.raises(SettingError) as caught:
        parse_cadence(text)
    message = caught.value.message
    assert message.startswith(f"'{text[:40]}")
    assert why in message
    assert message.endswith("use instant, daily HH:MM (e.g. daily 08:00) or weekly DAY HH:MM "
                            "(e.g. weekly mon 08:00).")
    assert len(message) < 300


@pytest.mark.parametrize(("typed", "zone"), [
    ("Europe/Berlin", "Europe/Berlin"), ("europe/berlin", "Europe/Berlin"), ("Berlin", "Europe/Berlin"),
    ("tokyo", "Asia/Tokyo"), ("New York", "America/New_York"), ("Kolkata", "Asia/Kolkata"),
    ("UTC", "UTC"), ("Sydney", "Australia/Sydney"),
])
def test_zones_by_name_or_by_city(typed: str, zone: str) -> None:
    assert resolve_zone(typed) == zone


@pytest.mark.parametrize(("typed", "suggested"), [
    ("Europe/Berln", "Europe/Berlin"), ("Tokio", "Asia/Tokyo"),
    ("Indianapolis", "America/Indiana/Indianapolis"),  # two zones end with it: both offered
])
def test_an_unknown_zone_gets_the_closest_names(typed: str, suggested: str) -> None:
    with pytest.raises(SettingError) as caught:
        resolve_zone(typed)
    assert caught.value.message.startswith(f"'{typed}' is not a time zone I know. Did you mean ")
    assert suggested in caught.value.message


def test_a_zone_nothing_resembles_is_refused_plainly() -> None:
    with pytest.raises(SettingError) as caught:
        resolve_zone("Mars/Olympus_Mons")
    assert caught.value.message == ("'Mars/Olympus_Mons' is not a time zone I know. Use an IANA "
                                    "name such as Europe/Berlin or Asia/Tokyo.")


# -- due times across DST ---------------------------------------------------------------------
NY, BERLIN, SYDNEY, KOLKATA = ("America/New_York", "Europe/Berlin", "Australia/Sydney",
                               "Asia/Kolkata")


@pytest.mark.parametrize(("zone", "now", "cadence", "expected"), [
    # New York springs forward on 9 March 2025 (02:00 → 03:00) and falls back on 2 November.
    (NY, at(NY, 2025, 3, 8, 23, 0), "daily 02:30", at(NY, 2025, 3, 9, 3, 30)),
    (NY, at(NY, 2025, 3, 9, 3, 45), "daily 02:30", at(NY, 2025, 3, 10, 2, 30)),
    (NY, at(NY, 2025, 11, 2, 0, 30), "daily 01:30", at(NY, 2025, 11, 2, 1, 30)),
    (NY, at(NY, 2025, 11, 2, 1, 10, fold=1), "daily 01:30", at(NY, 2025, 11, 3, 1, 30)),
    (NY, at(NY, 2025, 3, 5, 12, 0), "weekly sun 02:30", at(NY, 2025, 3, 9, 3, 30)),
    # Berlin: 30 March 2025 (02:00 → 03:00), 26 October 2025 (03:00 → 02:00).
    (BERLIN, at(BERLIN, 2025, 10, 24, 9, 0), "weekly sun 02:30", at(BERLIN, 2025, 10, 26, 2, 30)),
    (BERLIN, at(BERLIN, 2025, 10, 26, 2, 45), "weekly sun 02:30",
     at(BERLIN, 2025, 11, 2, 2, 30)),
    (BERLIN, at(BERLIN, 2025, 3, 30, 1, 0), "daily 02:15", at(BERLIN, 2025, 3, 30, 3, 15)),
    # Sydney falls back on 6 April 2025 (03:00 → 02:00), springs forward on 5 October 2025.
    (SYDNEY, at(SYDNEY, 2025, 4, 6, 1, 0), "daily 02:30", at(SYDNEY, 2025, 4, 6, 2, 30)),
    (SYDNEY, at(SYDNEY, 2025, 4, 6, 2, 10, fold=1), "daily 02:30", at(SYDNEY, 2025, 4, 7, 2, 30)),
    (SYDNEY, at(SYDNEY, 2025, 10, 4, 22, 0), "daily 02:30", at(SYDNEY, 2025, 10, 5, 3, 30)),
    (SYDNEY, at(SYDNEY, 2025, 10, 1, 12, 0), "weekly sun 08:00", at(SYDNEY, 2025, 10, 5, 8, 0)),
    # Kolkata: UTC+05:30 all year, so 08:00 there is 02:30 UTC.
    (KOLKATA, datetime(2025, 6, 1, 2, 0, tzinfo=UTC), "daily 08:00",
     datetime(2025, 6, 1, 2, 30, tzinfo=UTC)),
    (KOLKATA, datetime(2025, 6, 1, 2, 31, tzinfo=UTC), "daily 08:00",
     datetime(2025, 6, 2, 2, 30, tzinfo=UTC)),
    (KOLKATA, datetime(2025, 6, 2, 18, 29, tzinfo=UTC), "weekly tue 00:00",  # Mon 23:59 local
     datetime(2025, 6, 2, 18, 30, tzinfo=UTC)),
])
def test_next_slot_across_dst(zone: str, now: datetime, cadence: str, expected: datetime) -> None:
    assert next_slot(now, parse_cadence(cadence), zone) == expected


def sub(**values: object) -> Subscriber:
    return Subscriber(id=1, channel="email", address=BOB, **values)  # type: ignore[arg-type]


def test_a_weekly_digest_goes_once_per_local_iso_week() -> None:
    weekly = Setting(parse_cadence("weekly wed 08:00"), SYDNEY, True, True)
    now = at(SYDNEY, 2025, 10, 1, 7, 0)  # Wednesday, before 08:00
    assert due_for(sub(), weekly, now) == at(SYDNEY, 2025, 10, 1, 8, 0)
    sent = sub(last_digest_week=local_week(at(SYDNEY, 2025, 10, 1, 8, 0), SYDNEY))
    assert sent.last_digest_week == "2025-W40"
    # Moved to Friday the same week: that week had its digest, the next comes a week later.
    friday = Setting(parse_cadence("weekly fri 08:00"), SYDNEY, True, True)
    assert due_for(sent, friday, now) == at(SYDNEY, 2025, 10, 10, 8, 0)
    # A daily digest the same week is its own bookkeeping.
    daily = Setting(parse_cadence("daily 09:00"), SYDNEY, True, True)
    assert due_for(sent, daily, now) == at(SYDNEY, 2025, 10, 1, 9, 0)


def test_an_iso_week_is_the_readers_local_one() -> None:
    sunday_night_tokyo = datetime(2025, 12, 28, 16, 0, tzinfo=UTC)  # Mon 01:00 in Tokyo
    assert local_week(sunday_night_tokyo, "Asia/Tokyo") == "2026-W01"
    assert local_week(sunday_night_tokyo, "UTC") == "2025-W52"


def test_own_settings_win_over_the_channels_and_bad_stored_values_fall_back() -> None:
    cfg = Config(telegram=TelegramConfig(digest_time="weekly mon 08:00", timezone="Asia/Tokyo"))
    setting_of = settings_factory(cfg)
    tg = Subscriber(id=1, channel="telegram", address="42")
    assert setting_of(tg) == Setting(Cadence("weekly", 8, 0, 0), "Asia/Tokyo")
    own = Subscriber(id=1, channel="telegram", address="42", digest_time="instant",
                     timezone="Europe/Berlin")
    assert setting_of(own) == Setting(Cadence("instant"), "Europe/Berlin", True, True)
    garbled = Subscriber(id=1, channel="telegram", address="42", digest_time="sometimes",
                         timezone="Mars/Base")
    assert setting_of(garbled) == Setting(Cadence("weekly", 8, 0, 0), "Asia/Tokyo")


# -- the dispatcher, weeks at a time ----------------------------------------------------------
async def reader(store: AsyncStore, clock: Clock, add_keyword: KeywordFactory,
                 add_subscriber: SubscriberFactory) -> tuple[Keyword, Subscriber]:
    kw = await add_keyword(KEYWORD)
    bob = await add_subscriber("email", BOB, kw)
    await store.call(polls.commit_poll, kw, [], baseline=True, now=clock.now(), max_papers=100,
                     notify_floor=clock.now(), total_results=0)
    return kw, bob


async def publish(store: AsyncStore, kw: Keyword, arxiv_id: str, clock: Clock,
                  cfg: Config) -> None:
    """A cycle at the clock's now that found one paper, and the release at its end."""
    await publish_at(store, kw, arxiv_id, clock.now(), due_at_factory(cfg, clock.now))


def email(digest: str, zone: str) -> Config:
    return Config(email=EmailConfig(host="smtp.test", digest_time=digest, timezone=zone))


async def test_a_weekly_digest_across_sydneys_april_change_goes_once_a_week(
        store: AsyncStore, clock: Clock, add_keyword: KeywordFactory,
        add_subscriber: SubscriberFactory) -> None:
    """Four weeks, a paper every six hours, a dispatcher round every 30 minutes."""
    clock.current = at(SYDNEY, 2025, 3, 24, 12, 0)
    cfg = email("weekly sun 02:30", SYDNEY)  # 6 April: 02:30 happens twice; the first counts
    kw, _ = await reader(store, clock, add_keyword, add_subscriber)
    recorder = Recorder(clock)
    dispatcher = Dispatcher(store, {"email": recorder}, clock.now, digest_period_factory(cfg))
    made: list[tuple[str, datetime]] = []
    for step in range(4 * 7 * 48):
        if step % 12 == 0:
            made.append((f"2503.{step:05d}", clock.now()))
            await publish(store, kw, made[-1][0], clock, cfg)
        await dispatcher.drain()
        clock.advance(timedelta(minutes=30))
    sent_at = [when.astimezone(ZoneInfo(SYDNEY)) for when, _ in recorder.sent]
    assert [(w.date().isoformat(), w.hour, w.minute, w.fold) for w in sent_at] == [
        ("2025-03-30", 2, 30, 0), ("2025-04-06", 2, 30, 0), ("2025-04-13", 2, 30, 0),
        ("2025-04-20", 2, 30, 0)]
    delivered = [aid for _, ids in recorder.sent for aid in ids]
    assert len(delivered) == len(set(delivered))
    assert set(delivered) == {aid for aid, when in made if when <= recorder.sent[-1][0]}


async def test_a_changed_cadence_moves_pending_rows_and_sends_nothing_twice(
        store: AsyncStore, clock: Clock, add_keyword: KeywordFactory,
        add_subscriber: SubscriberFactory) -> None:
    clock.current = at(BERLIN, 2025, 11, 3, 7, 0)  # a Monday
    cfg = email("", "UTC")
    kw, bob = await reader(store, clock, add_keyword, add_subscriber)
    due_at = due_at_factory(cfg, clock.now)
    await store.call(sub_repo.change_settings, bob.id,
                     {"digest_time": "weekly fri 18:00", "timezone": BERLIN}, due_at)
    await publish(store, kw, "2511.00001", clock, cfg)
    await publish(store, kw, "2511.00002", clock, cfg)
    recorder = Recorder(clock)
    dispatcher = Dispatcher(store, {"email": recorder}, clock.now, digest_period_factory(cfg))
    await dispatcher.drain()
    assert recorder.sent == []  # waiting for Friday

    _, moved = await store.call(sub_repo.change_settings, bob.id, {"digest_time": "daily 09:00"},
                                due_at)
    assert moved == 2
    clock.current = at(BERLIN, 2025, 11, 3, 8, 59)
    await dispatcher.drain()
    assert recorder.sent == []
    clock.current = at(BERLIN, 2025, 11, 3, 9, 0)
    await dispatcher.drain()
    assert recorder.sent == [(clock.now(), ["2511.00001", "2511.00002"])]

    await publish(store, kw, "2511.00003", clock, cfg)  # today had its digest: tomorrow 09:00
    clock.current = at(BERLIN, 2025, 11, 3, 12, 0)
    await dispatcher.drain()
    assert len(recorder.sent) == 1
    await store.call(sub_repo.change_settings, bob.id, {"digest_time": "instant"}, due_at)
    await dispatcher.drain()
    assert recorder.sent[1:] == [(clock.now(), ["2511.00003"])]
    await store.call(sub_repo.change_settings, bob.id, {"digest_time": None}, due_at)
    await dispatcher.drain()
    assert len(recorder.sent) == 2  # nothing left to send, nothing sent again


# -- config.toml ------------------------------------------------------------------------------
def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("value", ["", "instant", "08:00", "daily 08:00", "weekly mon 08:00"])
def test_a_channels_digest_time_takes_the_three_forms_and_the_old_one(
        tmp_path: Path, value: str) -> None:
    cfg = load_config(write(tmp_path, f'[telegram]\ndigest_time = "{value}"\n'))
    assert cfg.telegram.digest_time == value


@pytest.mark.parametrize(("text", "expected"), [
    ('[slack]\ndigest_time = "weekly someday 08:00"\n',
     "'slack.digest_time' must be \"\" or a time like \"08:00\", or one of instant, daily HH:MM"),
    ('[email]\nhost = "h"\n[[email.subscribers]]\naddress = "a@example.org"\n'
     'digest = "fortnightly"\n',
     "'email.subscribers[0].digest' must be \"\" or a time like \"08:00\", or one of instant"),
    ('[email]\nhost = "h"\n[[email.subscribers]]\naddress = "a@example.org"\n'
     'timezone = "Berln"\n', "'email.subscribers[0].timezone' 'Berln' is not a known time zone"),
])
def test_a_bad_cadence_in_the_config_is_one_line(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value).startswith(f"{path}: {expected}")
    assert "\n" not in str(caught.value)


def email_config(tmp_path: Path, digest: str = "", zone: str = "", *, defaults: str = "",
                 more: str = "") -> Config:
    """Bob (with his own `digest`/`timezone` when given) on the email channel; `defaults` are
    more lines of [email], `more` more of the file."""
    lines = [f'digest = "{digest}"' if digest else "", f'timezone = "{zone}"' if zone else ""]
    return load_config(write(tmp_path, f"""
[arxiv]
keywords = []
[storage]
path = "papers.db"
[email]
host = "smtp.test"
sender = "papers@example.org"
{defaults}
[[email.subscribers]]
address = "{BOB}"
keywords = ["{KEYWORD}"]
{chr(10).join(lines)}
{more}
"""))


def test_config_sets_a_readers_cadence_and_a_readers_later_choice_stays(tmp_path: Path) -> None:
    now = datetime(2025, 11, 3, 12, 0, tzinfo=UTC)
    store = Store(tmp_path / "papers.db")
    try:
        def bob() -> Subscriber:
            found = sub_repo.find(store.db, "email", BOB)
            assert found is not None
            return found

        def settings(b: Subscriber) -> tuple[str | None, str | None]:
            return b.digest_time, b.timezone

        cfg = email_config(tmp_path, "Weekly Mon 8:00", "Asia/Tokyo")
        sync_config(store, cfg, now, on={"email"})
        assert settings(bob()) == ("weekly mon 08:00", "Asia/Tokyo")
        # The reader changes it (chat, CLI, preferences page); the same config keeps it.
        sub_repo.change_settings(store.db, bob().id, {"digest_time": "daily 07:00"},
                                 due_at_factory(cfg, lambda: now))
        sync_config(store, cfg, now, on={"email"})
        assert settings(bob()) == ("daily 07:00", "Asia/Tokyo")
        # The operator changes the config: that applies.
        cfg = email_config(tmp_path, "instant", "Asia/Tokyo")
        sync_config(store, cfg, now, on={"email"})
        assert settings(bob()) == ("instant", "Asia/Tokyo")
        # The operator removes both: the channel's defaults again.
        sync_config(store, email_config(tmp_path), now, on={"email"})
        assert settings(bob()) == (None, None)
    finally:
        store.close()


@pytest.mark.parametrize("text", ["daily \ud800:00", "weekly mo\x07n 08:00", "Ber\u200blin\x1b",
                                  "\ud83d" * 100])
def test_a_refused_value_is_quoted_back_sendable(text: str) -> None:
    """Found by the bad-input fuzz: a lone surrogate echoed back could not be sent at all."""
    for refuse in (parse_cadence, resolve_zone):
        with pytest.raises(SettingError) as caught:
            refuse(text)
        caught.value.message.encode("utf-8")  # no lone surrogate left
        assert not any(c in caught.value.message for c in "\x07\x1b\u200b")
        assert len(caught.value.message) < 300


async def test_a_weekly_digest_missed_while_down_goes_at_the_next_start_and_once_that_week(
        store: AsyncStore, clock: Clock, add_keyword: KeywordFactory,
        add_subscriber: SubscriberFactory) -> None:
    clock.current = at(NY, 2025, 11, 1, 12, 0)  # a Saturday; New York falls back on Sunday
    cfg = email("weekly mon 08:00", NY)
    kw, bob = await reader(store, clock, add_keyword, add_subscriber)
    await publish(store, kw, "2511.00001", clock, cfg)
    clock.current = at(NY, 2025, 11, 5, 9, 0)  # down from Saturday to Wednesday
    recorder = Recorder(clock)
    dispatcher = Dispatcher(store, {"email": recorder}, clock.now, digest_period_factory(cfg))
    await dispatcher.drain()
    assert recorder.sent == [(clock.now(), ["2511.00001"])]  # late, at the start
    assert (await store.call(sub_repo.get, bob.id)).last_digest_week == "2025-W45"
    await publish(store, kw, "2511.00002", clock, cfg)  # that week had its digest
    clock.current = at(NY, 2025, 11, 9, 23, 59)
    await dispatcher.drain()
    assert len(recorder.sent) == 1
    clock.current = at(NY, 2025, 11, 10, 8, 0)
    await dispatcher.drain()
    assert recorder.sent[1:] == [(clock.now(), ["2511.00002"])]
    clock.current = at(NY, 2025, 11, 17, 8, 0)  # a week with nothing new: no empty digest
    await dispatcher.drain()
    assert len(recorder.sent) == 2


def test_a_changed_channel_default_moves_the_waiting_rows_of_readers_who_chose_none(
        tmp_path: Path) -> None:
    now = datetime(2025, 11, 3, 12, 0, tzinfo=UTC)  # a Monday

    def cfg(digest_time: str, zone: str) -> Config:
        return email_config(tmp_path, defaults=f'digest_time = "{digest_time}"\n'
                                               f'timezone = "{zone}"', more=f"""
[[email.subscribers]]
address = "carol@example.org"
keywords = ["{KEYWORD}"]
digest = "weekly fri 09:00"
""")

    store = Store(tmp_path / "papers.db")
    try:
        def due() -> dict[str, datetime]:
            return {r["address"]: datetime.fromisoformat(r["due_at"].replace("Z", "+00:00"))
                    for r in store.db.query(
                        """SELECT b.address, o.due_at FROM outbox o
                           JOIN subscribers b ON b.id = o.subscriber_id""")}

        first = cfg("daily 08:00", "UTC")
        sync_config(store, first, now, on={"email"})
        kw = kw_repo.all_keywords(store.db)[0]
        polls.commit_poll(store.db, kw, [], baseline=True, now=now, max_papers=100,
                          notify_floor=now, total_results=0)
        news = Paper(arxiv_id="2511.00001", version=1, title="t", abstract="a", authors=("A",),
                     published=now, updated=now)
        polls.commit_poll(store.db, kw_repo.get(store.db, kw.id), [news], baseline=False,
                          now=now, max_papers=100, notify_floor=now - timedelta(days=14),
                          total_results=1)
        outbox.release(store.db, now, due_at_factory(first, lambda: now))
        tuesday_8, friday_9 = (datetime(2025, 11, 4, 8, 0, tzinfo=UTC),
                               datetime(2025, 11, 7, 9, 0, tzinfo=UTC))
        assert due() == {BOB: tuesday_8, "carol@example.org": friday_9}

        sync_config(store, cfg("08:00", "UTC"), now, on={"email"})  # the same default
        assert due() == {BOB: tuesday_8, "carol@example.org": friday_9}
        sync_config(store, cfg("daily 20:00", "UTC"), now, on={"email"})
        assert due() == {BOB: datetime(2025, 11, 3, 20, 0, tzinfo=UTC),
                         "carol@example.org": friday_9}  # her own cadence stays
        sync_config(store, cfg("daily 20:00", "Asia/Tokyo"), now, on={"email"})
        assert due() == {BOB: datetime(2025, 11, 4, 11, 0, tzinfo=UTC),  # 20:00 in Tokyo
                         "carol@example.org": datetime(2025, 11, 7, 0, 0, tzinfo=UTC)}
    finally:
        store.close()
