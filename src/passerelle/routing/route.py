"""Where mail for an address goes, and why: the gateway's routing decision, explained.

Pure logic: the directory is an injected ``lookup`` (see ``directory.py`` for the real one),
so every case is testable without a server. The decision mirrors what sendmail does with
the configuration the sendmail role renders:

* a domain in the mailertable: that route (``esmtp:[server]``);
* an LDAP-routed domain (FEATURE ``ldap_routing`` with ``bounce``, ``nodomain``, ``queue``):
  one search for the entry whose search attribute is the address (more than one entry
  counts as none, like sendmail's ``-1``); its mail host and routing address decide:

  - routing address, no mail host (or one of the gateway's own names): the address is
    rewritten, then routed by the mailertable of its new domain;
  - mail host: relayed to it (its mailertable entry if it has one, else sendmail's relay
    mailer to that host), to the routing address if there is one, else to the address;
  - neither (no entry): refused at RCPT with ``550 5.1.1 User unknown`` (the role sets 5.1.1);
  - directory unreachable: the recipient is accepted and the message queued, retried at
    each queue run, never bounced;
* any other domain: not relayed (``550 5.7.1 Relaying denied``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from passerelle.routing.config import RoutingConfig


@dataclass(frozen=True)
class Entry:
    """A directory entry found for an address, with the two routing attributes."""

    dn: str
    mail_host: str | None = None
    routing_address: str | None = None


class DirectoryUnavailable(Exception):
    """The directory could not answer (down, timeout, bind refused): sendmail would queue."""


# Given an address (lowercased), the entries whose search attribute equals it.
Lookup = Callable[[str], list[Entry]]

ACCEPTED = "250 2.1.5 Recipient ok"
UNKNOWN_USER = "550 5.1.1 User unknown"
RELAY_DENIED = "550 5.7.1 Relaying denied"
QUEUED = "250 2.1.5 Recipient ok (directory unavailable: queued, retried at each queue run)"


@dataclass(frozen=True)
class Decision:
    address: str
    kind: str  # static | ldap | unknown-user | deferred | unmanaged | invalid
    rcpt_reply: str  # what an internet client gets at RCPT on a gateway
    mailer: str | None = None
    host: str | None = None
    recipient: str | None = None
    entry: Entry | None = None
    reasons: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def render(self) -> str:
        lines = [f"{self.address}: {self.kind}"]
        if self.mailer:
            lines.append(f"  deliver via {self.mailer}:{self.host} to <{self.recipient}>")
        lines.append(f"  RCPT reply: {self.rcpt_reply}")
        lines.extend(f"  - {r}" for r in self.reasons)
        return "\n".join(lines)


def split_address(address: str) -> tuple[str, str] | None:
    """``local@domain`` -> (local, lowercased domain); None if it is not one."""
    text = address.strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1]
    local, sep, domain = text.rpartition("@")
    if not sep or not local or not domain or any(c in text for c in " \t<>,;"):
        return None
    return local, domain.lower().rstrip(".")


def mailertable_route(config: RoutingConfig, host: str) -> tuple[str, str] | None:
    """sendmail's mailertable lookup for a host: the name, then ``.parent`` domains.

    Returns (key that matched, route) or None.
    """
    name = host.lower().rstrip(".")
    if name in config.mailertable:
        return name, config.mailertable[name]
    labels = name.split(".")
    for i in range(1, len(labels)):
        key = "." + ".".join(labels[i:])
        if key in config.mailertable:
            return key, config.mailertable[key]
    return None


def _split_route(route: str) -> tuple[str, str]:
    mailer, _, host = route.partition(":")
    return mailer, host


def _route_rewritten(config: RoutingConfig, address: str, reasons: list[str]) -> Decision:
    parts = split_address(address)
    domain = parts[1] if parts else ""
    found = mailertable_route(config, domain) if domain else None
    if found:
        mailer, host = _split_route(found[1])
        reasons.append(f"mailertable: {found[0]} -> {found[1]}")
        return Decision(address, "ldap", ACCEPTED, mailer, host, address, reasons=reasons)
    reasons.append(f"{domain or address} is not in the mailertable: sendmail's default route")
    return Decision(address, "ldap", ACCEPTED, "esmtp", domain or None, address, reasons=reasons)


def explain(address: str, config: RoutingConfig, lookup: Lookup) -> Decision:
    """Explain where a gateway sends mail for ``address``."""
    parts = split_address(address)
    if parts is None:
        return Decision(
            address,
            "invalid",
            "501 5.1.3 Bad recipient address syntax",
            reasons=["not an address of the form user@domain"],
        )
    local, domain = parts
    canonical = f"{local}@{domain}"
    reasons: list[str] = []

    if domain in config.mailertable:
        route = config.mailertable[domain]
        mailer, host = _split_route(route)
        reasons.append(f"mailertable: {domain} -> {route} (routing: static)")
        if mailer == "local":
            reasons.append("delivered on this gateway by the local mailer (a local mailbox)")
        return Decision(canonical, "static", ACCEPTED, mailer, host, canonical, reasons=reasons)

    if domain not in config.ldap_domains or config.ldap is None:
        reasons.append(
            f"{domain} is not a managed domain (neither in the mailertable nor LDAP-routed)"
        )
        return Decision(canonical, "unmanaged", RELAY_DENIED, reasons=reasons)

    ldap = config.ldap
    key = canonical.lower()
    search = f"({ldap.search_attribute}={key}) under {ldap.base} on {ldap.uri}"
    reasons.append(f"{domain} is LDAP-routed: search {search}")
    try:
        entries = lookup(key)
    except DirectoryUnavailable as exc:
        reasons.append(
            f"directory unavailable ({exc}): sendmail queues the message and "
            "retries the lookup at each queue run; it is never bounced for this"
        )
        return Decision(canonical, "deferred", QUEUED, reasons=reasons)

    if len(entries) != 1:
        if entries:
            reasons.append(
                f"{len(entries)} entries match ({', '.join(e.dn for e in entries)}): sendmail "
                "asks for a single match (-1) and treats this as no entry"
            )
        else:
            reasons.append("no entry found (the @domain lookup is off: nodomain)")
        reasons.append("refused at RCPT: the sender's server keeps the message (no backscatter)")
        return Decision(canonical, "unknown-user", UNKNOWN_USER, reasons=reasons)

    entry = entries[0]
    mra = entry.routing_address
    mh = entry.mail_host
    reasons.append(
        f"entry {entry.dn}: {ldap.host_attribute}={mh or '-'}, "
        f"{ldap.address_attribute}={mra or '-'}"
    )
    local_host = mh is not None and mh.lower().rstrip(".") in config.local_names
    if not mh and not mra:
        reasons.append(
            f"the entry has neither {ldap.host_attribute} nor {ldap.address_attribute}: "
            "sendmail treats it as no entry"
        )
        return Decision(canonical, "unknown-user", UNKNOWN_USER, entry=entry, reasons=reasons)
    if mra and (not mh or local_host):
        reasons.append(f"rewritten to {mra}, then routed as that address")
        decision = _route_rewritten(config, mra, reasons)
        return Decision(
            canonical,
            decision.kind,
            ACCEPTED,
            decision.mailer,
            decision.host,
            mra,
            entry=entry,
            reasons=decision.reasons,
        )
    if local_host:
        reasons.append(f"{mh} is this gateway: delivered locally")
        return Decision(canonical, "ldap", ACCEPTED, "local", mh, canonical, entry, reasons)
    assert mh is not None
    recipient = mra or canonical
    found = mailertable_route(config, mh)
    if found:
        mailer, host = _split_route(found[1])
        reasons.append(f"mail host {mh} is in the mailertable: {found[0]} -> {found[1]}")
    else:
        mailer, host = "relay", mh
        how = "no MX lookup" if mh.startswith("[") else "MX lookup, then its address"
        reasons.append(f"mail host {mh} is not in the mailertable: relay mailer ({how})")
    return Decision(canonical, "ldap", ACCEPTED, mailer, host, recipient, entry, reasons)
