"""`daily-papers subscribe --digest/--timezone` and `daily-papers settings`, run as real
processes: what the operator sees, and that a bad value is one line (exit 2) changing nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from storage import subscribers as sub_repo
from storage.store import Store
from tests.fakes.daemon import run_cli, write_config

CONFIG = """
[arxiv]
api_url = "http://127.0.0.1:9/never-asked"
keywords = []
[storage]
path = "papers.db"
[digest]
path = ""
[telegram]
digest_time = "daily 07:00"
timezone = "Europe/Berlin"
"""
ACCEPTED = ("use instant, daily HH:MM (e.g. daily 08:00) or weekly DAY HH:MM "
            "(e.g. weekly mon 08:00).")


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return write_config(tmp_path, CONFIG)


def stored(config: Path) -> list[tuple[str, str, str | None, str | None]]:
    store = Store(config.parent / "papers.db")
    try:
        return [(r["address"], r["display"], *_settings(store, r["channel"], r["address"]))
                for r in sub_repo.all_subscriptions(store.db)]
    finally:
        store.close()


def _settings(store: Store, channel: str, address: str) -> tuple[str | None, str | None]:
    sub = sub_repo.find(store.db, channel, address)
    assert sub is not None
    return sub.digest_time, sub.timezone


async def test_subscribe_with_a_cadence_and_zone_then_show_and_change_them(config: Path) -> None:
    code, out, err = await run_cli(config, "subscribe", "--telegram", "42", "--digest",
                                   "Weekly Mon 8:00", "--timezone", "tokyo",
                                   "video", "anomaly", "detection", "-surveillance")
    assert code == 0, err
    assert out.startswith(
        "telegram 42: subscribed to 'video anomaly detection -surveillance' (query: "
        '(ti:"video anomaly detection" OR abs:"video anomaly detection") ANDNOT '
        '(ti:"surveillance" OR abs:"surveillance")); papers arrive as one digest a week, '
        "Monday at 08:00 (Asia/Tokyo time); the next on Monday ")
    assert stored(config) == [("42", "video anomaly detection -surveillance",
                               "weekly mon 08:00", "Asia/Tokyo")]

    code, out, err = await run_cli(config, "settings", "--telegram", "42")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[:3] == ["telegram 42", "  cadence: weekly mon 08:00 (its own)",
                         "  time zone: Asia/Tokyo (its own)"]
    assert lines[3].startswith("  next digest: Monday ") and lines[3].endswith(
        " 08:00 Asia/Tokyo time (if new papers arrived)")

    code, out, err = await run_cli(config, "settings", "--telegram", "42", "--digest", "default",
                                   "--timezone", "default")
    assert code == 0, err
    assert out.splitlines()[:3] == ["telegram 42",
                                    "  cadence: daily 07:00 (the channel's default)",
                                    "  time zone: Europe/Berlin (the channel's default)"]
    assert stored(config)[0][2:] == (None, None)


@pytest.mark.parametrize(("args", "message"), [
    (["--digest", "hourly"], f"error: --digest: 'hourly' is not a cadence; {ACCEPTED}"),
    (["--digest", "weekly someday 08:00"],
     "error: --digest: 'weekly someday 08:00' is not a cadence ('someday' is not a day (mon, tue, "
     f"wed, thu, fri, sat, sun)); {ACCEPTED}"),
    (["--timezone", "Berln"], "error: --timezone: 'Berln' is not a time zone I know. Did you "
                              "mean Europe/Berlin? Use an IANA name such as Europe/Berlin or "
                              "Asia/Tokyo."),
])
async def test_a_bad_value_is_one_line_and_changes_nothing(config: Path, args: list[str],
                                                           message: str) -> None:
    code, _, err = await run_cli(config, "subscribe", "--telegram", "42", "graph networks")
    assert code == 0, err
    before = stored(config)
    for command in (["settings", "--telegram", "42", *args],
                    ["subscribe", "--telegram", "43", *args, "vision transformers"]):
        code, out, err = await run_cli(config, *command)
        assert (code, out, err) == (2, "", message + "\n")
        assert stored(config) == before


async def test_a_mistyped_option_is_not_taken_for_keyword_words(config: Path) -> None:
    code, out, err = await run_cli(config, "subscribe", "--telegram", "42", "--digets", "instant",
                                   "graph", "networks")
    assert (code, out, err) == (2, "", "error: no such option: --digets (see --help)\n")
    assert stored(config) == []


async def test_settings_of_an_unknown_address_say_so(config: Path) -> None:
    for args in ([], ["--digest", "instant"]):
        code, out, err = await run_cli(config, "settings", "--slack", "C0123456789", *args)
        assert (code, out) == (2, "")
        assert err == ("error: slack C0123456789 is not a subscriber here: subscribe it to a "
                       "keyword first.\n")
    assert stored(config) == []
