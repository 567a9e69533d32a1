"""The HTML digest page ([digest] html_path, served at /): its golden file, its structure and
escaping in headless Chromium on a phone screen, and how it is written (by `digest`, by a
cycle of the real daemon, never with a private keyword) and served (ETag, 304).

`UPDATE_GOLDEN=1 pytest tests/test_page.py` rewrites tests/golden/digest.html after an intended
change of the page.
"""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from bot.config import Config
from bot.faces.digest_page import DigestPageRoute
from bot.render.digest import DigestSection, section_views
from bot.render.feeds import slug
from bot.render.job import write_digest_sync
from bot.render.page import feeds_href, render_page
from storage.store import AsyncStore
from tests.browser import chromium, needs_chromium
from tests.conftest import Clock, PaperFactory
from tests.fakes.arxiv_server import FakeArxiv
from tests.fakes.daemon import DaemonProcess, run_cli, write_config
from tests.test_digest import UPDATED, all_sections, assert_golden
from tests.test_operability import LISTENING, free_port
from tests.test_operability import paper as arxiv_paper

SHOWN_KEYWORDS = ["Video Anomaly Detection", "Video Understanding", "Vision Language Model",
                  "Multimodal Large Language Model", 'ti:"scene graph" AND cat:cs.CV',
                  'au:"Smith, J" AND (', "Nothing Yet"]


def page() -> str:
    views = section_views(all_sections(), 100, 600)
    return render_page(views, updated=UPDATED, max_papers=100, feeds="feeds/")


def test_page_golden() -> None:
    assert_golden("digest.html", page())


def test_a_hostile_keyword_and_note_stay_text() -> None:
    keyword = "hostile <!here> & | {{kw}} $x$ </h2><script>alert(1)</script>"
    section = DigestSection(keyword, [], note="<img src=x onerror=alert(1)> {% raw %}")
    html = render_page(section_views([section], 100, 600), updated=UPDATED, max_papers=100,
                       feeds="feeds/")
    escaped = ("hostile &lt;!here&gt; &amp; | {{kw}} $x$ &lt;/h2&gt;&lt;script&gt;alert(1)"
               "&lt;/script&gt;")
    assert f"<h2>{escaped}</h2>" in html
    assert f'title="Daily Papers: {escaped}"' in html
    assert "&lt;img src=x onerror=alert(1)&gt; {% raw %}" in html
    assert "<script" not in html and "<img" not in html


def test_feed_links_follow_feeds_dir_or_the_public_url(tmp_path: Path) -> None:
    html = tmp_path / "site" / "index.html"
    assert feeds_href(html, tmp_path / "site" / "feeds", "http://x") == "feeds/"
    assert feeds_href(html, tmp_path / "public" / "atom", "http://x") == "../public/atom/"
    assert feeds_href(html, tmp_path / "site", "http://x") == ""
    assert feeds_href(html, None, "https://papers.example.org/") == (
        "https://papers.example.org/feeds/")


# --- in a browser --------------------------------------------------------------------------------

@pytest.mark.slow
@needs_chromium
async def test_the_page_in_a_browser_shows_every_section_as_text(tmp_path: Path) -> None:
    file = tmp_path / "index.html"
    file.write_text(page(), encoding="utf-8")
    sections = all_sections()
    rows = sum(len({p.arxiv_id for p in s.papers}) for s in sections)

    async with chromium(tmp_path) as tab:
        await tab.emulate(phone=True, scripts=False)
        await tab.open(file.as_uri())
        assert await tab.js("[...document.querySelectorAll('main h2')].map(h => h.innerText)") \
            == SHOWN_KEYWORDS
        contents = await tab.js("[...document.querySelectorAll('nav a')]"
                                ".map(a => [a.innerText, a.hash])")
        ids = await tab.js("[...document.querySelectorAll('main section')].map(s => '#' + s.id)")
        assert [c[0] for c in contents] == SHOWN_KEYWORDS and [c[1] for c in contents] == ids

        titles = await tab.js("[...document.querySelectorAll('li a.title')]"
                              ".map(a => [a.innerText, a.href])")
        assert len(titles) == rows
        assert all(href.startswith("https://arxiv.org/abs/") and "v" not in href.rsplit("/")[-1]
                   for _, href in titles)
        assert ["Pipes | in [Titles] and `code` *stars* _under_ <b>bold</b> & $x_i$ \\ back",
                "https://arxiv.org/abs/2510.00001"] in titles

        feeds = await tab.js("[...document.querySelectorAll("
                             "'link[rel=alternate][type=\"application/atom+xml\"]')]"
                             ".map(l => [l.title, l.getAttribute('href')])")
        assert feeds[0] == ["Daily Papers: every keyword", "feeds/all.atom"]
        assert feeds[1:] == [[f"Daily Papers: {k}", f"feeds/{slug(k)}.atom"]
                             for k in SHOWN_KEYWORDS]
        assert await tab.js("[...document.querySelectorAll('section .feed a')]"
                            ".map(a => a.getAttribute('href'))") == [f for _, f in feeds[1:]]

        # hostile text stays text: no element, script or handler came from the data
        assert await tab.js("document.querySelectorAll('script, b, img, iframe, object, "
                            "embed, form, [onerror], [onclick], [style]').length") == 0
        assert await tab.js("document.querySelectorAll('link[rel=stylesheet], "
                            "[src]').length") == 0  # nothing fetched from elsewhere
        hostile = await tab.text("#tiscene-graph-and-catcscv")
        assert "<script>alert(1)</script>" not in hostile  # folded away until opened
        await tab.js("document.querySelectorAll('#tiscene-graph-and-catcscv details')"
                     ".forEach(d => d.open = true)")
        hostile = await tab.text("#tiscene-graph-and-catcscv")
        assert "<Subject, Predicate> & <script>alert(1)</script> where $x_i^* =" in hostile
        assert "8 pages | *draft*" in hostile
        assert "Physicist 0000, Physicist 0001, Physicist 0002 et al. (3000 authors)" in hostile
        links = await tab.js("[...document.querySelectorAll('#tiscene-graph-and-catcscv "
                             "details a')].map(a => a.href)")
        assert links == ["http://example.org/"]  # the abstract's web address, made a link

        first = await tab.js("[...document.querySelectorAll('#video-anomaly-detection li')]"
                             ".slice(0, 1).map(li => [li.querySelector('.meta').innerText,"
                             " li.querySelector('details p').textContent])[0]")
        assert first[0] == "2025-09-22 · Edsger Turing, Barbara Hopper"  # written &middot;
        assert first[1].endswith(" pixel-wise visual-textual feature…")  # the cut, &hellip;

        note = await tab.text("#ausmith-j-and- .note")
        assert "arXiv rejected this keyword's query" in note and "<au:\"Smith, J\" AND (>" in note
        empty = await tab.text("#nothing-yet")
        assert [line for line in empty.splitlines() if line] == [
            "Nothing Yet", "Atom feed of this keyword", "No papers yet."]
        assert not await tab.overflows()  # readable on a phone without scrolling sideways


# --- written and served ----------------------------------------------------------------------


def page_config(tmp_path: Path, api_url: str, *, html_path: str = "site/index.html",
                digest_path: str = "README.md", extra: str = "") -> Path:
    return write_config(tmp_path, f"""[arxiv]
api_url = "{api_url}"
keywords = ["graph neural networks", "protein folding"]
schedule = "interval"
request_interval = 0.02
[storage]
path = "papers.db"
[digest]
path = "{digest_path}"
html_path = "{html_path}"
{extra}""")


async def test_digest_writes_the_page_and_the_readme(tmp_path: Path) -> None:
    (tmp_path / "site").mkdir()
    config = page_config(tmp_path, "http://127.0.0.1:9/")
    code, out, err = await run_cli(config, "digest")
    assert code == 0, err
    assert out.splitlines() == [f"{tmp_path}/README.md: written",
                                f"{tmp_path}/site/index.html: written"]
    html = (tmp_path / "site" / "index.html").read_text()
    assert "<h2>graph neural networks</h2>" in html and "<h2>protein folding</h2>" in html
    code, out, _ = await run_cli(config, "digest")
    assert out.splitlines() == [f"{tmp_path}/README.md: unchanged",
                                f"{tmp_path}/site/index.html: unchanged"]


async def test_the_page_alone_when_the_readme_digest_is_off(tmp_path: Path) -> None:
    config = page_config(tmp_path, "http://127.0.0.1:9/", html_path="index.html",
                         digest_path="")
    code, out, err = await run_cli(config, "digest")
    assert code == 0, err
    assert out.splitlines() == [f"{tmp_path}/index.html: written"]
    assert not (tmp_path / "README.md").exists()


@pytest.mark.parametrize(("where", "cause"), [
    ("missing/index.html", "its folder {dir}/missing does not exist: create it"),
    ("a-folder", "it is a folder, not a file"),
])
async def test_an_unwritable_html_path_is_one_line(tmp_path: Path, where: str,
                                                   cause: str) -> None:
    (tmp_path / "a-folder").mkdir()
    config = page_config(tmp_path, "http://127.0.0.1:9/", html_path=where)
    code, out, err = await run_cli(config, "digest")
    assert code == 2 and out == "", (out, err)
    assert err.splitlines() == [f"error: {tmp_path / where}: the digest page cannot be "
                                f"written: {cause.format(dir=tmp_path)}; or change [digest] "
                                "html_path"]
    assert not (tmp_path / "README.md").exists() and not (tmp_path / "papers.db").exists()


async def test_a_cycle_writes_the_page_and_keeps_the_readme_when_the_page_fails(
        tmp_path: Path, fake_arxiv: FakeArxiv, paper: PaperFactory) -> None:
    fake_arxiv.add(paper(about="graph neural networks", title="Graph <b>Networks</b> & Friends"))
    (tmp_path / "site").mkdir()
    config = page_config(tmp_path, fake_arxiv.url)
    code, _, err = await run_cli(config, "run", "--once")
    assert code == 0, err
    html = (tmp_path / "site" / "index.html").read_text()
    assert "Graph &lt;b&gt;Networks&lt;/b&gt; &amp; Friends</a>" in html
    assert "Graph &lt;b&gt;Networks&lt;/b&gt; &amp; Friends" in (tmp_path / "README.md").read_text()

    fake_arxiv.add(paper(about="protein folding", title="Protein folding, again"))
    (tmp_path / "site" / "index.html").unlink()
    (tmp_path / "site").rmdir()
    (tmp_path / "site").write_text("now a file")
    code, _, err = await run_cli(config, "run", "--once")
    assert code == 0, err  # the page never stops polling, nor the README digest
    errors = [line for line in err.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and errors[0].endswith(
        f"digest not written: {tmp_path}/site/index.html: the digest page cannot be written: "
        f"{tmp_path}/site is not a folder; or change [digest] html_path"), err
    assert "Protein folding, again" in (tmp_path / "README.md").read_text()


async def test_private_keywords_never_reach_the_page(
        tmp_path: Path, store: AsyncStore, clock: Clock, public_and_private_papers: None
) -> None:
    cfg = Config()
    cfg.arxiv.keywords = ["graph neural networks"]
    cfg.digest.path = None
    cfg.digest.html_path = tmp_path / "index.html"
    changed = await store.run(lambda s: write_digest_sync(s, cfg, clock.now()))
    assert changed == [tmp_path / "index.html"]
    html = (tmp_path / "index.html").read_text()
    assert "graph neural networks" in html
    assert "secret" not in html


async def test_the_daemon_serves_the_page_at_root_with_etag_and_304(
        tmp_path: Path) -> None:
    port = free_port()
    async with FakeArxiv() as fake:
        fake.add(arxiv_paper(1), arxiv_paper(2, "protein folding"))
        config = page_config(tmp_path, fake.url, html_path="index.html", extra=f"""
[web]
host = "127.0.0.1"
port = {port}
public_url = "http://127.0.0.1:{port}"
""")
        async with DaemonProcess(config, "run") as daemon, aiohttp.ClientSession() as http:
            base = (await daemon.wait_for_log(LISTENING)).group(1)
            cycle = await daemon.wait_for_log(r"cycle: 2 keywords polled")
            await daemon.wait_for_log(r"digest written to .*/index\.html",
                                      after=daemon.lines.index(cycle.string))
            async with http.get(f"{base}/") as resp:
                assert resp.status == 200
                assert resp.headers["Content-Type"] == "text/html; charset=utf-8"
                assert "script-src" not in resp.headers["Content-Security-Policy"]
                assert "default-src 'none'" in resp.headers["Content-Security-Policy"]
                body = await resp.read()
                etag = resp.headers["ETag"]
                modified = resp.headers["Last-Modified"]
            assert body == (tmp_path / "index.html").read_bytes()
            assert b"On graph neural networks, part 1" in body
            assert b'href="http://127.0.0.1:%d/feeds/graph-neural-networks.atom"' % port in body
            async with http.get(f"{base}/", headers={"If-None-Match": etag}) as resp:
                assert resp.status == 304 and await resp.read() == b""
            async with http.get(f"{base}/", headers={"If-Modified-Since": modified}) as resp:
                assert resp.status == 304
            async with http.get(f"{base}/feeds/graph-neural-networks.atom") as resp:
                assert resp.status == 200  # the page's feed link answers


async def test_root_before_the_page_is_written_says_so(tmp_path: Path) -> None:
    server = web.Application()
    server.add_routes(DigestPageRoute(tmp_path / "index.html").routes())
    async with TestServer(server, host="127.0.0.1", port=0) as running, \
            aiohttp.ClientSession() as http:
        async with http.get(running.make_url("/")) as resp:
            assert resp.status == 503 and resp.headers["Retry-After"] == "300"
            assert "not written yet" in await resp.text()
        (tmp_path / "index.html").write_text("<!DOCTYPE html><title>x</title>")
        async with http.head(running.make_url("/")) as resp:
            assert resp.status == 200 and "ETag" in resp.headers


async def test_root_is_404_when_the_page_is_off(tmp_path: Path) -> None:
    port = free_port()
    async with FakeArxiv() as fake:
        config = page_config(tmp_path, fake.url, html_path="", extra=f"""
[web]
host = "127.0.0.1"
port = {port}
""")
        async with DaemonProcess(config, "run") as daemon, aiohttp.ClientSession() as http:
            base = (await daemon.wait_for_log(LISTENING)).group(1)
            async with http.get(f"{base}/") as resp:
                assert resp.status == 404


def test_page_rows_match_the_readme_rows() -> None:
    """The same papers in the same order as the README digest, section by section."""
    views = section_views(all_sections(), 100, 600)
    html = render_page(views, updated=UPDATED, max_papers=100, feeds="feeds/")
    for view in views:
        ids = [r.paper.arxiv_id for r in view.rows]
        positions = [html.index(f'href="https://arxiv.org/abs/{i}"') for i in ids]
        assert positions == sorted(positions), view.keyword
    assert f'<time datetime="{UPDATED}">{UPDATED}</time> (UTC)' in html
