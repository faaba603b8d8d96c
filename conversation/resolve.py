"""Turn a URL or a local path into a local file, safely.

URL fetching: http(s) only; every address the name resolves to must be public, checked
again on every redirect, and the connection goes to the address that was checked (the
request names the IP; Host and TLS SNI carry the name), so a DNS answer cannot change
between check and use. Size and time are capped. Local paths: only inside configured
roots, after resolving symlinks; no NUL, no directories; the file is copied into the media
directory, so cleaning up never touches the original.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import shutil
import socket
import stat
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx

from batchjob.netcheck import is_public_ip, parse_ip

MAX_REDIRECTS = 5


class ResolveError(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason  # url_refused | url_failed | url_too_large | path_refused


async def _addresses(host: str, port: int) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    literal = parse_ip(host)
    if literal is not None:
        return [literal]
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise ResolveError("url_failed") from None
    return [ipaddress.ip_address(info[4][0].split("%", 1)[0]) for info in infos]


def _allowed(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, allow_loopback: bool) -> bool:
    return is_public_ip(ip) or (allow_loopback and ip.is_loopback)


async def fetch_url(
    url: str,
    dest: Path,
    *,
    max_bytes: int,
    timeout_s: float = 30.0,
    allow_loopback: bool = False,
    transport: httpx.AsyncBaseTransport | None = None,
) -> tuple[Path, str]:
    """Download `url` to `dest`; returns (dest, file name from the URL)."""
    try:
        async with asyncio.timeout(timeout_s):
            return await _fetch(url, dest, max_bytes, allow_loopback, transport, timeout_s)
    except TimeoutError:
        dest.unlink(missing_ok=True)
        raise ResolveError("url_failed") from None
    except ResolveError:
        dest.unlink(missing_ok=True)
        raise


async def _fetch(
    url: str,
    dest: Path,
    max_bytes: int,
    allow_loopback: bool,
    transport: httpx.AsyncBaseTransport | None,
    timeout_s: float,
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
            if (
                parts.scheme not in ("http", "https")
                or not parts.hostname
                or parts.username
                or parts.password
            ):
                raise ResolveError("url_refused")
            try:
                port = parts.port or (443 if parts.scheme == "https" else 80)
            except ValueError:
                raise ResolveError("url_refused") from None
            host = parts.hostname
            addresses = await _addresses(host, port)
            if not addresses or not all(_allowed(a, allow_loopback) for a in addresses):
                raise ResolveError("url_refused")
            ip = addresses[0]
            netloc = f"[{ip}]" if ip.version == 6 else str(ip)
            target = parts._replace(netloc=f"{netloc}:{port}").geturl()
            headers = {"Host": parts.netloc.rsplit("@", 1)[-1], "Accept": "*/*"}
            extensions = {"sni_hostname": host} if parts.scheme == "https" else {}
            try:
                async with client.stream("GET", target, headers=headers, extensions=extensions) as resp:
                    if resp.is_redirect:
                        location = resp.headers.get("location")
                        if not location:
                            raise ResolveError("url_failed")
                        current = urljoin(current, location)
                        continue
                    if resp.status_code != 200:
                        raise ResolveError("url_failed")
                    declared = resp.headers.get("content-length")
                    if declared and declared.isdigit() and int(declared) > max_bytes:
                        raise ResolveError("url_too_large")
                    size = 0
                    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                    with os.fdopen(fd, "wb") as f:
                        async for chunk in resp.aiter_bytes():
                            size += len(chunk)
                            if size > max_bytes:
                                raise ResolveError("url_too_large")
                            f.write(chunk)
                    name = os.path.basename(parts.path) or "download"
                    return dest, name
            except httpx.HTTPError:
                raise ResolveError("url_failed") from None
        raise ResolveError("url_failed")


def open_path(raw: str, roots: list[Path], dest: Path, max_bytes: int) -> tuple[Path, str]:
    """Copy an allowed local file into `dest`; returns (dest, its name).

    A path outside the roots, a path that does not exist and one that is not a readable
    regular file all get the same answer, `path_refused`: the bot is no oracle for what
    exists on its host."""
    if not roots or "\x00" in raw or not raw.strip():
        raise ResolveError("path_refused")
    try:
        real = Path(raw).resolve(strict=True)
        allowed = any(_inside(real, root) for root in roots)
        if not allowed:
            raise ResolveError("path_refused")
        # Opened without following a link that appeared since `resolve`, then judged by
        # what was opened, not by a second look at the path.
        fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_NONBLOCK", 0))
    except (OSError, RuntimeError):
        raise ResolveError("path_refused") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise ResolveError("path_refused")
    with os.fdopen(fd, "rb") as src:
        if st.st_size > max_bytes:
            raise ResolveError("url_too_large")
        out_fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(out_fd, "wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
    return dest, real.name


def _inside(real: Path, root: Path) -> bool:
    try:
        return real.is_relative_to(root.resolve(strict=True))
    except (OSError, RuntimeError):
        return False
