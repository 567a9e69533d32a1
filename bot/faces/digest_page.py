"""The HTML digest page on the [web] server: GET / answers the file at [digest] html_path, as
the render stage last wrote it, with ETag and Last-Modified (304 to a conditional GET)."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from bot.render.page import CONTENT_TYPE, policy

NOT_YET = ("The digest page is not written yet: Daily Papers writes it after its next poll. "
           "Please try again in a few minutes.\n")


class DigestPageRoute:
    def __init__(self, html_path: Path | None) -> None:
        self.html_path = html_path

    def routes(self) -> list[web.RouteDef]:
        """None when [digest] html_path is off: / stays a 404."""
        return [web.get("/", self.page)] if self.html_path is not None else []

    async def page(self, request: web.Request) -> web.StreamResponse:
        assert self.html_path is not None
        if not self.html_path.is_file():
            return web.Response(status=503, text=NOT_YET, headers={"Retry-After": "300"})
        # aiohttp's FileResponse answers If-None-Match / If-Modified-Since from the file itself
        return web.FileResponse(self.html_path, headers={
            "Content-Type": CONTENT_TYPE, "Cache-Control": "no-cache",
            "Content-Security-Policy": policy() + "; frame-ancestors 'none'",
            "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"})
