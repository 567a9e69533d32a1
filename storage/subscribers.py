"""Subscribers, their subscriptions, and suppressions (recipient stops config never overrides)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlite_utils import Database

from storage import outbox
from storage.database import to_db, write
from storage.records import Keyword, Subscriber
from storage.rows import keyword_from_row, subscriber_from_row

ALL = ""  # suppression of every keyword of an address


def get(db: Database, subscriber_id: int) -> Subscriber | None:
    rows = list(db.query("SELECT * FROM subscribers WHERE id = ?", [subscriber_id]))
    return subscriber_from_row(rows[0]) if rows else None


def find(db: Database, channel: str, address: str, topic: str | None = None) -> Subscriber | None:
    rows = list(db.query(
        "SELECT * FROM subscribers WHERE channel = ? AND address = ? AND topic = ?",
        [channel, address, topic or ""]))
    return subscriber_from_row(rows[0]) if rows else None


def ensure(db: Database, channel: str, address: str, now: datetime,
           topic: str | None = None) -> Subscriber:
    with write(db):
        found = find(db, channel, address, topic)
        if found:
            return found
        db.execute(
            """INSERT INTO subscribers (channel, address, topic, active, permanent_failures,
               created_at) VALUES (?, ?, ?, 1, 0, ?)""",
            [channel, address, topic or "", to_db(now)])
        return find(db, channel, address, topic)  # type: ignore[return-value]


SETTINGS = frozenset({"digest_time", "timezone", "config_digest", "config_timezone"})


def change_settings(db: Database, subscriber_id: int, changes: Mapping[str, str | None],
                    due_at: Callable[[Subscriber], datetime]) -> tuple[Subscriber, int]:
    """Set a subscriber's cadence and zone (None: the channel's) and move its pending rows to
    the new due time, in one transaction: nothing is lost or sent twice. Returns the subscriber
    as it is now and how many rows moved."""
    unknown = set(changes) - SETTINGS
    assert not unknown, f"not a subscriber setting: {unknown}"
    with write(db):
        if changes:
            assignments = ", ".join(f"{column} = ?" for column in changes)
            db.execute(f"UPDATE subscribers SET {assignments} WHERE id = ?",
                       [*changes.values(), subscriber_id])
        sub = get(db, subscriber_id)
        assert sub is not None, f"no subscriber {subscriber_id}"
        moved = outbox.retime(db, sub.id, due_at(sub)) if sub.active else 0
        return sub, moved


def retime_defaults(db: Database, channel: str, cadence: str, zone: str,
                    due_at: Callable[[Subscriber], datetime]) -> int:
    """The channel's default cadence or zone (config.toml) differs from the last start's: the
    released pending rows of its readers who chose none move to the new due time. The first
    start only records the defaults. Returns how many rows moved."""
    key = f"channel_defaults:{channel}"
    with write(db):
        row = next(db.query("SELECT value FROM settings WHERE key = ?", [key]), None)
        db.execute("""INSERT INTO settings (key, value) VALUES (?, ?)
                      ON CONFLICT (key) DO UPDATE SET value = excluded.value""",
                   [key, json.dumps([cadence, zone])])
        if row is None:
            return 0
        old_cadence, old_zone = json.loads(row["value"])
        subs = [subscriber_from_row(r) for r in db.query(
            """SELECT * FROM subscribers WHERE channel = ? AND active = 1
               AND ((digest_time IS NULL AND ?) OR (timezone IS NULL AND ?))
               AND id IN (SELECT subscriber_id FROM outbox
                          WHERE status = 'pending' AND due_at IS NOT NULL)""",
            [channel, old_cadence != cadence, old_zone != zone])]
        return sum(outbox.retime(db, sub.id, due_at(sub)) for sub in subs)


def subscriptions(db: Database, subscriber_id: int) -> list[tuple[Keyword, str]]:
    rows = db.query(
        """SELECT k.*, s.source AS sub_source FROM subscriptions s
           JOIN keywords k ON k.id = s.keyword_id WHERE s.subscriber_id = ? ORDER BY k.display""",
        [subscriber_id])
    return [(keyword_from_row(r), r["sub_source"]) for r in rows]


def all_subscriptions(db: Database, channel: str | None = None) -> list[dict[str, Any]]:
    sql = """SELECT b.channel, b.address, b.topic, b.active, b.inactive_reason, k.display,
                    k.query, s.source
             FROM subscriptions s JOIN subscribers b ON b.id = s.subscriber_id
             JOIN keywords k ON k.id = s.keyword_id"""
    params: list[Any] = []
    if channel:
        sql += " WHERE b.channel = ?"
        params.append(channel)
    return list(db.query(sql + " ORDER BY b.channel, b.address, k.display", params))


def subscribe(db: Database, sub: Subscriber, keyword: Keyword, source: str,
              now: datetime) -> bool:
    """True when the subscription is new. A user's own subscribe lifts their earlier stop."""
    with write(db):
        if source == "user":
            db.execute(
                """DELETE FROM suppressions WHERE channel = ? AND address = ? AND topic = ?
                   AND canonical IN (?, ?)""",
                [sub.channel, sub.address, sub.topic or "", keyword.canonical, ALL])
        existed = next(db.query(
            "SELECT 1 AS x FROM subscriptions WHERE subscriber_id = ? AND keyword_id = ?",
            [sub.id, keyword.id]), None) is not None
        db.execute(
            """INSERT INTO subscriptions (subscriber_id, keyword_id, source, created_at)
               VALUES (?, ?, ?, ?) ON CONFLICT DO UPDATE SET
               source = CASE WHEN excluded.source = 'user' THEN 'user' ELSE source END""",
            [sub.id, keyword.id, source, to_db(now)])
        return not existed


def count(db: Database, subscriber_id: int) -> int:
    return next(db.query("SELECT count(*) AS n FROM subscriptions WHERE subscriber_id = ?",
                         [subscriber_id]))["n"]


def unsubscribe(db: Database, sub: Subscriber, keyword: Keyword, now: datetime,
                *, reason: str = "unsubscribed") -> bool:
    """Stop one keyword for one recipient; recorded so config sync never brings it back."""
    with write(db):
        cur = db.execute("DELETE FROM subscriptions WHERE subscriber_id = ? AND keyword_id = ?",
                         [sub.id, keyword.id])
        outbox.remove_keyword(db, sub.id, keyword.id)
        suppress(db, sub, keyword.canonical, reason, now)
        return cur.rowcount > 0


def unsubscribe_all(db: Database, sub: Subscriber, now: datetime,
                    *, reason: str = "unsubscribed") -> int:
    """Stop everything; the private feed URLs handed out so far stop working too."""
    with write(db):
        n = db.execute("DELETE FROM subscriptions WHERE subscriber_id = ?", [sub.id]).rowcount
        db.execute("UPDATE subscribers SET feed_epoch = feed_epoch + 1 WHERE id = ?", [sub.id])
        outbox.drop_pending(db, sub.id)
        suppress(db, sub, ALL, reason, now)
        return n


def suppress(db: Database, sub: Subscriber, canonical: str, reason: str, now: datetime) -> None:
    """A recipient-side stop for one keyword (canonical form) or ALL; config never undoes it."""
    db.execute(
        """INSERT INTO suppressions (channel, address, topic, canonical, reason, created_at)
           VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO UPDATE SET reason = excluded.reason""",
        [sub.channel, sub.address, sub.topic or "", canonical, reason, to_db(now)])


def is_suppressed(db: Database, channel: str, address: str, canonical: str,
                  topic: str | None = None) -> str | None:
    row = next(db.query(
        """SELECT reason FROM suppressions WHERE channel = ? AND address = ? AND topic = ?
           AND canonical IN (?, ?)""", [channel, address, topic or "", canonical, ALL]), None)
    return row["reason"] if row else None


def deactivate(db: Database, subscriber_id: int, reason: str) -> None:
    """Blocked bot, unknown channel, hard bounce: stop and drop everything pending."""
    with write(db):
        db.execute("UPDATE subscribers SET active = 0, inactive_reason = ? WHERE id = ?",
                   [reason, subscriber_id])
        outbox.drop_pending(db, subscriber_id)


def deactivate_address(db: Database, channel: str, address: str, reason: str) -> int:
    """A whole chat is gone (bot blocked or removed): every forum topic of it, at once."""
    with write(db):
        subs = [s for s in at_address(db, channel, address) if s.active]
        for sub in subs:
            deactivate(db, sub.id, reason)
        return len(subs)


def reactivate(db: Database, subscriber_id: int) -> bool:
    with write(db):
        return db.execute(
            """UPDATE subscribers SET active = 1, inactive_reason = NULL, permanent_failures = 0
               WHERE id = ? AND active = 0""", [subscriber_id]).rowcount > 0


def add_permanent_failure(db: Database, subscriber_id: int) -> int:
    with write(db):
        db.execute("UPDATE subscribers SET permanent_failures = permanent_failures + 1 "
                   "WHERE id = ?", [subscriber_id])
        return next(db.query("SELECT permanent_failures AS n FROM subscribers WHERE id = ?",
                             [subscriber_id]))["n"]


def reset_permanent_failures(db: Database, subscriber_id: int) -> None:
    db.execute("UPDATE subscribers SET permanent_failures = 0 WHERE id = ? "
               "AND permanent_failures > 0", [subscriber_id])


def move_address(db: Database, channel: str, old: str, new: str) -> bool:
    """A Telegram group that became a supergroup keeps everything, in one transaction."""
    with write(db):
        rows = list(db.query("SELECT id, topic FROM subscribers WHERE channel = ? AND address = ?",
                             [channel, old]))
        for r in rows:
            target = find(db, channel, new, r["topic"])
            if target is None:
                db.execute("UPDATE subscribers SET address = ? WHERE id = ?", [new, r["id"]])
                continue
            db.execute("""INSERT OR IGNORE INTO subscriptions (subscriber_id, keyword_id, source,
                          created_at) SELECT ?, keyword_id, source, created_at FROM subscriptions
                          WHERE subscriber_id = ?""", [target.id, r["id"]])
            # A paper pending for both: one message naming the keywords of both.
            db.execute("""UPDATE outbox AS t SET keyword_ids = (
                              SELECT json_group_array(value) FROM (
                                  SELECT value FROM json_each(t.keyword_ids) UNION
                                  SELECT value FROM json_each(o.keyword_ids)))
                          FROM outbox AS o
                          WHERE o.subscriber_id = ? AND o.status = 'pending'
                            AND t.subscriber_id = ? AND t.arxiv_id = o.arxiv_id
                            AND t.status = 'pending'""", [r["id"], target.id])
            db.execute("""UPDATE OR IGNORE outbox SET subscriber_id = ? WHERE subscriber_id = ?""",
                       [target.id, r["id"]])
            db.execute("DELETE FROM outbox WHERE subscriber_id = ?", [r["id"]])
            db.execute("DELETE FROM subscriptions WHERE subscriber_id = ?", [r["id"]])
            db.execute("DELETE FROM subscribers WHERE id = ?", [r["id"]])
        db.execute("UPDATE suppressions SET address = ? WHERE channel = ? AND address = ?",
                   [new, channel, old])
        return bool(rows)


def sync_config(db: Database, channel: str, wanted: Mapping[str, Sequence[Keyword]],
                now: datetime) -> list[str]:
    """Make the config's subscriptions of one channel exist; returns suppression conflicts.

    A subscription whose source is config and that config no longer names is removed.
    """
    conflicts: list[str] = []
    with write(db):
        keep: set[tuple[int, int]] = set()
        for address, kws in wanted.items():
            sub = ensure(db, channel, address, now)
            for kw in kws:
                reason = is_suppressed(db, channel, address, kw.canonical)
                if reason:
                    conflicts.append(f"{channel} {address} '{kw.display}': {reason}")
                    continue
                db.execute(
                    """INSERT OR IGNORE INTO subscriptions (subscriber_id, keyword_id, source,
                       created_at) VALUES (?, ?, 'config', ?)""", [sub.id, kw.id, to_db(now)])
                keep.add((sub.id, kw.id))
        stale = [(r["subscriber_id"], r["keyword_id"]) for r in db.query(
            """SELECT s.subscriber_id, s.keyword_id FROM subscriptions s
               JOIN subscribers b ON b.id = s.subscriber_id
               WHERE b.channel = ? AND s.source = 'config'""", [channel])]
        for sid, kid in stale:
            if (sid, kid) not in keep:
                db.execute("DELETE FROM subscriptions WHERE subscriber_id = ? AND keyword_id = ?",
                           [sid, kid])
                outbox.remove_keyword(db, sid, kid)
    return conflicts


def active_counts(db: Database) -> dict[str, int]:
    return {r["channel"]: r["n"] for r in db.query(
        "SELECT channel, count(*) AS n FROM subscribers WHERE active = 1 GROUP BY channel")}


def pause(db: Database, subscriber_id: int, reason: str) -> None:
    """Like deactivate, but pending rows wait for the recipient to come back."""
    with write(db):
        db.execute("UPDATE subscribers SET active = 0, inactive_reason = ? WHERE id = ?",
                   [reason, subscriber_id])


def subscribers_of(db: Database, keyword_id: int) -> list[Subscriber]:
    return [subscriber_from_row(r) for r in db.query(
        """SELECT b.* FROM subscribers b JOIN subscriptions s ON s.subscriber_id = b.id
           WHERE s.keyword_id = ? AND b.active = 1 ORDER BY b.id""", [keyword_id])]


# --- added for the Telegram face and bot/commands.py (every topic of one chat) ---------------


def at_address(db: Database, channel: str, address: str) -> list[Subscriber]:
    """Every subscriber of one chat or channel, whatever its forum topic, active or not."""
    return [subscriber_from_row(r) for r in db.query(
        "SELECT * FROM subscribers WHERE channel = ? AND address = ? ORDER BY id",
        [channel, address])]


def subscribed_counts(db: Database) -> dict[str, int]:
    """Active subscribers with at least one subscription, per channel."""
    return {r["channel"]: r["n"] for r in db.query(
        """SELECT b.channel, count(DISTINCT b.id) AS n FROM subscribers b
           JOIN subscriptions s ON s.subscriber_id = b.id WHERE b.active = 1
           GROUP BY b.channel""")}
