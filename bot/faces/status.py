"""`daily-papers status`: what the operator needs at a glance, read from the store only."""

from __future__ import annotations

from collections.abc import Sequence

from bot.config import Config
from storage import keywords as kw_repo
from storage import outbox
from storage.store import Store


def _when(value: object) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if value else "never"  # type: ignore[attr-defined]


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
    pending = outbox.pending_per_channel(store.db)
    lines.append("Pending notifications: " + (
        ", ".join(f"{c}: {n}" for c, n in sorted(pending.items())) or "none"))
    lines.append("Channels: " + ", ".join(channels))
    lines.append("Warnings: " + ("; ".join(warnings) or "none"))
    lines.append(f"Database: {cfg.storage.path} ({store.size_bytes() / 1e6:.1f} MB)")
    return "\n".join(lines)
