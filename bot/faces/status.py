"""`daily-papers status`: what the operator needs at a glance, read from the store only."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from bot.config import Config
from bot.poll import calendar, rounds
from bot.poll.clock import utcnow
from storage import announcements, outbox
from storage import keywords as kw_repo
from storage import subscribers as sub_repo
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


def store_warnings(store: Store, off: Mapping[str, str]) -> list[str]:
    """What the store shows to be wrong: keywords whose last poll failed, arXiv out of reach,
    subscribers waiting on a channel that is off (`off`: channel → what turns it on)."""
    found = []
    failing = [kw for kw in kw_repo.all_keywords(store.db)
               if kw.consecutive_failures or kw.rejected]
    if failing:
        names = ", ".join(f"'{kw.display}'" for kw in failing)
        found.append(f"{_count(len(failing), 'keyword')} failed at the last poll: {names} "
                     "(see last error)")
    out_of_reach = sorted((kw.last_poll, kw.last_error) for kw in failing
                          if kw.last_poll and "cannot reach" in (kw.last_error or ""))
    if out_of_reach:
        error = out_of_reach[-1][1]
        found.append(f"arXiv was out of reach at the last poll: "
                     f"{error[error.index('cannot reach'):]}")
    waiting = sub_repo.subscribed_counts(store.db)
    found += [f"{_count(waiting[name], name + ' subscriber')} waiting, but {note}"
              for name, note in off.items() if waiting.get(name)]
    return found


def _count(n: int, thing: str) -> str:
    return f"{n} {thing}{'' if n == 1 else 's'}"
