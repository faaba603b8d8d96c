"""Every row of the IANA special-purpose address registries is refused, on any Python.

The rows are copied here from the registries (iana-ipv4-special-registry and
iana-ipv6-special-registry, plus the multicast blocks), independently of the table in
`batchjob/netcheck.py`: the first and the last address of each block, and one inside,
must not pass, in every spelling a URL can give them.
"""

from __future__ import annotations

import ipaddress

import pytest

from batchjob.netcheck import is_public_host, is_public_ip

IPV4_REGISTRY = [
    ("0.0.0.0/8", "this network"),
    ("0.0.0.0/32", "this host on this network"),
    ("10.0.0.0/8", "private use"),
    ("100.64.0.0/10", "shared address space"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link local"),
    ("172.16.0.0/12", "private use"),
    ("192.0.0.0/24", "IETF protocol assignments"),
    ("192.0.0.0/29", "IPv4 service continuity prefix"),
    ("192.0.0.8/32", "IPv4 dummy address"),
    ("192.0.0.9/32", "port control protocol anycast"),
    ("192.0.0.10/32", "traversal using relays around NAT anycast"),
    ("192.0.0.170/32", "NAT64/DNS64 discovery"),
    ("192.0.0.171/32", "NAT64/DNS64 discovery"),
    ("192.0.2.0/24", "documentation (TEST-NET-1)"),
    ("192.31.196.0/24", "AS112-v4"),
    ("192.52.193.0/24", "AMT"),
    ("192.88.99.0/24", "deprecated (6to4 relay anycast)"),
    ("192.168.0.0/16", "private use"),
    ("192.175.48.0/24", "direct delegation AS112 service"),
    ("198.18.0.0/15", "benchmarking"),
    ("198.51.100.0/24", "documentation (TEST-NET-2)"),
    ("203.0.113.0/24", "documentation (TEST-NET-3)"),
    ("240.0.0.0/4", "reserved"),
    ("255.255.255.255/32", "limited broadcast"),
    ("224.0.0.0/4", "multicast"),
]
IPV6_REGISTRY = [
    ("::1/128", "loopback"),
    ("::/128", "unspecified"),
    ("::ffff:0:0/96", "IPv4-mapped (of a private IPv4)"),
    ("64:ff9b::/96", "IPv4-IPv6 translation"),
    ("64:ff9b:1::/48", "local-use IPv4/IPv6 translation"),
    ("100::/64", "discard-only"),
    ("100:0:0:1::/64", "dummy IPv6 prefix"),
    ("2001::/23", "IETF protocol assignments"),
    ("2001::/32", "TEREDO"),
    ("2001:1::1/128", "port control protocol anycast"),
    ("2001:1::2/128", "traversal using relays around NAT anycast"),
    ("2001:1::3/128", "DNS-SD service registration protocol anycast"),
    ("2001:2::/48", "benchmarking"),
    ("2001:3::/32", "AMT"),
    ("2001:4:112::/48", "AS112-v6"),
    ("2001:10::/28", "deprecated (ORCHID)"),
    ("2001:20::/28", "ORCHIDv2"),
    ("2001:30::/28", "drone remote ID protocol entity tags"),
    ("2001:db8::/32", "documentation"),
    ("2002::/16", "6to4"),
    ("2620:4f:8000::/48", "direct delegation AS112 service"),
    ("3fff::/20", "documentation"),
    ("5f00::/16", "segment routing (SRv6) SIDs"),
    ("fc00::/7", "unique-local"),
    ("fe80::/10", "link-local unicast"),
    ("ff00::/8", "multicast"),
]


def _samples(block: str) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    net = ipaddress.ip_network(block)
    if block == "::ffff:0:0/96":  # mapped: judged as the IPv4 inside
        return [ipaddress.IPv6Address("::ffff:10.0.0.1"), ipaddress.IPv6Address("::ffff:169.254.169.254")]
    middle = net.network_address + net.num_addresses // 2
    return [net.network_address, middle, net.broadcast_address]


@pytest.mark.parametrize(("block", "name"), IPV4_REGISTRY + IPV6_REGISTRY)
def test_every_registry_row_is_refused(block, name):
    for ip in _samples(block):
        assert not is_public_ip(ip), f"{ip} ({name}) passed"
        host = f"[{ip}]" if ip.version == 6 else str(ip)
        assert not is_public_host(host.lower().strip("[]")), f"{host} ({name}) passed as a host"


@pytest.mark.parametrize(
    "spelling",
    ["192.0.0.192", "3221225664", "0xc0.0.0.0xc0", "0300.0.0.0300", "::ffff:192.0.0.192", "::ffff:c000:c0"],
)
def test_the_legacy_metadata_address_is_refused_in_every_spelling(spelling):
    # CVE-2024-4032: `ipaddress.is_global` passed it on Python before 3.11.10 / 3.12.5.
    assert not is_public_host(spelling)


@pytest.mark.parametrize(
    "ip", ["8.8.8.8", "1.1.1.1", "100.128.0.1", "192.0.1.1", "198.20.0.1", "2606:4700::1111", "2a00:1450::1"]
)
def test_ordinary_addresses_pass(ip):
    assert is_public_ip(ipaddress.ip_address(ip))
    assert is_public_host(ip)
