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


# The IANA special-purpose address registries, as our own table: `ipaddress.is_global`
# depends on the interpreter (before 3.11.10 / 3.12.5 it passed 192.0.0.192, the legacy
# cloud metadata address, CVE-2024-4032). Every block listed there is refused, whatever
# its "globally reachable" column says: anycast service blocks (AS112, AMT) and relays
# are infrastructure, never a host of someone's images.
SPECIAL_V4 = tuple(
    ipaddress.IPv4Network(n)
    for n in (
        "0.0.0.0/8",  # "this network"
        "10.0.0.0/8",  # private use
        "100.64.0.0/10",  # shared address space (carrier-grade NAT)
        "127.0.0.0/8",  # loopback
        "169.254.0.0/16",  # link local (cloud metadata: 169.254.169.254)
        "172.16.0.0/12",  # private use
        "192.0.0.0/24",  # IETF protocol assignments (192.0.0.192: legacy metadata)
        "192.0.2.0/24",  # documentation (TEST-NET-1)
        "192.31.196.0/24",  # AS112-v4
        "192.52.193.0/24",  # AMT
        "192.88.99.0/24",  # deprecated 6to4 relay anycast
        "192.168.0.0/16",  # private use
        "192.175.48.0/24",  # direct delegation AS112 service
        "198.18.0.0/15",  # benchmarking
        "198.51.100.0/24",  # documentation (TEST-NET-2)
        "203.0.113.0/24",  # documentation (TEST-NET-3)
        "224.0.0.0/4",  # multicast (its own registry)
        "240.0.0.0/4",  # reserved, and 255.255.255.255 limited broadcast
    )
)
GLOBAL_UNICAST_V6 = ipaddress.IPv6Network("2000::/3")  # everything else is not for hosts yet
SPECIAL_V6 = tuple(
    ipaddress.IPv6Network(n)
    for n in (
        "2001::/23",  # IETF protocol assignments: Teredo, benchmarking, AMT, AS112, ORCHID, DRIP
        "2001:db8::/32",  # documentation
        "2002::/16",  # 6to4
        "2620:4f:8000::/48",  # direct delegation AS112 service
        "3fff::/20",  # documentation
        # Outside 2000::/3, listed for the record (refused as not global unicast anyway):
        "::/128",  # unspecified
        "::1/128",  # loopback
        "64:ff9b::/96",  # IPv4-IPv6 translation
        "64:ff9b:1::/48",  # local-use IPv4-IPv6 translation
        "100::/64",  # discard-only
        "100:0:0:1::/64",  # dummy prefix
        "5f00::/16",  # segment routing (SRv6) SIDs
        "fc00::/7",  # unique local
        "fe80::/10",  # link local
        "ff00::/8",  # multicast
    )
)


def is_public_ip(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Whether a host at this address may be fetched: a global unicast address outside
    every special-purpose block (an IPv4-mapped IPv6 address is judged as its IPv4)."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return is_public_ip(ip.ipv4_mapped)
        return ip in GLOBAL_UNICAST_V6 and not any(ip in n for n in SPECIAL_V6)
    return not any(ip in n for n in SPECIAL_V4)


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
