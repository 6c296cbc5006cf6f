"""Client addresses: parsing and grouping into networks (IPv4 /24, IPv6 /64 by default)."""

from __future__ import annotations

import ipaddress
import socket
from typing import Union

# Union, not |: a type alias is evaluated at run time, and EL 9 runs Python 3.9.
IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]


def parse_ip(text: str) -> IPAddress | None:
    """Parse a client address as sendmail/pymilter give it; IPv4-mapped IPv6 becomes IPv4."""
    t = text.strip()
    if t.startswith("[") and t.endswith("]"):
        t = t[1:-1]
    if t.lower().startswith("ipv6:"):
        t = t[5:]
    ip: IPAddress
    try:  # fast path: the C parser for the plain dotted quad (as strict as ipaddress)
        ip = ipaddress.IPv4Address(socket.inet_pton(socket.AF_INET, t))
    except (OSError, ValueError):
        try:
            ip = ipaddress.ip_address(t)
        except ValueError:
            return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def client_group(addr: str, ipv4_prefix: int = 24, ipv6_prefix: int = 64) -> str:
    """The network a client is grouped in for the triplet: ``192.0.2.0/24``, ``2001:db8::/64``.

    A client that is not an IP address (unix socket, unknown family) is its own group.
    """
    return group_of(parse_ip(addr), addr, ipv4_prefix, ipv6_prefix)


def group_of(ip: IPAddress | None, addr: str, ipv4_prefix: int = 24, ipv6_prefix: int = 64) -> str:
    """``client_group`` of an address already parsed (``ip = parse_ip(addr)``)."""
    if ip is None:
        return addr.strip().lower()
    if ip.version == 4:
        # the C formatter: the same dotted quad as str(IPv4Address), a few times faster
        masked = int(ip) & (((1 << ipv4_prefix) - 1) << (32 - ipv4_prefix))
        return f"{socket.inet_ntoa(masked.to_bytes(4, 'big'))}/{ipv4_prefix}"
    mask = ((1 << ipv6_prefix) - 1) << (128 - ipv6_prefix)
    return f"{ipaddress.IPv6Address(int(ip) & mask)}/{ipv6_prefix}"
