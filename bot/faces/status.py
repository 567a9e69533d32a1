"""`daily-papers status`: what the operator needs at a glance, read from the store only."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from bot.app import utcnow
from bot.config import Config
from bot.poll import calendar, rounds
from storage import announcements, outbox
from storage import keywords as kw_repo
from storage.store import Store


def _when(value: object) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if value else "never"  # type: ignore[attr-defined]


STATES = {"seen": "seen", "missed": "no new papers anywhere (holiday?)",
          "failed": "arXiv unreachable", "unchecked": "not checked", "pending": "pending"}


def arxiv_lines(store: Store, cfg: Config, now: datetime) -> list[str]:
    """The calendar: so a quiet day is never mistaken for a fault."""
    recent = announcements.recent(store.db, 5)
    cur = calendar.last_announcement(now)
    record = next((r for r in recent if r.day == cur.key), None)
    lines = [f"arXiv: {calendar.SCHEDULE} (schedule: {cfg.arxiv.schedule}, "
             f"source: {cfg.arxiv.source})", f"  {rounds.describe(record, now)}"]
    if calendar.is_quiet_day(now):
        lines.append(f"  today ({now.astimezone(calendar.NEW_YORK):%A} in New York) has no "
                     "announcement: nothing new is expected, this is not a fault")
    if recent:
        lines.append("  recent: " + ", ".join(
            f"{r.day} {STATES.get(r.state, r.state)}"
            + (f" ({r.new_papers})" if r.state == "seen" else "") for r in recent))
    reached, failed = announcements.reach(store.db)
    lines.append(f"  arXiv last answered: {_when(reached)}"
                 + (f"; {failed} rounds failed since" if failed else ""))
    return lines


def status_text(store: Store, cfg: Config, channels: Sequence[str],
                warnings: Sequence[str]) -> str:
    """`channels` says which are on (and what would turn the others on), from the registry."""
    lines = ["Keywords:"]
    keywords = kw_repo.all_keywords(store.db)
    if not keywords:
        lines.append("  none yet (run `daily-papers run --once`)")
    for kw in keywords:
        n = kw_repo.window_size(store.db, kw.id)
        origin = "config" if kw.in_config else "subscribers"
        lines.append(f"  {kw.display}  [{origin}]  papers: {n}  last poll: {_when(kw.last_poll)}"
                     f"  last success: {_when(kw.last_success)}")
        if kw.last_error:
            lines.append(f"      last error: {kw.last_error}")
    lines.extend(arxiv_lines(store, cfg, utcnow()))
    pending = outbox.pending_per_channel(store.db)
    lines.append("Pending notifications: " + (
        ", ".join(f"{c}: {n}" for c, n in sorted(pending.items())) or "none"))
    lines.append("Channels: " + ", ".join(channels))
    lines.append("Warnings: " + ("; ".join(warnings) or "none"))
    lines.append(f"Database: {cfg.storage.path} ({store.size_bytes() / 1e6:.1f} MB)")
    return "\n".join(lines)
