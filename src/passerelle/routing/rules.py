"""The routing rules the controller and the gateways share: one definition.

The maps filter (``filter_plugins/passerelle_maps.py``, on the controller) checks the inventory
with these rules before any host is touched; ``routing.config`` (on the gateway) checks the
``routing.toml`` rendered from it with the same ones, so that what one side accepts the other
does too. Standard library only, and no import from the package: the filter loads this file
by its path (``filter_plugins/_passerelle_load.py``), since the controller need not have the
``passerelle`` package installed.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

# Routing of a managed domain, and the IPC mailers defined by sendmail's MAILER(`smtp').
ROUTINGS = ("static", "ldap")
MAILERS = ("esmtp", "smtp", "relay", "smtp8", "dsmtp")

# A DNS label (RFC 1035/1123), lowercase.
LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")


def hostname_problem(name: Any, min_labels: int = 2, trailing_dot: bool = False) -> str | None:
    """Return why ``name`` is not a valid host/domain name (RFC 1035/1123), or None.

    Labels: 1-63 characters, letters, digits and hyphens, no leading or trailing hyphen;
    total length <= 253; no trailing dot; the last label is not all-numeric (so that an
    IPv4 address is never taken for a name). IDNs must be given in punycode (``xn--``).
    ``trailing_dot``: the name may end with the root's dot (``bl.example.org.``, as DNS data
    writes it; one dot, checked without it).
    """
    if not isinstance(name, str):
        return "invalid domain name (not a string)"
    if not name.isascii():
        return "invalid domain name (IDN must be given as punycode, xn--...)"
    if trailing_dot and name.endswith("."):
        name = name[:-1]
    elif name.endswith("."):
        return "invalid domain name (trailing dot)"
    if not name or len(name) > 253:
        return "invalid domain name (empty or longer than 253 characters)"
    labels = name.lower().split(".")
    if len(labels) < min_labels:
        return f"invalid domain name (needs at least {min_labels} labels)"
    for label in labels:
        if not LABEL.match(label):
            return f"invalid domain name (bad label {label!r})"
    if labels[-1].isdigit():
        return "invalid domain name (numeric top-level label)"
    return None


# The directory of the LDAP-routed domains. Attribute names default to the ones of OpenLDAP's
# misc schema (objectClass inetLocalMailRecipient); timeout in seconds (connect and search).
LDAP_DEFAULTS: dict[str, Any] = {
    "bind_dn": "",
    "bind_password": "",
    "object_class": "inetLocalMailRecipient",
    "search_attribute": "mailLocalAddress",
    "host_attribute": "mailHost",
    "address_attribute": "mailRoutingAddress",
    "timeout": 5,
}
LDAP_NAME_KEYS = ("object_class", "search_attribute", "host_attribute", "address_attribute")
LDAP_TIMEOUT_MIN = 1
LDAP_TIMEOUT_MAX = 300
LDAP_ATTRIBUTE = re.compile(r"^[A-Za-z][A-Za-z0-9-]*$")
# A DN as sendmail's map options take it: whitespace or quotes would split the option line.
LDAP_DN = re.compile(r"^[A-Za-z][A-Za-z0-9-]*=[^,\s\"'`]+(,[A-Za-z][A-Za-z0-9-]*=[^,\s\"'`]+)*$")
_LDAP_URI = re.compile(
    r"^(?P<scheme>ldaps?)://(?P<host>\[[^\]/]*\]|[^:/\[\]]*)(?::(?P<port>[0-9]{1,5}))?/?$"
)


def ldap_uri_problem(uri: Any) -> str | None:
    """Why ``uri`` is not one ``ldap://host[:port]`` or ``ldaps://host[:port]``, or None.

    The host is a name (one label allowed), an IPv4 address or ``[IPv6]``; the port is in
    1-65535; a trailing ``/`` is allowed, nothing after it (no DN, no filter, no second URI:
    sendmail's ``-H`` and python-ldap would read those differently).
    """
    text = "one ldap://host[:port] or ldaps://host[:port]"
    if not isinstance(uri, str):
        return f"not a string: {text}"
    match = _LDAP_URI.match(uri)
    if not match:
        return text
    host, port = match.group("host"), match.group("port")
    if host.startswith("["):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return f"bad IPv6 address in brackets: {text}"
    elif hostname_problem(host, min_labels=1):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            return f"bad host name: {text}"
    if port is not None and not 0 < int(port) < 65536:
        return f"port not in 1-65535: {text}"
    return None


def ldap_timeout_problem(seconds: Any) -> str | None:
    """Why ``seconds`` is not a directory timeout (a whole number of seconds, 1-300), or None."""
    if isinstance(seconds, bool) or not str(seconds).isdigit():
        return f"must be a number of seconds in {LDAP_TIMEOUT_MIN}-{LDAP_TIMEOUT_MAX}"
    if not LDAP_TIMEOUT_MIN <= int(str(seconds)) <= LDAP_TIMEOUT_MAX:
        return f"must be a number of seconds in {LDAP_TIMEOUT_MIN}-{LDAP_TIMEOUT_MAX}"
    return None
