"""Whitelists: clients (IP, CIDR network, hostname, domain), senders and recipients.

Client entries:
- ``192.0.2.7``, ``2001:db8::1``: that address;
- ``192.0.2.0/24``, ``2001:db8::/32``: that network;
- ``mx.example.org``: that host and every name under it (``a.mx.example.org``);
- ``.example.org``: only names under ``example.org``.
Names are matched only against a *verified* client hostname (forward-confirmed reverse DNS,
sendmail's ``{client_resolve}`` = ``OK``), never against what the client claims.

Sender / recipient entries:
- ``user@example.org``: that address (domain case-insensitive);
- ``@example.org``: every address of exactly that domain;
- ``example.org``: every address of that domain and its subdomains.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Union

from passerelle.greylist.addresses import split_address, strip_brackets
from passerelle.greylist.network import IPAddress, parse_ip

Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]  # Python 3.9: no | at run time


class WhitelistError(ValueError):
    """An entry that cannot be understood."""


def _is_name(text: str) -> bool:
    t = text.strip(".")
    if not t or len(t) > 253:
        return False
    return all(
        label and len(label) <= 63 and all(c.isalnum() or c in "-_" for c in label)
        for label in t.split(".")
    )


@dataclass
class ClientList:
    """Client whitelist: addresses, networks and names."""

    ips: set[IPAddress] = field(default_factory=set)
    networks: list[Network] = field(default_factory=list)
    names: set[str] = field(default_factory=set)  # host and everything below
    suffixes: set[str] = field(default_factory=set)  # only below (".example.org")

    def add(self, entry: str) -> None:
        e = entry.strip().lower()
        if not e:
            raise WhitelistError("empty entry")
        if "/" in e:
            try:
                net = ipaddress.ip_network(e, strict=False)
            except ValueError:
                raise WhitelistError(f"not a network: {entry!r}") from None
            if net.num_addresses == 1:
                self.ips.add(net.network_address)
            else:
                self.networks.append(net)
            return
        ip = parse_ip(e)
        if ip is not None:
            self.ips.add(ip)
            return
        if not _is_name(e):
            raise WhitelistError(f"not an IP address, network or host name: {entry!r}")
        if e.startswith("."):
            self.suffixes.add(e.strip("."))
        else:
            self.names.add(e.rstrip("."))

    def match(self, ip: IPAddress | None, hostname: str | None) -> str | None:
        """The matching entry (as text) or None; ``hostname`` must already be verified."""
        if not (self.ips or self.networks or self.names or self.suffixes):
            return None  # an empty list (the common case for some kinds): nothing to parse
        if ip is not None:
            if ip in self.ips:
                return str(ip)
            for net in self.networks:
                if ip.version == net.version and ip in net:
                    return str(net)
        if hostname:
            h = hostname.lower().rstrip(".")
            parts = h.split(".")
            for i in range(len(parts)):
                cand = ".".join(parts[i:])
                if cand in self.names:
                    return cand
                if i > 0 and cand in self.suffixes:
                    return "." + cand
        return None

    def __len__(self) -> int:
        return len(self.ips) + len(self.networks) + len(self.names) + len(self.suffixes)


@dataclass
class AddressList:
    """Sender or recipient exemptions: addresses, exact domains, domain trees."""

    addresses: set[str] = field(default_factory=set)
    domains: set[str] = field(default_factory=set)  # "@example.org": exactly this domain
    trees: set[str] = field(default_factory=set)  # "example.org": domain and subdomains

    def add(self, entry: str) -> None:
        e = strip_brackets(entry)
        if not e:
            raise WhitelistError("empty entry")
        if e.startswith("@"):
            d = e[1:].lower().rstrip(".")
            if not _is_name(d):
                raise WhitelistError(f"not a domain: {entry!r}")
            self.domains.add(d)
        elif "@" in e:
            local, domain = split_address(e)
            if not local or not _is_name(domain):
                raise WhitelistError(f"not an address: {entry!r}")
            self.addresses.add(f"{local}@{domain}".lower())
        else:
            d = e.lower().strip(".")
            if not _is_name(d):
                raise WhitelistError(f"not an address or domain: {entry!r}")
            self.trees.add(d)

    def match(self, address: str) -> str | None:
        if not (self.addresses or self.domains or self.trees):
            return None  # an empty list: nothing to parse
        a = strip_brackets(address)
        if not a:
            return None
        local, domain = split_address(a)
        if f"{local}@{domain}".lower() in self.addresses:
            return f"{local}@{domain}".lower()
        if domain in self.domains:
            return "@" + domain
        parts = domain.split(".")
        for i in range(len(parts)):
            cand = ".".join(parts[i:])
            if cand in self.trees:
                return cand
        return None

    def __len__(self) -> int:
        return len(self.addresses) + len(self.domains) + len(self.trees)


KINDS = ("client", "sender", "recipient")


@dataclass
class Whitelist:
    """Everything that skips greylisting, from the config file and the database table."""

    clients: ClientList = field(default_factory=ClientList)
    senders: AddressList = field(default_factory=AddressList)
    recipients: AddressList = field(default_factory=AddressList)
    trusted: ClientList = field(default_factory=ClientList)

    def add(self, kind: str, entry: str) -> None:
        if kind == "client":
            self.clients.add(entry)
        elif kind == "sender":
            self.senders.add(entry)
        elif kind == "recipient":
            self.recipients.add(entry)
        elif kind == "trusted":
            self.trusted.add(entry)
        else:
            raise WhitelistError(f"unknown kind {kind!r}")

    def extend(self, entries: Iterable[tuple[str, str]], strict: bool = True) -> list[str]:
        """Add (kind, entry) pairs; with ``strict=False`` bad ones are returned, not raised."""
        bad: list[str] = []
        for kind, entry in entries:
            try:
                self.add(kind, entry)
            except WhitelistError as exc:
                if strict:
                    raise
                bad.append(f"{kind} {entry!r}: {exc}")
        return bad


def validate_entry(kind: str, entry: str) -> None:
    """Raise WhitelistError when ``entry`` is not valid for ``kind``."""
    Whitelist().add(kind, entry)
