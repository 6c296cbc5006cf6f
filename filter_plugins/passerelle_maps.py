# Copyright: Passerelle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters turning Passerelle inventory data into sendmail map entries.

``passerelle_domains | passerelle_fleet_model(ldap, local_addresses)`` validates the managed
domains once and returns the model every map is derived from (``playbooks/validate.yml`` sets
it once per host as the fact ``passerelle_routing``); the map filters below take that model
without validating again, or, for compatibility, a raw list, which they validate.

Every filter validates its raw input and raises ``AnsibleFilterError`` naming the offending
entry by position and value, e.g. ``passerelle_domains[3] 'exa mple.org': invalid domain
name``, so that a bad inventory fails the play before any host is touched.

The rules shared with the gateways' ``passerelle`` package (domain labels, LDAP defaults and
URI, timeout range) are defined once, in ``src/passerelle/routing/rules.py``, loaded here by
path (``_passerelle_load.py``).

Outputs are plain lists meant for the ``sendmail_map`` module (``entries``):

* ``passerelle_domains(domains, ldap=None)`` -> normalised list of dicts
  ``{name, routing, server, mailer, port}``.
* ``passerelle_mailertable(domains)`` -> ``[[domain, "esmtp:[server]"], ...]``.
* ``passerelle_relay_domains(domains)`` -> sorted list of names.
* ``passerelle_access(blacklist, relay_domains, relay_networks, default_error)`` ->
  ``[[key, value], ...]`` for the access map (``To:``, ``Connect:``, ``From:`` tags).
* ``passerelle_sender_domains(domains)`` -> validated, lowercased, sorted list.
* ``passerelle_ldap_settings(ldap)`` -> the directory settings of LDAP routing, checked and
  completed with their defaults.
* ``passerelle_ldap_domains(domains)`` -> sorted names of the LDAP-routed domains.
"""

from __future__ import annotations

import ipaddress
import os
import re
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ansible.errors import AnsibleFilterError

if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.append(str(Path(__file__).resolve().parent))  # for _passerelle_load
import _passerelle_load

RULES = _passerelle_load.routing_rules()
ROUTINGS: tuple[str, ...] = RULES.ROUTINGS
MAILERS: tuple[str, ...] = RULES.MAILERS
hostname_problem: Callable[..., str | None] = RULES.hostname_problem
MODEL = "passerelle_fleet_model"
DOMAIN_KEYS = frozenset({"name", "routing", "server", "mailer", "port"})
BLACKLIST_KEYS = frozenset({"entry", "action", "message"})
ACTIONS = ("reject", "error", "discard")
DEFAULT_ERROR = "550 5.7.1 Access denied"
MAX_EXPANSION = 65536
# What a TLS-required domain demands (access map): an encrypted session of 128 bits at least.
TLS_REQUIRED = "ENCR:128"

_SMTP_MESSAGE = re.compile(r"^([45])[0-9]{2} ([45])\.[0-9]{1,3}\.[0-9]{1,3} \S.*$")

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _where(fname: str, index: int, value: Any) -> str:
    return f"{fname}[{index}] {value!r}"


def _fail(fname: str, index: int, value: Any, reason: str) -> AnsibleFilterError:
    return AnsibleFilterError(f"{_where(fname, index, value)}: {reason}")


def _as_list(value: Any, fname: str) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, str | bytes | dict) or not isinstance(value, Iterable):
        raise AnsibleFilterError(f"{fname}: expected a list, got {type(value).__name__}")
    return list(value)


def _domain(value: Any, fname: str, index: int) -> str:
    problem = hostname_problem(value)
    if problem:
        raise _fail(fname, index, value, problem)
    return str(value).lower()


def _server(value: Any, fname: str, index: int, name: Any) -> str:
    """Normalise a route target.

    Accepted: a hostname (single-label allowed, e.g. a lab container name), an IPv4
    address with or without brackets, an IPv6 address bare, as ``[IPv6:...]`` or
    ``IPv6:...``. Returns the hostname lowercased, the IPv4 address, or
    ``IPv6:<compressed>`` (the form sendmail expects inside brackets).
    """
    if not isinstance(value, str) or not value:
        raise _fail(fname, index, name, f"server {value!r} must be a non-empty string")
    inner = value[1:-1] if value.startswith("[") and value.endswith("]") else value
    ip_text = inner[5:] if inner.lower().startswith("ipv6:") else inner
    try:
        address = ipaddress.ip_address(ip_text)
    except ValueError:
        address = None
    if address is not None:
        if address.version == 6:
            return f"IPv6:{address.compressed}"
        if inner == ip_text:
            return str(address)
    elif inner == value and not hostname_problem(value, min_labels=1):
        return value.lower()
    raise _fail(
        fname,
        index,
        name,
        f"server {value!r} is neither a valid hostname nor an IP address "
        "(use host.example.org, 192.0.2.5, [192.0.2.5] or [IPv6:2001:db8::1])",
    )


def _ldap_ready(ldap: Any) -> bool:
    return isinstance(ldap, dict) and bool(ldap.get("uri")) and bool(ldap.get("base"))


# passerelle_ldap: the directory of the LDAP-routed domains (defaults: the shared rules).
LDAP_DEFAULTS: dict[str, Any] = RULES.LDAP_DEFAULTS
LDAP_KEYS = frozenset({"uri", "base", *LDAP_DEFAULTS})


def passerelle_ldap_settings(ldap: Any) -> dict[str, Any]:
    """Check ``passerelle_ldap`` and fill in the defaults.

    ``uri``: one ``ldap://host[:port]`` or ``ldaps://host[:port]`` (several servers: one
    name that resolves to them all); ``base``: search base DN; ``bind_dn`` + ``bind_password``: a
    simple bind (both empty: anonymous); attribute and object class names; ``timeout``:
    seconds for connecting and for each search.
    """
    fname = "passerelle_ldap"
    if not isinstance(ldap, dict):
        raise AnsibleFilterError(f"{fname}: expected a dict with uri and base, got {ldap!r}")
    unknown = sorted(set(ldap) - LDAP_KEYS)
    if unknown:
        raise AnsibleFilterError(f"{fname}: unknown keys {unknown} (allowed: {sorted(LDAP_KEYS)})")
    result = dict(LDAP_DEFAULTS)
    result.update({k: v for k, v in ldap.items() if v is not None})

    def bad(key: str, why: str) -> AnsibleFilterError:
        return AnsibleFilterError(f"{fname}.{key} {result.get(key)!r}: {why}")

    problem = RULES.ldap_uri_problem(result.get("uri"))
    if problem:
        raise bad("uri", f"required: {problem}")
    for key in ("base", "bind_dn"):
        value = result.get(key)
        if key == "base" and not value:
            raise bad(key, "required (the search base DN)")
        if not isinstance(value, str) or (value and not RULES.LDAP_DN.match(value)):
            raise bad(key, "not a DN like ou=people,dc=example,dc=org (no spaces or quotes)")
    if not isinstance(result["bind_password"], str):
        raise bad("bind_password", "must be a string")
    if bool(result["bind_dn"]) != bool(result["bind_password"]):
        raise AnsibleFilterError(
            f"{fname}: bind_dn and bind_password go together (both empty: anonymous search)"
        )
    for key in RULES.LDAP_NAME_KEYS:
        if not isinstance(result[key], str) or not RULES.LDAP_ATTRIBUTE.match(result[key]):
            raise bad(key, "not an LDAP attribute or class name")
    timeout = result["timeout"]
    problem = RULES.ldap_timeout_problem(timeout)
    if problem:
        raise bad("timeout", problem)
    result["timeout"] = int(str(timeout))
    return result


def _valid(domains: Any) -> list[dict[str, Any]]:
    """The normalised domains of a model (no validation), or a raw list validated."""
    if isinstance(domains, dict) and domains.get("model") == MODEL:
        return list(domains["domains"])
    return _validate_domains(domains, None, check_ldap=False)


def passerelle_ldap_domains(domains: Any) -> list[str]:
    """Sorted names of the LDAP-routed domains (a model, or a raw list)."""
    return _ldap_domains(_valid(domains))


def _ldap_domains(valid: list[dict[str, Any]]) -> list[str]:
    return sorted(item["name"] for item in valid if item["routing"] == "ldap")


# How many times a domain list was validated in this process, and, when the environment
# names a file in PASSERELLE_MAPS_COUNT, one line appended there per validation (Ansible templates
# in forked workers: a file is what adds up across them). Tests use both to prove that a
# run validates the inventory once per host.
VALIDATIONS = 0


def _count_validation(domains: Any) -> None:
    global VALIDATIONS
    VALIDATIONS += 1
    log = os.environ.get("PASSERELLE_MAPS_COUNT")
    if log:
        with open(log, "a", encoding="utf-8") as out:
            out.write(f"{os.getpid()} {len(_as_list(domains, 'passerelle_domains'))}\n")


def _validate_domains(domains: Any, ldap: Any, check_ldap: bool) -> list[dict[str, Any]]:
    fname = "passerelle_domains"
    _count_validation(domains)
    ldap_checked = False
    result: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for index, item in enumerate(_as_list(domains, fname)):
        if not isinstance(item, dict) or "name" not in item:
            raise _fail(fname, index, item, "expected a dict with at least 'name'")
        unknown = sorted(set(item) - DOMAIN_KEYS)
        if unknown:
            raise _fail(
                fname,
                index,
                item.get("name"),
                f"unknown keys {unknown} (allowed: {sorted(DOMAIN_KEYS)})",
            )
        raw_name = item["name"]
        name = _domain(raw_name, fname, index)
        if name in seen:
            raise _fail(
                fname,
                index,
                raw_name,
                f"domain listed twice (also {fname}[{seen[name]}])",
            )
        seen[name] = index

        routing = item.get("routing") or "static"
        if routing not in ROUTINGS:
            raise _fail(
                fname, index, raw_name, f"routing {routing!r} is not one of {list(ROUTINGS)}"
            )
        server = item.get("server")
        if routing == "static":
            if not server:
                raise _fail(fname, index, raw_name, "routing static needs a server")
            server = _server(server, fname, index, raw_name)
        else:
            if server:
                raise _fail(fname, index, raw_name, "server is only used with routing static")
            if check_ldap and not _ldap_ready(ldap):
                raise _fail(
                    fname,
                    index,
                    raw_name,
                    "routing ldap needs passerelle_ldap settings (uri, base)",
                )
            if check_ldap and not ldap_checked:
                passerelle_ldap_settings(ldap)
                ldap_checked = True
            server = None

        mailer = item.get("mailer") or "esmtp"
        if mailer not in MAILERS:
            raise _fail(fname, index, raw_name, f"mailer {mailer!r} is not one of {list(MAILERS)}")
        port = item.get("port")
        if port is not None:
            port_text = str(port)
            if isinstance(port, bool) or not port_text.isdigit() or not 0 < int(port_text) < 65536:
                raise _fail(fname, index, raw_name, f"port {port!r} is not in 1-65535")
            port = int(port_text)
        result.append(
            {"name": name, "routing": routing, "server": server, "mailer": mailer, "port": port}
        )
    return result


def passerelle_domains(domains: Any, ldap: Any = None) -> list[dict[str, Any]]:
    """Validate and normalise the inventory's managed-domain list."""
    return _validate_domains(domains, ldap, check_ldap=True)


def passerelle_fleet_model(
    domains: Any, ldap: Any = None, local_addresses: Any = None
) -> dict[str, Any]:
    """Validate the managed domains (and their directory) once; return every map built from them.

    ``domains``: passerelle_domains; ``ldap``: passerelle_ldap; ``local_addresses``: the
    addresses delivered on the gateway (``passerelle_local_addresses``). The model::

        {model: passerelle_fleet_model, domains: [normalised], mailertable: [[d, route]],
         port_mailers: [...], relay_domains: [...], ldap_domains: [...],
         ldap: {settings with defaults} or {} (no LDAP-routed domain), local_aliases: [...]}

    The map filters accept it in place of a domain list and do not validate again.
    """
    valid = _validate_domains(domains, ldap, check_ldap=True)
    local = passerelle_local_addresses(local_addresses, valid)
    ldap_domains = _ldap_domains(valid)
    return {
        "model": MODEL,
        "domains": valid,
        "mailertable": _mailertable(valid) + local["mailertable"],
        "port_mailers": _port_mailers(valid),
        "relay_domains": sorted(item["name"] for item in valid) + local["relay_domains"],
        "ldap_domains": ldap_domains,
        "ldap": passerelle_ldap_settings(ldap) if ldap_domains else {},
        "local_aliases": local["aliases"],
    }


def passerelle_learn_addresses(learn: Any) -> list[dict[str, str]]:
    """The gateway's local addresses for the spam-learning mailboxes.

    ``passerelle_spam_learn_addresses`` (``{spam: ADDRESS, ham: ADDRESS}``, either may be left
    out) -> ``[{address: ADDRESS, user: passerelle-learn-spam}, ...]``.
    """
    if learn is None:
        return []
    if not isinstance(learn, dict) or set(learn) - {"spam", "ham"}:
        raise AnsibleFilterError(
            f"passerelle_spam_learn_addresses {learn!r}: expected {{spam: ADDRESS, ham: ADDRESS}}"
        )
    return [
        {"address": address, "user": f"passerelle-learn-{kind}"} for kind, address in learn.items()
    ]


def passerelle_mailertable(domains: Any) -> list[list[str]]:
    """Mailertable entries for static domains; ldap-routed domains are omitted.

    The host is always bracketed (no MX lookup): ``esmtp:[mail.example.org]``,
    ``esmtp:[192.0.2.5]``, ``esmtp:[IPv6:2001:db8::1]``.

    A port other than 25 cannot be written in the mailertable: sendmail reads
    ``esmtp:[a]:[b]`` as a list of fallback hosts, so ``[host]:2525`` would mean "try host
    ``2525`` next". The port goes into the mailer name instead: ``esmtp2525:[host]``; the
    sendmail configuration must define that mailer (a copy of ``esmtp`` with
    ``A=TCP $h 2525``). See ``passerelle_port_mailers``.
    """
    return _mailertable(_valid(domains))


def _mailertable(valid: list[dict[str, Any]]) -> list[list[str]]:
    table: list[list[str]] = []
    for item in valid:
        if item["routing"] != "static":
            continue
        mailer = item["mailer"]
        if item["port"] not in (None, 25):
            mailer = f"{mailer}{item['port']}"
        table.append([item["name"], f"{mailer}:[{item['server']}]"])
    return sorted(table)


def passerelle_port_mailers(domains: Any) -> list[dict[str, Any]]:
    """Extra mailers needed by ``passerelle_mailertable`` for non-25 ports.

    Returns ``[{name: "esmtp2525", base: "esmtp", port: 2525}, ...]`` sorted by name.
    """
    return _port_mailers(_valid(domains))


def _port_mailers(valid: list[dict[str, Any]]) -> list[dict[str, Any]]:
    mailers: dict[str, dict[str, Any]] = {}
    for item in valid:
        if item["routing"] == "static" and item["port"] not in (None, 25):
            name = f"{item['mailer']}{item['port']}"
            mailers[name] = {"name": name, "base": item["mailer"], "port": item["port"]}
    return [mailers[name] for name in sorted(mailers)]


def passerelle_relay_domains(domains: Any) -> list[str]:
    """Sorted names of all managed domains (static and ldap)."""
    return sorted(item["name"] for item in _valid(domains))


def passerelle_sender_domains(domains: Any) -> list[str]:
    """Validated, lowercased, sorted, de-duplicated list of sender domains."""
    fname = "passerelle_sender_domains"
    return sorted({_domain(value, fname, i) for i, value in enumerate(_as_list(domains, fname))})


# --- access map ----------------------------------------------------------------------


def _ipv4_keys(network: ipaddress.IPv4Network) -> list[str]:
    """Sendmail matches IPv4 ``Connect:`` keys on whole octets (1.2.3.4, 1.2.3, 1.2, 1).

    A prefix that is not a multiple of 8 is expanded to the octet-boundary prefixes it
    covers: a /23 gives two /24 keys, a /25 gives 128 host keys, a /12 gives 16 /16 keys.
    """
    octets = -(-network.prefixlen // 8)  # ceil
    if network.prefixlen % 8 == 0:
        return [".".join(str(network.network_address).split(".")[:octets])]
    count = 2 ** (octets * 8 - network.prefixlen)
    if count > MAX_EXPANSION:
        raise ValueError(f"expands to {count} entries (more than {MAX_EXPANSION})")
    return [
        ".".join(str(sub.network_address).split(".")[:octets])
        for sub in network.subnets(new_prefix=octets * 8)
    ]


def _ipv6_key(network: ipaddress.IPv6Network) -> str:
    """Sendmail ``Connect:IPv6:`` prefix for a network whose prefix is a multiple of 16.

    Limitation: sendmail looks up the client address in the compressed text form that
    ``inet_ntop`` gives (``2001:db8::1``), stripping one ``:group`` at a time from the
    right. A network key is therefore its leading groups without leading zeros and without
    trailing colon (``2001:db8::/32`` -> ``IPv6:2001:db8``). Only prefixes on a 16-bit
    group boundary can be expressed, and a key whose groups end in zeros
    (``2001:db8:0::/48`` -> ``IPv6:2001:db8:0``) does not match addresses whose zero
    groups inet_ntop compresses into ``::`` (``2001:db8::5``): prefer blocking such
    ranges with a shorter prefix or by address.
    """
    if network.prefixlen == 128:
        return f"IPv6:{network.network_address.compressed}"
    if network.prefixlen % 16:
        raise ValueError(
            f"IPv6 prefix /{network.prefixlen} is not a multiple of 16 "
            "(sendmail matches IPv6 access keys on whole 16-bit groups)"
        )
    groups = network.network_address.exploded.split(":")[: network.prefixlen // 16]
    return "IPv6:" + ":".join(format(int(group, 16), "x") for group in groups)


def _classify(entry: Any) -> tuple[str, list[str]]:
    """Return (kind, keys-without-tag) for an entry: kind is 'ip' or 'domain'."""
    if not isinstance(entry, str) or not entry:
        raise ValueError("entry must be a non-empty string")
    text = entry[5:] if entry.lower().startswith("ipv6:") else entry
    if "/" in text:
        try:
            network = ipaddress.ip_network(text, strict=True)
        except ValueError as exc:
            try:
                loose = ipaddress.ip_network(text, strict=False)
            except ValueError:
                raise ValueError(f"not a valid IP network ({exc})") from None
            raise ValueError(f"host bits set in network, did you mean {loose}?") from None
        if network.prefixlen == 0:
            raise ValueError("a /0 network would match every client: refused")
        if isinstance(network, ipaddress.IPv4Network):
            return "ip", _ipv4_keys(network)
        return "ip", [_ipv6_key(network)]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        address = None
    if address is not None:
        if address.version == 6:
            return "ip", [f"IPv6:{address.compressed}"]
        return "ip", [str(address)]
    if entry != text:
        raise ValueError("not a valid IPv6 address")
    problem = hostname_problem(entry)
    if problem:
        raise ValueError(f"not an IP address, network or domain name: {problem}")
    return "domain", [entry.lower()]


def _action_value(item: Any, default_error: str, fname: str, index: int) -> tuple[Any, str]:
    """Return (entry, access-map value) for a blacklist item."""
    if isinstance(item, dict):
        unknown = sorted(set(item) - BLACKLIST_KEYS)
        if "entry" not in item or unknown:
            raise _fail(
                fname,
                index,
                item.get("entry", item),
                f"a dict needs 'entry' and only {sorted(BLACKLIST_KEYS)}",
            )
        entry = item["entry"]
        action = item.get("action") or "reject"
        message = item.get("message")
    else:
        entry, action, message = item, "reject", None
    if action not in ACTIONS:
        raise _fail(fname, index, entry, f"action {action!r} is not one of {list(ACTIONS)}")
    if message is not None and action != "error":
        raise _fail(fname, index, entry, "message is only used with action error")
    if action == "reject":
        return entry, "REJECT"
    if action == "discard":
        return entry, "DISCARD"
    text = default_error if message is None else message
    problem = smtp_message_problem(text)
    if problem:
        raise _fail(fname, index, entry, f"message {text!r}: {problem}")
    return entry, f'ERROR:"{text}"'


def smtp_message_problem(text: Any) -> str | None:
    """Why ``text`` is not a valid ``4xx/5xx X.Y.Z text`` reply, or None."""
    if not isinstance(text, str):
        return "must be a string"
    if '"' in text or "\n" in text or "\r" in text:
        return "must not contain double quotes or newlines"
    match = _SMTP_MESSAGE.match(text)
    if not match:
        return "must look like '550 5.7.1 text' (4xx/5xx code, enhanced code, text)"
    if match.group(1) != match.group(2):
        return "reply code and enhanced status code classes differ"
    return None


def passerelle_access(
    blacklist: Any,
    relay_domains: Any = None,
    relay_networks: Any = None,
    default_error: str = DEFAULT_ERROR,
    tls_required: Any = None,
    ok_clients: Any = None,
) -> list[list[str]]:
    """Access map entries, sorted by key.

    * relay domain ``d`` (name string, or a dict from ``passerelle_domains``) ->
      ``["To:d", "RELAY"]``;
    * relay network/address (smtpx allowed clients) -> ``["Connect:<prefix>", "RELAY"]``
      (a domain here gives ``Connect:domain`` only);
    * blacklist item (string, or ``{entry, action: reject|error|discard, message}``):
      IPv4 -> ``Connect:192.0.2.10``; IPv4 CIDR -> octet-boundary prefixes
      (see ``_ipv4_keys``); IPv6 -> ``Connect:IPv6:2001:db8::1``; IPv6 network with a
      prefix multiple of 16 -> ``Connect:IPv6:2001:db8`` (see ``_ipv6_key``); domain ->
      ``Connect:domain`` and ``From:domain``. Value: ``REJECT``, ``DISCARD`` or
      ``ERROR:"550 5.7.1 message"`` (message or ``default_error``);
    * TLS-required domain ``d`` (``sendmail_tls_required_domains``) -> ``["TLS_Srv:d",
      "ENCR:128"]`` (sendmail's tls_server ruleset, keyed on the name of the server it
      delivers to and its parent domains) and ``["TLS_Rcpt:d", "ENCR:128"]`` (tls_rcpt, keyed
      on the recipient's domain): without an encrypted session the message is deferred (4.7.0)
      and stays queued, never sent in clear;
    * exempt client address/network (``sendmail_dnsbl_exempt_clients``) ->
      ``["Connect:<prefix>", "OK"]``: sendmail's check_relay returns at an OK before the
      DNS blocklists (FEATURE enhdnsbl) are asked. A blacklist entry for a more specific key
      (an address inside an exempt network) still refuses: sendmail takes the longest key.

    Identical duplicate keys are merged; conflicting ones fail naming both entries.
    """
    problem = smtp_message_problem(default_error)
    if problem:
        raise AnsibleFilterError(f"passerelle_access default_error {default_error!r}: {problem}")
    entries: dict[str, tuple[str, str]] = {}

    def add(key: str, value: str, origin: str) -> None:
        seen = entries.get(key)
        if seen is None:
            entries[key] = (value, origin)
        elif seen[0] != value:
            raise AnsibleFilterError(
                f"passerelle_access: conflicting values for {key!r}: {seen[1]} gives "
                f"{seen[0]!r}, {origin} gives {value!r}"
            )

    fname = "passerelle_access relay_domains"
    for index, item in enumerate(_as_list(relay_domains, fname)):
        name = item.get("name") if isinstance(item, dict) else item
        add(f"To:{_domain(name, fname, index)}", "RELAY", _where(fname, index, name))

    fname = "passerelle_access relay_networks"
    for index, item in enumerate(_as_list(relay_networks, fname)):
        _add_entry(add, item, "RELAY", fname, index, tags=("Connect",))

    fname = "passerelle_access blacklist"
    for index, item in enumerate(_as_list(blacklist, fname)):
        entry, value = _action_value(item, default_error, fname, index)
        _add_entry(add, entry, value, fname, index, tags=("Connect", "From"))

    fname = "sendmail_dnsbl_exempt_clients"
    for index, item in enumerate(_as_list(ok_clients, fname)):
        _add_entry(add, item, "OK", fname, index, tags=("Connect",))

    fname = "sendmail_tls_required_domains"
    for index, item in enumerate(_as_list(tls_required, fname)):
        name = _domain(item, fname, index)
        origin = _where(fname, index, item)
        add(f"TLS_Srv:{name}", TLS_REQUIRED, origin)
        add(f"TLS_Rcpt:{name}", TLS_REQUIRED, origin)

    return [[key, entries[key][0]] for key in sorted(entries)]


def _add_entry(
    add: Callable[[str, str, str], None],
    entry: Any,
    value: str,
    fname: str,
    index: int,
    tags: tuple[str, ...],
) -> None:
    try:
        kind, keys = _classify(entry)
    except ValueError as exc:
        raise _fail(fname, index, entry, str(exc)) from None
    origin = _where(fname, index, entry)
    for key in keys:
        for tag in tags if kind == "domain" else ("Connect",):
            add(f"{tag}:{key}", value, origin)


_LOCAL_PART = re.compile(r"^[a-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*$")
_SYSTEM_ALIASES = frozenset(
    {"mailer-daemon", "postmaster", "abuse", "hostmaster", "webmaster", "nobody", "root"}
)
_UNIX_USER = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")


def passerelle_local_addresses(addresses: Any, domains: Any = None) -> dict[str, list[Any]]:
    """Addresses a gateway delivers to a local user (e.g. the spam-learning mailboxes).

    ``addresses``: ``[{address: spam@learn.example.org, user: passerelle-learn-spam}, ...]``.
    Each domain used here is routed to the local mailer as a whole, so it must not be a
    managed domain (``domains``, the passerelle_domains list or its model). Returns the map entries:
    ``{mailertable: [[domain, "local:"]], relay_domains: [domain], aliases: [[local, user]]}``.
    """
    fname = "passerelle_local_addresses"
    if isinstance(domains, dict) and domains.get("model") == MODEL:
        domains = domains["domains"]
    managed = {
        str(d.get("name", "")).lower() for d in _as_list(domains, fname) if isinstance(d, dict)
    }
    doms: set[str] = set()
    aliases: dict[str, str] = {}
    for i, item in enumerate(_as_list(addresses, fname)):
        if not isinstance(item, dict) or set(item) - {"address", "user"}:
            raise _fail(fname, i, item, "expected {address: local@domain, user: unix user name}")
        address, user = item.get("address"), item.get("user")
        if not isinstance(address, str) or address.count("@") != 1:
            raise _fail(fname, i, address, "address must be local@domain")
        local, dom = address.lower().split("@")
        if not _LOCAL_PART.match(local):
            raise _fail(fname, i, address, "invalid local part")
        dom = _domain(dom, fname, i)
        if dom in managed:
            raise _fail(
                fname,
                i,
                address,
                f"domain {dom} is a managed domain (passerelle_domains); local addresses need "
                "a domain of their own, delivered on the gateways",
            )
        if not isinstance(user, str) or not _UNIX_USER.match(user):
            raise _fail(fname, i, user, "user must be a unix user name")
        if local in aliases:
            raise _fail(fname, i, address, f"local part {local!r} used twice")
        if local in _SYSTEM_ALIASES:
            raise _fail(fname, i, address, f"local part {local!r} is a system alias")
        aliases[local] = user
        doms.add(dom)
    return {
        "mailertable": [[d, "local:"] for d in sorted(doms)],
        "relay_domains": sorted(doms),
        "aliases": [[k, aliases[k]] for k in sorted(aliases)],
    }


class FilterModule:
    """Passerelle sendmail map filters."""

    def filters(self) -> dict[str, Callable[..., Any]]:
        return {
            "passerelle_domains": passerelle_domains,
            "passerelle_fleet_model": passerelle_fleet_model,
            "passerelle_learn_addresses": passerelle_learn_addresses,
            "passerelle_mailertable": passerelle_mailertable,
            "passerelle_port_mailers": passerelle_port_mailers,
            "passerelle_relay_domains": passerelle_relay_domains,
            "passerelle_access": passerelle_access,
            "passerelle_sender_domains": passerelle_sender_domains,
            "passerelle_local_addresses": passerelle_local_addresses,
            "passerelle_ldap_settings": passerelle_ldap_settings,
            "passerelle_ldap_domains": passerelle_ldap_domains,
        }
