"""Download a URL to a file, safely: what a user or a service's answer names is untrusted.

http(s) only; every address the name resolves to must be public, checked again on every
redirect, and the connection goes to the address that was checked (the request names the
IP; Host and TLS SNI carry the name), so a DNS answer cannot change between check and use.
Size and time are capped, the content type may be required, and a download cut short
leaves no file behind.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx

from batchjob.netcheck import is_public_ip, parse_ip

MAX_REDIRECTS = 5


class FetchError(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason  # url_refused | url_failed | url_too_large | url_wrong_type | path_refused


async def _addresses(host: str, port: int) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    literal = parse_ip(host)
    if literal is not None:
        return [literal]
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise FetchError("url_failed") from None
    return [ipaddress.ip_address(info[4][0].split("%", 1)[0]) for info in infos]


def _allowed(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, allow_loopback: bool) -> bool:
    return is_public_ip(ip) or (allow_loopback and ip.is_loopback)


class TooLarge(Exception):
    """An answer's body is (or says it is) larger than allowed."""


async def save_capped(resp: httpx.Response, dest: Path, max_bytes: int) -> int:
    """Stream an answer's body into `dest` (mode 0600), refused past `max_bytes` whether the
    answer declares it or only sends it: raises TooLarge (the caller removes what was
    written). Returns the size."""
    declared = resp.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise TooLarge()
    size = 0
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        async for chunk in resp.aiter_bytes(1 << 16):
            size += len(chunk)
            if size > max_bytes:
                raise TooLarge()
            f.write(chunk)
    return size


async def fetch_url(
    url: str,
    dest: Path,
    *,
    max_bytes: int,
    timeout_s: float = 30.0,
    allow_loopback: bool = False,
    transport: httpx.AsyncBaseTransport | None = None,
    content_types: frozenset[str] | None = None,
) -> tuple[Path, str]:
    """Download `url` to `dest`; returns (dest, file name from the URL). With
    `content_types`, an answer of any other type is refused ("url_wrong_type")."""
    try:
        async with asyncio.timeout(timeout_s):
            return await _fetch(url, dest, max_bytes, allow_loopback, transport, timeout_s, content_types)
    except TimeoutError:
        dest.unlink(missing_ok=True)
        raise FetchError("url_failed") from None
    except FetchError:
        dest.unlink(missing_ok=True)
        raise


async def pinned(url: str, allow_loopback: bool = False) -> tuple[str, dict[str, str], dict[str, Any]]:
    """The URL to request instead of `url`: its host resolved once, every address public
    (loopback too with the test-only switch), the request pinned to that address (no second
    lookup can point it elsewhere), with the Host header and TLS name of the original."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.username or parts.password:
        raise FetchError("url_refused")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise FetchError("url_refused") from None
    host = parts.hostname
    addresses = await _addresses(host, port)
    if not addresses or not all(_allowed(a, allow_loopback) for a in addresses):
        raise FetchError("url_refused")
    ip = addresses[0]
    netloc = f"[{ip}]" if ip.version == 6 else str(ip)
    target = parts._replace(netloc=f"{netloc}:{port}").geturl()
    headers = {"Host": parts.netloc.rsplit("@", 1)[-1]}
    return target, headers, ({"sni_hostname": host} if parts.scheme == "https" else {})


async def _fetch(
    url: str,
    dest: Path,
    max_bytes: int,
    allow_loopback: bool,
    transport: httpx.AsyncBaseTransport | None,
    timeout_s: float,
    content_types: frozenset[str] | None = None,
) -> tuple[Path, str]:
    async with httpx.AsyncClient(
        transport=transport,
        timeout=httpx.Timeout(min(10.0, timeout_s)),
        follow_redirects=False,
        trust_env=False,
    ) as client:
        current = url
        for _ in range(MAX_REDIRECTS + 1):
            parts = urlsplit(current)
            target, headers, extensions = await pinned(current, allow_loopback)
            headers["Accept"] = "*/*"
            try:
                async with client.stream("GET", target, headers=headers, extensions=extensions) as resp:
                    if resp.is_redirect:
                        location = resp.headers.get("location")
                        if not location:
                            raise FetchError("url_failed")
                        current = urljoin(current, location)
                        continue
                    if resp.status_code != 200:
                        raise FetchError("url_failed")
                    kind = resp.headers.get("content-type", "").split(";", 1)[0].strip().lower()
                    if content_types is not None and kind not in content_types:
                        raise FetchError("url_wrong_type")
                    try:
                        await save_capped(resp, dest, max_bytes)
                    except TooLarge:
                        raise FetchError("url_too_large") from None
                    name = os.path.basename(parts.path) or "download"
                    return dest, name
            except httpx.HTTPError:
                raise FetchError("url_failed") from None
        raise FetchError("url_failed")
