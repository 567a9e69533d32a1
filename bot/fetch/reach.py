"""Fetch stage: why arXiv could not be reached, in words an operator can act on (the host, a
proxy in the way, and the cause: DNS, refused, timeout, TLS)."""

from __future__ import annotations

import errno
import socket
import ssl
import urllib.request
from urllib.parse import urlsplit

import httpx

_DNS = {
    socket.EAI_NONAME: "DNS lookup failed: no such host (check the URL and the DNS settings)",
    socket.EAI_AGAIN: "DNS lookup failed: no DNS server answered (is the network up?)",
}
_OS = {
    errno.ECONNREFUSED: "connection refused (nothing listens on that port, or a firewall "
                        "rejects it)",
    errno.ENETUNREACH: "network unreachable (is the network up?)",
    errno.EHOSTUNREACH: "host unreachable (routing or firewall)",
    errno.ECONNRESET: "connection reset while connecting",
    errno.ETIMEDOUT: "connection timed out (a firewall dropping packets?)",
}


def unreachable(url: str, exc: httpx.RequestError) -> str:
    """`cannot reach HOST [through the proxy P]: CAUSE` for a request that got no answer."""
    host = urlsplit(url).hostname or url
    proxy = proxy_for(url)
    through = f" through the proxy {proxy}" if proxy else ""
    return f"cannot reach {host}{through}: {cause(exc)}"


def cause(exc: BaseException) -> str:
    """The innermost reason that names something the operator can check."""
    if isinstance(exc, httpx.ConnectTimeout):
        return "no connection within the timeout (a firewall dropping packets, or a slow network)"
    if isinstance(exc, httpx.ProxyError):
        return f"the proxy refused: {exc}"
    for inner in _chain(exc):
        if isinstance(inner, socket.gaierror):
            return _DNS.get(inner.errno or 0, f"DNS lookup failed ({inner.strerror or inner})")
        if isinstance(inner, ssl.SSLCertVerificationError):
            return f"TLS certificate not trusted ({inner.verify_message})"
        if isinstance(inner, ssl.SSLError):
            return f"TLS handshake failed ({inner.reason or inner})"
        if isinstance(inner, OSError) and inner.errno in _OS:
            return _OS[inner.errno]
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def proxy_for(url: str) -> str | None:
    """The proxy httpx takes from the environment for `url` (HTTPS_PROXY, ALL_PROXY, NO_PROXY)."""
    parts = urlsplit(url)
    if parts.hostname and urllib.request.proxy_bypass(parts.hostname):
        return None
    proxies = urllib.request.getproxies()
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    if not proxy:
        return None
    shown = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    port = f":{shown.port}" if shown.port else ""
    return f"{shown.scheme}://{shown.hostname}{port}"  # never its user and password


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen[::-1]  # innermost first
