# Copyright: Passerelle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""DNS data of the inventory, checked on the controller before any host is touched
(``playbooks/validate.yml``) and turned into what the roles render.

* ``sendmail_dnsbl | passerelle_dnsbl`` -> one ``{zone, message, replies}`` per DNS blocklist,
  the arguments of sendmail's ``FEATURE(`enhdnsbl')`` (role sendmail, gateways): ``zone``
  without its trailing dot, ``message`` the right-hand side of the error (a quoted string, the
  client's address as sendmail's ``$&{client_addr}``), ``replies`` the A answers that count,
  each with the trailing dot the map's answers carry.
* ``resolver_local_data | passerelle_local_data`` -> the records (role resolver) as they are,
  once each is ``NAME TYPE DATA`` with a data part that suits the type.

Anything else raises ``AnsibleFilterError`` naming the entry (``sendmail_dnsbl[1]
'bl.example'``) and what is wrong with it.

A blocklist's zone is a domain name by the routing rules the gateways' ``passerelle``
package applies (``src/passerelle/routing/rules.py``, loaded by path through
``_passerelle_load.py``), its root's dot allowed. A record's owner name is not: DNS data names
may carry ``_`` (``_dmarc``, ``sel._domainkey``), a leading ``*`` and a single label.
"""

from __future__ import annotations

import ipaddress
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ansible.errors import AnsibleFilterError

if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.append(str(Path(__file__).resolve().parent))  # for _passerelle_load
import _passerelle_load

hostname_problem: Callable[..., str | None] = _passerelle_load.routing_rules().hostname_problem

DNSBL_KEYS = frozenset({"zone", "message", "replies"})
# enhdnsbl compares the answer with its 4th to 9th arguments: six replies at most.
MAX_REPLIES = 6
# No reply list: any answer in 127.0.0.0/24 (RFC 5782's listing codes). The 127.255.255.x
# codes some lists give for a refused query (Spamhaus to public resolvers) never refuse mail.
DEFAULT_REPLIES = ["127.0.0.$-."]
CLIENT = "{client_addr}"
DEFAULT_MESSAGE = "550 5.7.1 Mail from " + CLIENT + " refused: listed at {zone}"
# The message is written inside m4 quotes and a sendmail quoted string: no quotes, no $ or #,
# no parentheses or commas (m4 arguments), no backslash.
_MESSAGE = re.compile(
    r"^([45])[0-9]{2} ([45])\.[0-9]{1,3}\.[0-9]{1,3} [A-Za-z0-9 .:;/_=@?!%+&<>-]+$"
)
# m4 builtins GNU m4 expands even without arguments.
_M4_WORDS = re.compile(
    r"\b(dnl|divert|undivert|divnum|changequote|changecom|m4exit|m4wrap|traceon|traceoff|"
    r"dumpdef|sysval|__file__|__line__|__program__|__gnu__|__unix__|unix)\b"
)
# A label of a record's owner name (RFC 2181: service labels with '_', a wildcard '*').
_OWNER_LABEL = re.compile(r"^(\*|[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)$")
# Longest zone taken (a query name puts the client's reversed address before the zone).
MAX_ZONE = 200
RR_TYPES = frozenset({"A", "AAAA", "TXT", "MX", "CNAME", "PTR", "NS", "SRV"})
_TXT_STRINGS = re.compile(r'^("[^"\\]*"\s*)+$')
_TXT_STRING = re.compile(r'"([^"\\]*)"')


def _where(name: str, index: int, value: Any) -> str:
    return f"{name}[{index}] {value!r}"


def _zone_problem(zone: Any) -> str | None:
    problem = hostname_problem(zone, trailing_dot=True)
    if problem:
        return f"the zone is an {problem}"
    if len(zone.rstrip(".")) > MAX_ZONE:
        return f"the zone is too long for a query name ({MAX_ZONE} characters at most)"
    return None


def _message_rhs(text: str) -> str:
    """The message as a sendmail string: ``550 5.7.1 {client_addr} refused`` ->
    ``"550 5.7.1 " $&{client_addr} " refused"``."""
    parts = text.split(CLIENT)
    out = " $&{client_addr} ".join(f'"{p}"' for p in parts)
    return out.replace('"" ', "").replace(' ""', "")


def passerelle_dnsbl(entries: Any, name: str = "sendmail_dnsbl") -> list[dict[str, Any]]:
    """The DNS blocklists of ``entries``, checked (see the module's docstring)."""
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise AnsibleFilterError(f"{name} must be a list of {{zone, message, replies}}")
    out: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for index, item in enumerate(entries):
        entry = item.get("zone", item) if isinstance(item, dict) else item

        def bad(why: str, index: int = index, entry: Any = entry) -> AnsibleFilterError:
            return AnsibleFilterError(f"{_where(name, index, entry)}: {why}")

        if not isinstance(item, dict):
            raise bad("an entry is {zone: ..., message: ... (optional), replies: [...] (optional)}")
        unknown = sorted(set(item) - DNSBL_KEYS)
        if unknown or "zone" not in item:
            raise bad(f"an entry needs 'zone' and only {sorted(DNSBL_KEYS)} (got {sorted(item)})")
        problem = _zone_problem(item["zone"])
        if problem:
            raise bad(problem)
        zone = item["zone"].lower().rstrip(".")
        if zone in seen:
            raise bad(f"the zone is listed twice (also {name}[{seen[zone]}])")
        seen[zone] = index
        message = item.get("message")
        if message is None:
            message = DEFAULT_MESSAGE.replace("{zone}", zone)
        if not isinstance(message, str):
            raise bad("the message must be a string")
        bare = message.replace(CLIENT, "client")
        match = _MESSAGE.match(bare)
        if not match or match.group(1) != "5" or match.group(2) != "5":
            raise bad(
                f"message {message!r} must look like '550 5.7.1 text' (a permanent 5xx reply; "
                "letters, digits, spaces and . : ; / _ = @ ? ! % + & < > - only, and "
                f"{CLIENT} for the client's address)"
            )
        word = _M4_WORDS.search(bare)
        if word:
            raise bad(f"message {message!r}: the word {word.group(1)!r} is an m4 command")
        replies = item.get("replies")
        if replies is None or replies == []:
            rendered = list(DEFAULT_REPLIES)
        else:
            if not isinstance(replies, list):
                raise bad("replies must be a list of IPv4 addresses in 127.0.0.0/8")
            if len(replies) > MAX_REPLIES:
                raise bad(
                    f"{len(replies)} replies: sendmail's enhdnsbl takes {MAX_REPLIES} at most"
                )
            rendered = []
            for reply in replies:
                try:
                    address = ipaddress.IPv4Address(str(reply).strip())
                except ValueError:
                    address = None
                if address is None or address not in ipaddress.IPv4Network("127.0.0.0/8"):
                    raise bad(f"reply {reply!r} is not an IPv4 address in 127.0.0.0/8")
                rendered.append(f"{address}.")
        out.append({"zone": zone, "message": _message_rhs(message), "replies": rendered})
    return out


def _name_problem(owner: str) -> str | None:
    labels = owner.rstrip(".").split(".")
    if not owner.rstrip(".") or len(owner.rstrip(".")) > 253:
        return f"name {owner!r} is not a domain name"
    for position, label in enumerate(labels):
        if not _OWNER_LABEL.match(label) or (label == "*" and position > 0):
            return f"name {owner!r} is not a domain name (bad label {label!r})"
    return None


def _data_problem(rtype: str, data: str) -> str | None:
    if rtype == "A":
        try:
            ipaddress.IPv4Address(data)
        except ValueError:
            return f"A data {data!r} is not an IPv4 address"
    elif rtype == "AAAA":
        try:
            ipaddress.IPv6Address(data)
        except ValueError:
            return f"AAAA data {data!r} is not an IPv6 address"
    elif rtype == "TXT":
        if not _TXT_STRINGS.match(data):
            return 'TXT data must be one or more double-quoted strings ("v=spf1 ... -all")'
        for chunk in _TXT_STRING.findall(data):
            if len(chunk.encode()) > 255:
                return 'a TXT string is longer than 255 bytes: split it ("..." "...")'
    elif rtype == "MX":
        fields = data.split()
        if len(fields) != 2 or not fields[0].isdigit() or _name_problem(fields[1]):
            return f"MX data {data!r} must be 'PREFERENCE HOST'"
    elif rtype in ("CNAME", "PTR", "NS"):
        problem = _name_problem(data)
        if problem or len(data.split()) != 1:
            return f"{rtype} data {data!r} must be one domain name"
    elif rtype == "SRV":
        fields = data.split()
        if len(fields) != 4 or not all(f.isdigit() for f in fields[:3]) or _name_problem(fields[3]):
            return f"SRV data {data!r} must be 'PRIORITY WEIGHT PORT TARGET'"
    return None


def passerelle_local_data(records: Any, name: str = "resolver_local_data") -> list[str]:
    """The unbound local-data records of ``records``, checked (see the module's docstring).

    A record is ``NAME [TTL] [IN] TYPE DATA`` (``2.240.77.89.bl.lab.example. A 127.0.0.2``,
    ``example. TXT "v=spf1 -all"``), on one line, without single quotes (the role writes each
    in single quotes, so that the double quotes of TXT data reach unbound as they are).
    """
    if records is None:
        return []
    if not isinstance(records, list):
        raise AnsibleFilterError(f"{name} must be a list of 'NAME TYPE DATA' strings")
    out: list[str] = []
    for index, record in enumerate(records):

        def bad(why: str, index: int = index, record: Any = record) -> AnsibleFilterError:
            return AnsibleFilterError(f"{_where(name, index, record)}: {why}")

        if not isinstance(record, str) or not record.strip():
            raise bad("a record is a string 'NAME TYPE DATA'")
        if "'" in record or "\n" in record or "\r" in record or "\\" in record:
            raise bad("a record is one line without single quotes or backslashes")
        fields = record.split(None, 1)
        if len(fields) != 2:
            raise bad("a record is 'NAME TYPE DATA'")
        owner, rest = fields
        problem = _name_problem(owner)
        if problem:
            raise bad(problem)
        words = rest.split(None, 1)
        if words and words[0].isdigit():  # TTL
            words = words[1].split(None, 1) if len(words) == 2 else []
        if words and words[0].upper() == "IN":
            words = words[1].split(None, 1) if len(words) == 2 else []
        if len(words) != 2:
            raise bad("a record is 'NAME TYPE DATA'")
        rtype, data = words[0].upper(), words[1].strip()
        if rtype not in RR_TYPES:
            raise bad(f"type {words[0]!r} is not one of {sorted(RR_TYPES)}")
        problem = _data_problem(rtype, data)
        if problem:
            raise bad(problem)
        out.append(record.strip())
    return out


class FilterModule:
    """The DNS filters: blocklists of sendmail, local data of unbound."""

    def filters(self) -> dict[str, Callable[..., Any]]:
        return {
            "passerelle_dnsbl": passerelle_dnsbl,
            "passerelle_local_data": passerelle_local_data,
        }
