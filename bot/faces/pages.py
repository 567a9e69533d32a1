"""The email readers' web pages (sign-up, confirmation, preferences): one Jinja environment with
autoescape, and responses that are never cached, leak no token in a referrer and run no script
but their own."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import jinja2
from aiohttp import web

from bot.deliver.cadence import DAY_NAMES, WEEKDAYS, zone_names

_ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=jinja2.select_autoescape(enabled_extensions=("html.j2",),
                                        default_for_string=True),
    undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
)
_ENV.globals.update(days=list(zip(WEEKDAYS, DAY_NAMES, strict=True)), zones=zone_names)


def text(name: str, **values: Any) -> str:
    """A plain-text template (a mail), not escaped."""
    return _ENV.get_template(name).render(**values)


def page(name: str, status: int = 200, **values: Any) -> web.Response:
    """A page; its inline style and script carry a fresh nonce the policy names."""
    nonce = secrets.token_urlsafe(16)
    html = _ENV.get_template(name).render(nonce=nonce, **values)
    policy = (f"default-src 'none'; style-src 'nonce-{nonce}'; script-src 'nonce-{nonce}'; "
              "form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
    return web.Response(text=html, status=status, content_type="text/html", charset="utf-8",
                        headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer",
                                 "Content-Security-Policy": policy,
                                 "X-Content-Type-Options": "nosniff"})


def see_other(location: str) -> web.HTTPSeeOther:
    """After a change, the page is fetched again with GET (a reload never repeats a POST)."""
    return web.HTTPSeeOther(location, headers={"Cache-Control": "no-store",
                                               "Referrer-Policy": "no-referrer"})
