"""The `daily-papers` command line: a thin click face; each command calls one library function."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, NoReturn, TypeVar

import click

from bot import channels
from bot.config import AddressError, Config, Secrets, config_named_by, config_path, load_config
from bot.poll.clock import utcnow

if TYPE_CHECKING:  # the commands import what they need when they run: `--help` stays fast
    from pathlib import Path

    from bot.faces.commands import SubscribeResult
    from bot.faces.progress import TerminalProgress
    from bot.faces.settings import Settings
    from bot.poll.cycle import CycleReport
    from storage.store import Store

log = logging.getLogger("bot.cli")
T = TypeVar("T")

BUSY_TIMEOUT = 1.0  # seconds: one try for another process's lock before the operator is told,
LOCK_PATIENCE = 30.0  # then this much longer, retrying (the daemon's writes are short)


@dataclass
class Context:
    config_arg: str | None
    verbose: bool
    log_format: str
    _cfg: Config | None = None

    @property
    def cfg(self) -> Config:
        if self._cfg is None:
            self._cfg = load_config(config_path(self.config_arg),
                                    named_by=config_named_by(self.config_arg))
        return self._cfg


def fail(message: str, code: int = 2) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


# Errors the operator must fix, by module: looked up only once one was raised (its module is
# loaded by then), so no command imports the others' modules to catch them.
OPERATOR_ERRORS = (("bot.config", "ConfigError"), ("storage.database", "SchemaError"),
                   ("storage.opening", "LeaseHeld"),
                   ("storage.faults", "StoreUnusable"), ("bot.render.digest", "DigestRefused"),
                   ("bot.sync", "SyncError"), ("bot.faces.web", "WebUnavailable"))


def is_operator_error(exc: BaseException) -> bool:
    for module, name in OPERATOR_ERRORS:
        kind = getattr(sys.modules.get(module), name, None)
        if kind is not None and isinstance(exc, kind):
            return True
    return False


@contextmanager
def operator_errors() -> Iterator[None]:
    """Errors the operator must fix become one line and an exit code, never a traceback."""
    try:
        yield
    except Exception as exc:
        if not is_operator_error(exc):
            raise
        fail(str(exc))


@contextmanager
def open_store(ctx: Context) -> Iterator[Store]:
    """The store for a with-block; a fault at open is one line (`with_store` also waits out
    another process's lock, for work it can run again)."""
    from storage.opening import prepare_store

    with operator_errors():
        store = prepare_store(ctx.cfg.storage.path, migrate=False, busy_timeout=BUSY_TIMEOUT)
    try:
        yield store
    finally:
        store.close()


def with_store(ctx: Context, work: Callable[[Store], T]) -> T:
    """Open the store and do one command's work on it. A database another process keeps
    locked: say so, wait and retry for LOCK_PATIENCE seconds, then one line; any other fault
    of the file (full disk, corrupt, unreachable folder): one line at once."""
    import sqlite3

    from storage.faults import StoreUnusable
    from storage.opening import prepare_store

    with operator_errors():  # the schema, the lease; a lock is waited for below
        path = ctx.cfg.storage.path
        deadline: float | None = None
        while True:
            try:
                store = prepare_store(path, migrate=False, busy_timeout=BUSY_TIMEOUT)
                try:
                    return work(store)
                finally:
                    store.close()
            except (StoreUnusable, sqlite3.Error) as exc:
                fault = exc if isinstance(exc, StoreUnusable) else StoreUnusable(path, exc)
                if not fault.locked or (deadline is not None and time.monotonic() >= deadline):
                    fail(str(fault))
                if deadline is None:
                    deadline = time.monotonic() + LOCK_PATIENCE
                    click.echo(f"the database is busy (another daily-papers process is writing "
                               f"{path}); waiting up to {LOCK_PATIENCE:g} s for it", err=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_arg", metavar="PATH",
              help="config.toml to use (default: $DAILY_PAPERS_CONFIG, else ./config.toml).")
@click.option("--verbose", is_flag=True, help="Debug logging (HTTP libraries stay at WARNING).")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help="Log line format.")
@click.version_option(package_name="daily-papers")
@click.pass_context
def cli(click_ctx: click.Context, config_arg: str | None, verbose: bool, log_format: str) -> None:
    """Daily Papers: arXiv keyword alerts, a README digest, Telegram, Slack and email."""
    from bot.logs import setup_logging

    setup_logging(verbose=verbose, fmt=log_format, secrets=Secrets.from_env().values(),
                  quiet=channels.loggers())
    click_ctx.obj = Context(config_arg, verbose, log_format)


@cli.command()
@click.option("--once", is_flag=True,
              help="One cycle: poll, deliver what is due, write the digest, exit.")
@click.option("--strict", is_flag=True, help="With --once: exit 3 when any keyword failed.")
@click.pass_obj
def run(ctx: Context, once: bool, strict: bool) -> None:
    """Run the daemon until SIGINT/SIGTERM (or one cycle with --once)."""
    import asyncio

    from bot.daemon import Daemon

    if strict and not once:
        fail("--strict goes with --once (it sets the exit code of one cycle): "
             "daily-papers run --once --strict")

    with operator_errors():
        cfg = ctx.cfg
        progress = terminal_progress() if once and sys.stderr.isatty() else None
        with progress or nullcontext():
            daemon = Daemon(cfg, Secrets.from_env(), on_polled=progress)
            report = asyncio.run(daemon.run(once=once))
    if once:
        assert report is not None
        sys.exit(report_once(report, strict))


def report_once(report: CycleReport, strict: bool) -> int:
    """`run --once`'s closing lines; the last counts against every keyword the cycle set out
    to poll and names the failed and the untried ones. Returns the exit code."""
    from bot.poll.cycle import names

    failed = report.failed
    failures = ", ".join(f"'{o.keyword.display}' ({o.error})" for o in failed)
    _harvest_lines(report)
    click.echo(f"{len(report.completed)} of {len(report.planned)} keywords polled, "
               f"{report.new_papers} new papers; failed keywords: {failures or 'none'}"
               + (f"; not tried: {names(report.untried)}" if report.untried else ""))
    if strict and (failed or report.harvest_error):
        return 3
    nothing = not report.completed
    if (report.outcomes and nothing and failed) or (report.harvest_error and nothing):
        return 1
    return 0


def _harvest_lines(report: CycleReport) -> None:
    """What the harvest did, and a quiet day said as such (not as a fault)."""
    from bot.poll.rounds import quiet_line

    if report.harvest is not None:
        click.echo(f"harvest: {report.harvest.records} records, {report.harvest.new_count} "
                   "new for keywords")
    if report.harvest_error:
        click.echo(f"harvest failed: {report.harvest_error}")
    if report.new_papers == 0 and report.reached:
        click.echo(quiet_line(utcnow()))


def terminal_progress() -> TerminalProgress:
    """A bar that owns the terminal's last line; it replaces the per-keyword log lines."""
    from bot.faces.progress import TerminalProgress

    logging.getLogger("bot.poll.cycle").setLevel(logging.WARNING)
    return TerminalProgress()


@cli.command()
@click.pass_obj
def digest(ctx: Context) -> None:
    """Rewrite the README digest (and the HTML page, the feed files) from the store, without
    the network."""
    from bot.render.job import output_problem, outputs, write_digest_sync

    with operator_errors():
        files = outputs(ctx.cfg)
    if not files:
        fail("the digest is off ([digest] path, html_path and feeds_dir are empty)")
    for path in files:
        if problem := output_problem(ctx.cfg, path):
            fail(problem)  # before the store opens: a refused digest leaves nothing behind

    def work(store: Store) -> list[Path]:
        with operator_errors():
            _sync_keywords(store, ctx.cfg)
            return write_digest_sync(store, ctx.cfg, utcnow())

    changed = with_store(ctx, work)
    for path in files:
        click.echo(f"{path}: {'written' if path in changed else 'unchanged'}")


def _sync_keywords(store: Store, cfg: Config) -> None:
    from bot.sync import sync_config

    sync_config(store, cfg, utcnow())


@cli.command()
@click.pass_obj
def status(ctx: Context) -> None:
    """Keywords with paper counts, last poll and error; pending outbox; warnings; database size."""
    from bot.faces.status import status_text, store_warnings

    secrets = Secrets.from_env()
    with operator_errors():
        cfg = ctx.cfg
    off = {c: note for c in channels.names() if (note := channels.off_note(c, cfg, secrets))}
    click.echo(with_store(ctx, lambda store: status_text(
        store, cfg, channels.states(cfg, secrets),
        channels.warnings(cfg, secrets) + store_warnings(store, off))))


@cli.command()
@click.pass_obj
def migrate(ctx: Context) -> None:
    """Apply schema migrations (after a VACUUM INTO backup), holding the lease."""
    import os
    import socket

    from storage import database, lease
    from storage.opening import prepare_store

    holder = f"migrate:{socket.gethostname()}:{os.getpid()}"
    with operator_errors():
        store = prepare_store(ctx.cfg.storage.path, migrate=True, holder=holder)
    try:
        lease.release(store.db, holder)
        click.echo(f"database at schema {database.schema_version(store.db)}")
    finally:
        store.close()


def _address_options(fn: Callable) -> Callable:
    for channel in reversed(channels.registered()):
        fn = click.option(channel.option, channel.name, metavar=channel.metavar,
                          help=channel.help)(fn)
    return fn


def _one_address(addresses: dict[str, str | None]) -> tuple[str, str]:
    given = [(name, value) for name, value in addresses.items() if value]
    if len(given) != 1:
        options = [f"{c.option} {c.metavar}" for c in channels.registered()]
        fail(f"name exactly one of {', '.join(options[:-1])} or {options[-1]}")
    (name, value), = given
    channel = channels.named(name)
    try:
        return name, channel.address(value)
    except AddressError as exc:
        fail(f"{channel.option} {exc.message}")


def _keyword(words: tuple[str, ...]) -> str:
    """KEYWORD's words; `-word` is an exclusion (unknown options reach here), `--x` a typo."""
    typo = next((w for w in words if w.startswith("--")), None)
    if typo is not None:
        fail(f"no such option: {typo[:40]} (see --help)")
    return " ".join(words)


def _setting_options(fn: Callable) -> Callable:
    fn = click.option("--timezone", metavar="ZONE",
                      help='IANA time zone of the digest times, e.g. "Asia/Tokyo" '
                           '("default": the channel\'s).')(fn)
    return click.option("--digest", metavar="CADENCE",
                        help='"instant", "daily 08:00" or "weekly mon 08:00" '
                             '("default": the channel\'s).')(fn)


@cli.command(context_settings={"ignore_unknown_options": True})  # KEYWORD -word: an exclusion
@_address_options
@_setting_options
@click.argument("keyword", nargs=-1, required=True)
@click.pass_obj
def subscribe(ctx: Context, keyword: tuple[str, ...], digest: str | None, timezone: str | None,
              **addresses: str | None) -> None:
    """Subscribe an address to KEYWORD (polled from the next cycle on)."""
    from bot.faces.commands import CommandError, subscribe_with_settings

    channel, address = _one_address(addresses)
    _check_settings(digest, timezone)

    def work(store: Store) -> tuple[SubscribeResult, Settings]:
        try:
            with setting_errors():
                return subscribe_with_settings(store, ctx.cfg, channel, address,
                                               _keyword(keyword), utcnow(), digest=digest,
                                               timezone=timezone)
        except CommandError as exc:
            fail(exc.message)

    result, shown = with_store(ctx, work)
    state = "subscribed" if result.new_subscription else "already subscribed"
    click.echo(f"{channel} {address}: {state} to '{result.keyword.display}' "
               f"(query: {result.keyword.query}); papers arrive {shown.describe()}")
    if note := channels.off_note(channel, ctx.cfg, Secrets.from_env()):
        click.echo(f"warning: {note}; the subscription is kept and delivered once it is on",
                   err=True)


@cli.command()
@_address_options
@_setting_options
@click.pass_obj
def settings(ctx: Context, digest: str | None, timezone: str | None,
             **addresses: str | None) -> None:
    """Show or change one subscriber's cadence (--digest) and time zone (--timezone)."""
    from bot.faces.settings import change_settings

    channel, address = _one_address(addresses)
    _check_settings(digest, timezone)

    def work(store: Store) -> Settings:
        with setting_errors():
            return change_settings(store, ctx.cfg, channel, address, utcnow(), digest=digest,
                                   timezone=timezone, create=False)

    shown = with_store(ctx, work)
    click.echo("\n".join(shown.lines()))


def _check_settings(digest: str | None, timezone: str | None) -> None:
    """Bad values stop here, naming the option, before the store is opened."""
    from bot.deliver.cadence import SettingError
    from bot.faces.settings import clean_digest, clean_zone

    for option, value, clean in (("--digest", digest, clean_digest),
                                 ("--timezone", timezone, clean_zone)):
        try:
            if value is not None:
                clean(value)
        except SettingError as exc:
            fail(f"{option}: {exc.message}")


@contextmanager
def setting_errors() -> Iterator[None]:
    """A cadence or zone the reader cannot have: one line, exit 2, nothing changed."""
    from bot.deliver.cadence import SettingError

    try:
        yield
    except SettingError as exc:
        fail(exc.message)


@cli.command(context_settings={"ignore_unknown_options": True})
@_address_options
@click.option("--all", "everything", is_flag=True, help="Every keyword of the address.")
@click.argument("keyword", nargs=-1)
@click.pass_obj
def unsubscribe(ctx: Context, everything: bool, keyword: tuple[str, ...],
                **addresses: str | None) -> None:
    """Unsubscribe an address from KEYWORD, or from everything with --all."""
    from bot.faces.commands import CommandError, unsubscribe_address

    if bool(keyword) == everything:
        fail("give either a KEYWORD or --all")
    channel, address = _one_address(addresses)

    def work(store: Store) -> str:
        try:
            return unsubscribe_address(store, channel, address,
                                       None if everything else _keyword(keyword), utcnow())
        except CommandError as exc:
            fail(exc.message)

    text = with_store(ctx, work)
    click.echo(text)


@cli.command()
@click.option("--channel", type=click.Choice(channels.names()), help="Only this channel.")
@click.pass_obj
def subscriptions(ctx: Context, channel: str | None) -> None:
    """List subscriptions: channel, address, keyword, source, state."""
    from storage import subscribers as sub_repo

    rows = with_store(ctx, lambda store: sub_repo.all_subscriptions(store.db, channel))
    if not rows:
        click.echo("no subscriptions")
    for r in rows:
        where = r["address"] + (f" topic {r['topic']}" if r["topic"] else "")
        state = "" if r["active"] else f"  [inactive: {r['inactive_reason']}]"
        click.echo(f"{r['channel']:<9} {where:<32} {r['display']}  ({r['source']}){state}")


def main() -> None:
    cli(prog_name="daily-papers")
