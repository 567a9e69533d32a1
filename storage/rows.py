"""Row mappers: SQLite rows to the records that flow through the pipeline.

Kept apart from the repositories so that `outbox` and `subscribers` need not import each other.
"""

from __future__ import annotations

import json
from typing import Any

from storage.database import from_db
from storage.records import Keyword, Paper, Subscriber

PAPER_COLUMNS = (
    "arxiv_id, version, title, abstract, authors, comment, journal_ref, doi, "
    "primary_category, categories, published, updated"
)


def paper_from_row(row: dict[str, Any]) -> Paper:
    return Paper(
        arxiv_id=row["arxiv_id"], version=row["version"], title=row["title"] or "",
        abstract=row["abstract"] or "", authors=tuple(json.loads(row["authors"] or "[]")),
        published=from_db(row["published"]), updated=from_db(row["updated"]),  # type: ignore[arg-type]
        primary_category=row["primary_category"] or "",
        categories=tuple(json.loads(row["categories"] or "[]")), comment=row["comment"] or "",
        journal_ref=row["journal_ref"] or "", doi=row["doi"] or "",
    )


def keyword_from_row(row: dict[str, Any]) -> Keyword:
    return Keyword(
        id=row["id"], display=row["display"], canonical=row["canonical"], query=row["query"],
        in_config=bool(row["in_config"]), baseline_query=row["baseline_query"],
        baseline_max_papers=row["baseline_max_papers"], last_poll=from_db(row["last_poll"]),
        last_success=from_db(row["last_success"]), last_error=row["last_error"],
        consecutive_failures=row["consecutive_failures"] or 0, rejected=row["rejected"],
        last_total=row["last_total"], empty_since=from_db(row["empty_since"]),
    )


def subscriber_from_row(row: dict[str, Any]) -> Subscriber:
    return Subscriber(
        id=row["id"], channel=row["channel"], address=row["address"],
        topic=row["topic"] or None, active=bool(row["active"]),
        inactive_reason=row["inactive_reason"], digest_time=row["digest_time"],
        timezone=row["timezone"], permanent_failures=row["permanent_failures"] or 0,
        last_digest_date=row.get("last_digest_date"), last_digest_week=row.get("last_digest_week"),
        config_digest=row.get("config_digest"), config_timezone=row.get("config_timezone"),
        feed_epoch=row.get("feed_epoch") or 0,
    )
