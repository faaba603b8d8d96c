"""Is a host public? Shared by input validation (image URLs) and URL fetching.

Literal addresses are judged by `ipaddress`; every spelling that the C resolver would
accept as an IPv4 literal (decimal `2130706433`, octal `0177.0.0.1`, hex `0x7f.1`) is
parsed with `inet_aton` first, so it cannot pass as a "name". Names cannot be resolved
here (validation is offline), so a name is public when it looks like one: dotted, with
a real-looking top-level label, outside the reserved private suffixes.
"""

from __future__ import annotations

import ipaddress
import re
import socket

_PRIVATE_SUFFIXES = (
    "localhost",
    "local",
    "internal",
    "intranet",
    "lan",
    "home",
    "corp",
    "private",
    "test",
    "invalid",
    "localdomain",
    "home.arpa",
    "in-addr.arpa",
    "ip6.arpa",
)
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_TLD = re.compile(r"^(?:[a-z]{2,63}|xn--[a-z0-9-]{1,59})$")


def parse_ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address a literal host denotes, in any spelling; None for a name."""
    h = host.strip("[]")
    try:
        return ipaddress.ip_address(h.split("%", 1)[0])
    except ValueError:
        pass
    if re.fullmatch(r"[0-9a-fA-Fx.]+", h) and any(c.isdigit() for c in h):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(h))
        except OSError:
            return None
    return None


def is_public_ip(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(ip, ipaddress.IPv6Address):
        mapped = ip.ipv4_mapped or ip.sixtofour
        if mapped is not None:
            return is_public_ip(mapped)
        if ip.teredo is not None:
            return False
    return ip.is_global and not ip.is_multicast and not ip.is_reserved


def is_public_name(host: str) -> bool:
    h = host.rstrip(".").lower()
    if not h or len(h) > 253 or "." not in h:
        return False
    labels = h.split(".")
    if not all(_LABEL.match(label) for label in labels):
        return False
    if not _TLD.match(labels[-1]):
        return False
    return not any(h == s or h.endswith("." + s) for s in _PRIVATE_SUFFIXES)


def is_public_host(host: str) -> bool:
    """True when `host` (a URL's hostname, already lower-cased/IDNA) may be fetched."""
    if not host:
        return False
    ip = parse_ip(host)
    if ip is not None:
        return is_public_ip(ip)
    try:
        ascii_host = host.encode("idna").decode("ascii")
    except UnicodeError:
        return False
    return is_public_name(ascii_host)
