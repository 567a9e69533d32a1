"""Web sign-ups waiting for their mailed confirmation link (double opt-in), and the counts the
sign-up page's abuse limits read: confirmation mails per address, sign-ups per client."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum

from sqlite_utils import Database

from storage.database import from_db, to_db, write

KEPT = timedelta(days=4)  # a sign-up row outlives its 48 h link and the daily count


@dataclass(frozen=True)
class SignupRequest:
    """What the form asked for, checked; `client` is a keyed hash, never the raw IP address."""

    address: str
    keywords: tuple[str, ...]
    digest: str | None  # a cadence as stored; None: the channel's
    timezone: str | None
    client: str


@dataclass(frozen=True)
class Limits:
    mails_per_address: int  # per day
    per_client: int  # per hour


@dataclass(frozen=True)
class Signup:
    id: int
    address: str
    keywords: tuple[str, ...]
    digest: str | None
    timezone: str | None
    created_at: datetime
    confirmed_at: datetime | None


def address_key(address: str) -> str:
    """One mailbox however its local part is cased, for counting."""
    return address.casefold()


class Verdict(Enum):
    MAIL = "mail"  # recorded: mail the link
    ADDRESS_LIMIT = "address"  # recorded, no mail: the address had its mails for the day
    CLIENT_LIMIT = "client"  # not recorded: the client made its sign-ups for the hour


def admit(db: Database, req: SignupRequest, limits: Limits,
          now: datetime) -> tuple[Verdict, Signup | None]:
    """Record one sign-up under the limits, in one transaction; the Signup to mail a link for."""
    with write(db):
        db.execute("DELETE FROM signups WHERE created_at < ?", [to_db(now - KEPT)])
        if _count(db, "client = ?", req.client, now - timedelta(hours=1)) >= limits.per_client:
            return Verdict.CLIENT_LIMIT, None
        key = address_key(req.address)
        mails = _count(db, "address_key = ? AND mailed = 1", key, now - timedelta(days=1))
        mailed = mails < limits.mails_per_address
        cur = db.execute(
            """INSERT INTO signups (address, address_key, keywords, digest, timezone, client,
               mailed, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)""",
            [req.address, key, json.dumps(req.keywords), req.digest, req.timezone, req.client,
             int(mailed), to_db(now)])
        if not mailed:
            return Verdict.ADDRESS_LIMIT, None
        return Verdict.MAIL, get(db, cur.lastrowid)


def _count(db: Database, where: str, value: str, since: datetime) -> int:
    row = next(db.query(f"SELECT count(*) AS n FROM signups WHERE {where} AND created_at >= ?",
                        [value, to_db(since)]))
    return row["n"]


def get(db: Database, signup_id: int | None) -> Signup | None:
    row = next(db.query("SELECT * FROM signups WHERE id = ?", [signup_id]), None)
    if row is None:
        return None
    return Signup(row["id"], row["address"], tuple(json.loads(row["keywords"])), row["digest"],
                  row["timezone"], from_db(row["created_at"]),  # type: ignore[arg-type]
                  from_db(row["confirmed_at"]))


def confirmed(db: Database, signup_id: int, now: datetime) -> bool:
    """Mark it used; False when it already was (a second click changes nothing)."""
    with write(db):
        return db.execute("UPDATE signups SET confirmed_at = ? WHERE id = ? AND "
                          "confirmed_at IS NULL", [to_db(now), signup_id]).rowcount > 0
