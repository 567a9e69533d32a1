"""What the operator reads when arXiv is out of reach or slow to retry: the host and the cause
once per cycle, and the delay a retry really waits (the gate's spacing included)."""

from __future__ import annotations

import logging
import socket
import ssl
from pathlib import Path

import httpx
import pytest

from bot.fetch.arxiv import ArxivClient
from bot.fetch.reach import cause, unreachable
from tests.fakes.arxiv_server import FakeArxiv
from tests.fakes.daemon import run_cli, write_config

KEYWORDS = '["graph neural networks", "video understanding", "protein folding"]'


def config_for(tmp_path: Path, api_url: str) -> Path:
    return write_config(tmp_path, f"""[arxiv]
api_url = "{api_url}"
keywords = {KEYWORDS}
request_interval = 0.02
[digest]
path = ""
""")


def retry_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if "arXiv request failed" in line]


async def test_a_refused_connection_names_the_host_and_cause_once_per_cycle(
        tmp_path: Path, refused_port: int) -> None:
    port = refused_port
    code, _, err = await run_cli(config_for(tmp_path, f"http://127.0.0.1:{port}/api/query"),
                                 "run", "--once")
    assert code == 1
    (told,) = retry_lines(err)  # one line, not one per retry
    assert " WARNING " in told
    assert ("arXiv request failed (cannot reach 127.0.0.1: connection refused (nothing listens "
            "on that port, or a firewall rejects it)); retry 1 of 3") in told
    assert "ConnectError" not in err and "Traceback" not in err


async def test_a_tls_failure_is_named(tmp_path: Path, fake_arxiv: FakeArxiv) -> None:
    https = fake_arxiv.url.replace("http://", "https://")  # TLS spoken to a plain HTTP server
    code, _, err = await run_cli(config_for(tmp_path, https), "run", "--once")
    assert code == 1
    (told,) = retry_lines(err)
    assert "cannot reach 127.0.0.1: TLS handshake failed (WRONG_VERSION_NUMBER)" in told


async def test_a_proxy_in_the_way_is_named(tmp_path: Path, fake_arxiv: FakeArxiv,
                                           refused_port: int) -> None:
    proxy = f"http://user:pw@127.0.0.1:{refused_port}"
    code, _, err = await run_cli(config_for(tmp_path, fake_arxiv.url), "run", "--once",
                                 env={"HTTP_PROXY": proxy, "http_proxy": proxy,
                                      "NO_PROXY": "", "no_proxy": ""})
    assert code == 1
    (told,) = retry_lines(err)
    assert (f"cannot reach 127.0.0.1 through the proxy {proxy.replace('user:pw@', '')}: "
            "connection refused") in told
    assert "user:pw" not in err
    assert fake_arxiv.requests == []


def test_dns_failures_and_timeouts_are_named() -> None:
    """Causes a test cannot provoke without the network: the chains httpx raises for them."""
    def connect_error(inner: BaseException) -> httpx.ConnectError:
        error = httpx.ConnectError(str(inner))
        error.__cause__ = inner
        return error

    url = "https://export.arxiv.org/api/query"
    no_host = connect_error(socket.gaierror(socket.EAI_NONAME, "Name or service not known"))
    assert unreachable(url, no_host) == ("cannot reach export.arxiv.org: DNS lookup failed: no "
                                         "such host (check the URL and the DNS settings)")
    no_dns = connect_error(socket.gaierror(socket.EAI_AGAIN, "Temporary failure"))
    assert cause(no_dns) == "DNS lookup failed: no DNS server answered (is the network up?)"
    assert cause(httpx.ConnectTimeout("timed out")).startswith("no connection within the timeout")
    untrusted = ssl.SSLCertVerificationError(1, "certificate verify failed")
    untrusted.verify_message = "self-signed certificate"
    assert cause(connect_error(untrusted)) == ("TLS certificate not trusted (self-signed "
                                               "certificate)")


async def test_the_retry_log_states_the_delay_the_gate_imposes(
        fake_arxiv: FakeArxiv, caplog: pytest.LogCaptureFixture) -> None:
    fake_arxiv.add(*FakeArxiv.seed_corpus()[:3])
    fake_arxiv.push(503)
    caplog.set_level(logging.INFO, logger="bot.fetch.arxiv")
    async with ArxivClient(fake_arxiv.url, request_interval=2.0, timeout=5,
                           backoff_base=0.001) as client:
        await client.fetch("all:video", 0, 3)
    (line,) = [r.getMessage() for r in caplog.records if "retry 1 of 3" in r.getMessage()]
    stated = float(line.split(" in ", 1)[1].split(" s", 1)[0])
    assert stated >= 1.0  # the backoff alone is at most 0.001 s; the gate makes it ~2 s
    first, second = fake_arxiv.requests
    assert second.time - first.time >= stated - 0.05  # and it is the wait that happened


async def test_unreachable_is_said_again_in_the_next_cycle(refused_port: int) -> None:
    async with ArxivClient(f"http://127.0.0.1:{refused_port}/", request_interval=0.01,
                           timeout=5, backoff_base=0.001, max_attempts=2) as client:
        told = []
        handler = logging.Handler()
        handler.emit = lambda record: told.append(record)  # type: ignore[method-assign]
        logging.getLogger("bot.fetch.arxiv").addHandler(handler)
        try:
            for _ in range(2):
                client.start_cycle()
                for _ in range(2):
                    with pytest.raises(Exception, match=r"cannot reach 127\.0\.0\.1"):
                        await client.fetch("all:x", 0, 1)
        finally:
            logging.getLogger("bot.fetch.arxiv").removeHandler(handler)
    warnings = [r for r in told if r.levelno == logging.WARNING]
    assert len(warnings) == 2  # once in each cycle
