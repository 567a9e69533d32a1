"""The schema as versioned sqlite-utils migrations: one function per step, never edited later."""

from __future__ import annotations

from sqlite_utils import Database, Migrations

MIGRATIONS = Migrations("daily_papers")


@MIGRATIONS()
def m001_core(db: Database) -> None:
    """Papers, keywords, what each keyword has seen and shows, the lease and settings."""
    db.table("papers").create(
        {"arxiv_id": str, "version": int, "title": str, "abstract": str, "authors": str,
         "comment": str, "journal_ref": str, "doi": str, "primary_category": str,
         "categories": str, "published": str, "updated": str, "first_seen": str},
        pk="arxiv_id", not_null={"version", "title", "published", "updated", "first_seen"},
    )
    db.table("keywords").create(
        {"id": int, "display": str, "canonical": str, "query": str, "in_config": int,
         "baseline_query": str, "baseline_max_papers": int, "last_poll": str,
         "last_success": str, "last_error": str, "consecutive_failures": int, "rejected": str,
         "last_total": int, "empty_since": str, "created_at": str},
        pk="id", not_null={"display", "canonical", "query"},
        defaults={"in_config": 0, "consecutive_failures": 0},
    )
    db.table("keywords").create_index(["canonical"], unique=True)
    db.table("keyword_seen").create(
        {"keyword_id": int, "arxiv_id": str, "first_seen": str},
        pk=("keyword_id", "arxiv_id"), foreign_keys=[("keyword_id", "keywords", "id")],
    )
    db.table("keyword_seen").create_index(["first_seen"])
    db.table("keyword_papers").create(
        {"keyword_id": int, "arxiv_id": str, "published": str},
        pk=("keyword_id", "arxiv_id"),
        foreign_keys=[("keyword_id", "keywords", "id"), ("arxiv_id", "papers", "arxiv_id")],
    )
    db.table("keyword_papers").create_index(["keyword_id", "published"])
    db.table("instance").create(
        {"id": int, "holder": str, "pid": int, "host": str, "heartbeat": str}, pk="id"
    )
    db.table("settings").create({"key": str, "value": str}, pk="key")


@MIGRATIONS()
def m002_channels(db: Database) -> None:
    """Subscribers on every channel, their subscriptions and stops, and the outbox."""
    db.table("subscribers").create(
        {"id": int, "channel": str, "address": str, "topic": str, "active": int,
         "inactive_reason": str, "digest_time": str, "timezone": str,
         "permanent_failures": int, "last_digest_date": str, "created_at": str},
        pk="id", not_null={"channel", "address", "topic"},
        defaults={"topic": "", "active": 1, "permanent_failures": 0},
    )
    db.table("subscribers").create_index(["channel", "address", "topic"], unique=True)
    db.table("subscriptions").create(
        {"subscriber_id": int, "keyword_id": int, "source": str, "created_at": str},
        pk=("subscriber_id", "keyword_id"),
        foreign_keys=[("subscriber_id", "subscribers", "id"), ("keyword_id", "keywords", "id")],
    )
    db.table("subscriptions").create_index(["keyword_id"])
    db.table("suppressions").create(
        {"channel": str, "address": str, "topic": str, "canonical": str, "reason": str,
         "created_at": str},
        pk=("channel", "address", "topic", "canonical"),
    )
    db.table("outbox").create(
        {"id": int, "subscriber_id": int, "arxiv_id": str, "keyword_ids": str, "due_at": str,
         "status": str, "attempts": int, "next_attempt": str, "last_error": str,
         "created_at": str, "sent_at": str},
        pk="id", not_null={"subscriber_id", "arxiv_id", "keyword_ids", "status"},
        defaults={"status": "pending", "attempts": 0},
        foreign_keys=[("subscriber_id", "subscribers", "id"), ("arxiv_id", "papers", "arxiv_id")],
    )
    db.table("outbox").create_index(["subscriber_id", "arxiv_id"], unique=True)
    db.table("outbox").create_index(["status", "due_at"])


@MIGRATIONS()
def m003_reference_indexes(db: Database) -> None:
    """Index the columns that reference papers: pruning a paper checks its foreign keys, and
    without these each check scanned the whole outbox (minutes a night after a year of use).
    And the pending rows by subscriber: the dispatcher's reads must not walk 90 days of sent
    rows, nor every subscriber's pending rows for each subscriber (bench/bench_year.py)."""
    db.table("keyword_papers").create_index(["arxiv_id"])
    db.table("outbox").create_index(["arxiv_id"])
    db.execute("CREATE INDEX idx_outbox_pending ON outbox (subscriber_id, due_at) "
               "WHERE status = 'pending'")


@MIGRATIONS()
def m004_pending_due_index(db: Database) -> None:
    """The dispatcher finds due rows through a partial index of the pending rows by due time.
    The (status, due_at) index it replaces also held every sent and failed row of the 90 days
    they are kept: millions of entries after a year, rewritten on every mark_sent."""
    db.execute("CREATE INDEX idx_outbox_due_pending ON outbox (due_at) WHERE status = 'pending'")
    db.execute("DROP INDEX IF EXISTS idx_outbox_status_due_at")


@MIGRATIONS()
def m005_announcements(db: Database) -> None:
    """arXiv's expected announcements and what each brought: seen, missed (no new papers
    anywhere, a holiday), failed (arXiv not reachable) or unchecked (the daemon was down).
    And where the OAI-PMH harvest of each set resumes."""
    db.table("announcements").create(
        {"day": str, "expected_at": str, "state": str, "new_papers": int, "attempts": int,
         "reached": int, "visible_at": str, "last_attempt": str, "settled_at": str},
        pk="day", not_null={"expected_at", "state"},
        defaults={"state": "pending", "new_papers": 0, "attempts": 0, "reached": 0},
    )
    db.table("harvest_sets").create(
        {"set_spec": str, "datestamp": str, "last_harvest": str}, pk="set_spec",
    )


@MIGRATIONS()
def m006_fanout(db: Database) -> None:
    """What a poll owes subscribers, as one durable record per (keyword, new paper) written in
    its transaction and expanded into outbox rows afterwards in short batches (no single
    transaction writes a million rows); a keyword's subscribers in id order for that expansion;
    and the outbox's rows per (channel, status) kept by triggers, so /healthz, /metrics and
    `status` never count the whole outbox."""
    db.execute("""CREATE TABLE fanout (
        id INTEGER PRIMARY KEY,
        keyword_id INTEGER NOT NULL REFERENCES keywords (id),
        arxiv_id TEXT NOT NULL REFERENCES papers (arxiv_id),
        created_at TEXT NOT NULL,
        next_subscriber INTEGER NOT NULL DEFAULT 0,
        UNIQUE (keyword_id, arxiv_id))""")
    db.execute("CREATE INDEX idx_fanout_arxiv_id ON fanout (arxiv_id)")
    db.execute("CREATE INDEX idx_subscriptions_keyword_subscriber "
               "ON subscriptions (keyword_id, subscriber_id)")
    db.execute("DROP INDEX IF EXISTS idx_subscriptions_keyword_id")
    db.execute("""CREATE TABLE outbox_tally (
        channel TEXT NOT NULL, status TEXT NOT NULL, n INTEGER NOT NULL,
        PRIMARY KEY (channel, status)) WITHOUT ROWID""")
    _count_outbox(db)
    channel = "(SELECT channel FROM subscribers WHERE id = {}.subscriber_id)"
    add = f"""INSERT INTO outbox_tally (channel, status, n)
              VALUES ({channel.format("NEW")}, NEW.status, 1)
              ON CONFLICT (channel, status) DO UPDATE SET n = n + 1;"""
    remove = f"""UPDATE outbox_tally SET n = n - 1
                 WHERE channel = {channel.format("OLD")} AND status = OLD.status;"""
    db.execute(f"CREATE TRIGGER outbox_tally_insert AFTER INSERT ON outbox BEGIN {add} END")
    db.execute(f"CREATE TRIGGER outbox_tally_delete AFTER DELETE ON outbox BEGIN {remove} END")
    db.execute(f"""CREATE TRIGGER outbox_tally_update AFTER UPDATE OF status, subscriber_id
                   ON outbox WHEN OLD.status IS NOT NEW.status
                   OR OLD.subscriber_id IS NOT NEW.subscriber_id BEGIN {remove} {add} END""")


@MIGRATIONS()
def m007_reader_cadence(db: Database) -> None:
    """Weekly digests are recorded per local ISO week as daily ones are per local date; and the
    cadence and zone config.toml last set for a reader, applied again only when they change."""
    for column in ("last_digest_week", "config_digest", "config_timezone"):
        db.table("subscribers").add_column(column, str)


@MIGRATIONS()
def m008_tally_insertions_by_code(db: Database) -> None:
    """Outbox insertions are counted by storage/fanout (the only code that inserts rows, a
    batch at a time): a tally trigger per inserted row cost more than the row itself. The
    tally is counted afresh once, so it starts exact."""
    db.execute("DROP TRIGGER IF EXISTS outbox_tally_insert")
    db.execute("DELETE FROM outbox_tally")
    _count_outbox(db)


def _count_outbox(db: Database) -> None:
    db.execute("""INSERT INTO outbox_tally (channel, status, n)
                  SELECT b.channel, o.status, count(*) FROM outbox o
                  JOIN subscribers b ON b.id = o.subscriber_id GROUP BY b.channel, o.status""")


@MIGRATIONS()
def m009_signups(db: Database) -> None:
    """Sign-ups from the web page waiting for their mailed link (double opt-in), kept two days
    past expiry: they also count confirmation mails per address and sign-ups per client."""
    db.table("signups").create(
        {"id": int, "address": str, "address_key": str, "keywords": str, "digest": str,
         "timezone": str, "client": str, "mailed": int, "created_at": str,
         "confirmed_at": str},
        pk="id", not_null={"address", "address_key", "keywords", "client", "created_at"},
        defaults={"mailed": 0},
    )
    db.table("signups").create_index(["address_key", "created_at"])
    db.table("signups").create_index(["client", "created_at"])


@MIGRATIONS()
def m010_feed_epoch(db: Database) -> None:
    """A reader's private feed URL is signed with this number; unsubscribing from everything
    raises it, so every URL handed out before stops working for good."""
    db.table("subscribers").add_column("feed_epoch", int, not_null_default=0)


def known_names() -> set[str]:
    return {m.name for m in MIGRATIONS._migrations}
