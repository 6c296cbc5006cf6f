"""The targets of the console's greylist and connection-guard requests, checked once here for
the request table (``requests.check_target``), the pages and the gateway's side.

- ``whitelist_add`` / ``whitelist_remove``: ``KIND:ENTRY`` (``client:192.0.2.7``,
  ``sender:@example.org``), KIND one of the greylist whitelist's kinds; an entry to add must
  pass the greylist's own check (``greylist.whitelist.validate_entry``). The target column
  holds 64 ASCII characters: a longer or non-ASCII entry is refused with a message that says
  to use ``passerelle greylist whitelist`` on a gateway.
- ``unblock``: one IP address (IPv4 or IPv6, ``IPv6:`` prefix accepted), stored normalised.

Bad input raises ``ValueError`` with a message fit for the page; nothing is written.
"""

from __future__ import annotations

import ipaddress

from passerelle.greylist.whitelist import KINDS as WHITELIST_KINDS
from passerelle.greylist.whitelist import WhitelistError, validate_entry

WHITELIST_REQUESTS = ("whitelist_add", "whitelist_remove")
TARGET_MAX = 64  # console_requests.target: VARCHAR(64) CHARACTER SET ascii


def whitelist_target(kind: str, entry: str, adding: bool) -> str:
    """``KIND:ENTRY`` for a request; ``ValueError`` (a page message) when it cannot be one."""
    if kind not in WHITELIST_KINDS:
        raise ValueError(f"unknown kind of whitelist entry (known: {', '.join(WHITELIST_KINDS)})")
    e = entry.strip() if isinstance(entry, str) else ""
    if not e:
        raise ValueError("the whitelist entry is empty")
    if adding:
        try:
            validate_entry(kind, e)
        except WhitelistError as exc:
            raise ValueError(f"bad {kind} entry: {exc}") from None
    if not e.isascii() or not e.isprintable() or any(c.isspace() for c in e):
        raise ValueError(
            f"{e!r} cannot go through the console (not plain ASCII): use"
            " passerelle greylist whitelist on a gateway"
        )
    target = f"{kind}:{e}"
    if len(target) > TARGET_MAX:
        raise ValueError(
            f"entries longer than {TARGET_MAX - len(kind) - 1} characters cannot go through"
            " the console: use passerelle greylist whitelist on a gateway"
        )
    return target


def split_whitelist_target(target: object, adding: bool) -> tuple[str, str]:
    """(kind, entry) of a stored target, checked again (a row is input too)."""
    if not isinstance(target, str) or ":" not in target:
        raise ValueError("malformed whitelist target (KIND:ENTRY)")
    kind, _, entry = target.partition(":")
    if whitelist_target(kind, entry, adding) != target:
        raise ValueError("malformed whitelist target (KIND:ENTRY, no spaces)")
    return kind, entry


def unblock_target(target: object) -> str:
    """The normalised IP address of an unblock request; ``ValueError`` when it is none."""
    text = target.strip() if isinstance(target, str) else ""
    if text[:5].lower() == "ipv6:":
        text = text[5:]
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise ValueError(f"not an IP address: {str(target)[:80]!r}") from None
