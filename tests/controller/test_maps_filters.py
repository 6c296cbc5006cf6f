"""Unit tests for filter_plugins/passerelle_maps.py."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Any

import pytest
from ansible.errors import AnsibleFilterError

from plugins import load

ROOT = Path(__file__).resolve().parents[2]
pm = load("filter_plugins/passerelle_maps.py")

LDAP = {"uri": "ldap://ldap.example.org", "base": "dc=example,dc=org"}


def test_filter_module_exports():
    names = set(pm.FilterModule().filters())
    assert {
        "passerelle_domains",
        "passerelle_mailertable",
        "passerelle_relay_domains",
        "passerelle_access",
        "passerelle_sender_domains",
    } <= names


# --- passerelle_domains ----------------------------------------------------------------


def test_domains_normalised():
    result = pm.passerelle_domains(
        [
            {"name": "CICT.Example.fr", "server": "Mail.CICT.example.fr"},
            {"name": "b.example.org", "routing": "static", "server": "[192.0.2.5]", "port": 2525},
            {"name": "c.example.org", "routing": "ldap"},
            {"name": "d.example.org", "server": "[IPv6:2001:DB8:0::1]", "mailer": "relay"},
            {"name": "xn--bcher-kva.example", "server": "mailstore1"},
            {"name": "e.example.org", "server": "[2001:db8::2]"},
        ],
        ldap=LDAP,
    )
    assert result == [
        {
            "name": "cict.example.fr",
            "routing": "static",
            "server": "mail.cict.example.fr",
            "mailer": "esmtp",
            "port": None,
        },
        {
            "name": "b.example.org",
            "routing": "static",
            "server": "192.0.2.5",
            "mailer": "esmtp",
            "port": 2525,
        },
        {
            "name": "c.example.org",
            "routing": "ldap",
            "server": None,
            "mailer": "esmtp",
            "port": None,
        },
        {
            "name": "d.example.org",
            "routing": "static",
            "server": "IPv6:2001:db8::1",
            "mailer": "relay",
            "port": None,
        },
        {
            "name": "xn--bcher-kva.example",
            "routing": "static",
            "server": "mailstore1",
            "mailer": "esmtp",
            "port": None,
        },
        {
            "name": "e.example.org",
            "routing": "static",
            "server": "IPv6:2001:db8::2",
            "mailer": "esmtp",
            "port": None,
        },
    ]
    # validated output validates again to itself
    assert pm.passerelle_domains(result, ldap=LDAP) == result


OK = {"name": "ok.example.org", "server": "mx.example.org"}


@pytest.mark.parametrize(
    ("items", "ldap", "expected"),
    [
        ([OK, "x.org"], None, "passerelle_domains[1] 'x.org': expected a dict"),
        ([OK, {"server": "mx"}], None, "passerelle_domains[1] {'server': 'mx'}: expected a dict"),
        (
            [OK, OK, {"name": "exa mple.org", "server": "mx"}],
            None,
            "passerelle_domains[1] 'ok.example.org': domain listed twice",
        ),
        (
            [OK, {"name": "exa mple.org", "server": "mx"}],
            None,
            "passerelle_domains[1] 'exa mple.org': invalid domain name",
        ),
        ([{"name": "-bad.org", "server": "mx"}], None, "[0] '-bad.org': invalid domain name"),
        ([{"name": "bad-.org", "server": "mx"}], None, "[0] 'bad-.org': invalid domain name"),
        ([{"name": "localhost", "server": "mx"}], None, "[0] 'localhost': invalid domain name"),
        ([{"name": "x.org.", "server": "mx"}], None, "[0] 'x.org.': invalid domain name"),
        ([{"name": "bücher.de", "server": "mx"}], None, "punycode"),
        ([{"name": "a" * 64 + ".org", "server": "mx"}], None, "invalid domain name"),
        ([{"name": ("a" * 60 + ".") * 5 + "org", "server": "mx"}], None, "253"),
        ([{"name": "under_score.org", "server": "mx"}], None, "invalid domain name"),
        ([{"name": "192.0.2.1", "server": "mx"}], None, "[0] '192.0.2.1': invalid domain name"),
        (
            [OK, {"name": "OK.Example.org", "server": "mx"}],
            None,
            "[1] 'OK.Example.org': domain listed twice (also passerelle_domains[0])",
        ),
        (
            [{"name": "r.example.org", "routing": "dns", "server": "mx"}],
            None,
            "[0] 'r.example.org': routing 'dns' is not one of",
        ),
        ([{"name": "s.example.org"}], None, "[0] 's.example.org': routing static needs a server"),
        (
            [{"name": "s.example.org", "server": "bad host"}],
            None,
            "[0] 's.example.org': server 'bad host' is neither a valid hostname nor an IP",
        ),
        (
            [{"name": "s.example.org", "server": "[mx.example.org]"}],
            None,
            "is neither a valid hostname",
        ),
        (
            [{"name": "s.example.org", "server": "[999.0.2.1]"}],
            None,
            "is neither a valid hostname",
        ),
        (
            [OK, {"name": "l.example.org", "routing": "ldap"}],
            None,
            "[1] 'l.example.org': routing ldap needs passerelle_ldap settings (uri, base)",
        ),
        (
            [{"name": "l.example.org", "routing": "ldap"}],
            {"uri": "ldap://x"},
            "routing ldap needs passerelle_ldap settings (uri, base)",
        ),
        (
            [{"name": "l.example.org", "routing": "ldap", "server": "mx"}],
            LDAP,
            "[0] 'l.example.org': server is only used with routing static",
        ),
        (
            [{"name": "u.example.org", "server": "mx", "priority": 10}],
            None,
            "[0] 'u.example.org': unknown keys ['priority']",
        ),
        (
            [{"name": "m.example.org", "server": "mx", "mailer": "local"}],
            None,
            "[0] 'm.example.org': mailer 'local' is not one of",
        ),
        (
            [{"name": "p.example.org", "server": "mx", "port": 70000}],
            None,
            "[0] 'p.example.org': port 70000",
        ),
        (
            [{"name": "p.example.org", "server": "mx", "port": "25a"}],
            None,
            "[0] 'p.example.org': port '25a'",
        ),
    ],
)
def test_domain_errors_name_the_entry(items: list[Any], ldap: Any, expected: str):
    with pytest.raises(AnsibleFilterError) as exc:
        pm.passerelle_domains(items, ldap=ldap)
    assert expected in str(exc.value)


def test_domains_not_a_list():
    with pytest.raises(AnsibleFilterError, match="expected a list"):
        pm.passerelle_domains({"name": "x.org"})


def test_ldap_routing_ok_with_settings():
    (item,) = pm.passerelle_domains([{"name": "l.example.org", "routing": "ldap"}], ldap=LDAP)
    assert item["routing"] == "ldap" and item["server"] is None


# --- mailertable / relay domains ---------------------------------------------------------


def test_mailertable_rendering():
    domains = pm.passerelle_domains(
        [
            {"name": "cict.example.fr", "server": "mail.cict.example.fr"},
            {"name": "b.example.org", "server": "192.0.2.5"},
            {"name": "a.example.org", "server": "[IPv6:2001:db8::25]", "mailer": "smtp"},
            {"name": "l.example.org", "routing": "ldap"},
            {"name": "p.example.org", "server": "mx.example.org", "port": 2525},
            {"name": "q.example.org", "server": "mx.example.org", "port": 25},
        ],
        ldap=LDAP,
    )
    assert pm.passerelle_mailertable(domains) == [
        ["a.example.org", "smtp:[IPv6:2001:db8::25]"],
        ["b.example.org", "esmtp:[192.0.2.5]"],
        ["cict.example.fr", "esmtp:[mail.cict.example.fr]"],
        ["p.example.org", "esmtp2525:[mx.example.org]"],
        ["q.example.org", "esmtp:[mx.example.org]"],
    ]
    assert pm.passerelle_port_mailers(domains) == [
        {"name": "esmtp2525", "base": "esmtp", "port": 2525}
    ]


def test_relay_domains_sorted_static_and_ldap():
    domains = pm.passerelle_domains(
        [
            {"name": "z.example.org", "server": "mx"},
            {"name": "L.example.org", "routing": "ldap"},
            {"name": "a.example.org", "server": "mx"},
        ],
        ldap=LDAP,
    )
    assert pm.passerelle_relay_domains(domains) == [
        "a.example.org",
        "l.example.org",
        "z.example.org",
    ]


def test_mailertable_validates_raw_input():
    with pytest.raises(AnsibleFilterError, match=r"passerelle_domains\[0\] 'x y': invalid"):
        pm.passerelle_mailertable([{"name": "x y", "server": "mx"}])


# --- sender domains ---------------------------------------------------------------------


def test_sender_domains():
    assert pm.passerelle_sender_domains(["B.example.org", "a.example.org", "b.example.org"]) == [
        "a.example.org",
        "b.example.org",
    ]
    with pytest.raises(AnsibleFilterError) as exc:
        pm.passerelle_sender_domains(["ok.org", "not valid.org"])
    assert "passerelle_sender_domains[1] 'not valid.org': invalid domain name" in str(exc.value)


# --- access map -------------------------------------------------------------------------


def keys(entries: list[list[str]]) -> list[str]:
    return [key for key, _ in entries]


@pytest.mark.parametrize(
    ("network", "expected"),
    [
        ("198.51.100.0/24", ["Connect:198.51.100"]),
        ("198.51.100.0/23", ["Connect:198.51.100", "Connect:198.51.101"]),
        ("172.16.0.0/16", ["Connect:172.16"]),
        ("10.0.0.0/8", ["Connect:10"]),
        ("172.16.0.0/12", [f"Connect:172.{n}" for n in range(16, 32)]),
        ("192.0.2.10/32", ["Connect:192.0.2.10"]),
        ("192.0.2.8/30", [f"Connect:192.0.2.{n}" for n in range(8, 12)]),
    ],
)
def test_cidr_expansion(network: str, expected: list[str]):
    entries = pm.passerelle_access([network])
    assert sorted(keys(entries)) == sorted(expected)
    assert {value for _, value in entries} == {"REJECT"}


def test_cidr_25_expands_to_128_hosts():
    entries = pm.passerelle_access(["203.0.113.128/25"])
    assert len(entries) == 128
    expected = {f"Connect:{ip}" for ip in ipaddress.ip_network("203.0.113.128/25")}
    assert set(keys(entries)) == expected


def test_expansion_covers_exactly_the_network():
    # every address of a /13 is matched by exactly one key (sendmail strips octets)
    entries = set(keys(pm.passerelle_access(["10.8.0.0/13"])))
    assert len(entries) == 8
    for probe in ("10.8.0.1", "10.15.255.255"):
        octets = probe.split(".")
        prefixes = {"Connect:" + ".".join(octets[:n]) for n in range(1, 5)}
        assert len(prefixes & entries) == 1
    assert "Connect:10.16" not in entries and "Connect:10.7" not in entries


def test_ipv6_entries():
    entries = dict(
        map(
            tuple,
            pm.passerelle_access(
                ["2001:DB8:0:0::1", "2001:db8:1::/48", "2001:db8::/32", "IPv6:2001:db8:ff::7"]
            ),
        )
    )
    assert entries == {
        "Connect:IPv6:2001:db8::1": "REJECT",
        "Connect:IPv6:2001:db8:1": "REJECT",
        "Connect:IPv6:2001:db8": "REJECT",
        "Connect:IPv6:2001:db8:ff::7": "REJECT",
    }


def test_domain_gives_connect_and_from():
    assert pm.passerelle_access(["Spam.Example.com"]) == [
        ["Connect:spam.example.com", "REJECT"],
        ["From:spam.example.com", "REJECT"],
    ]


def test_actions_and_messages():
    entries = dict(
        map(
            tuple,
            pm.passerelle_access(
                [
                    {"entry": "192.0.2.1", "action": "error"},
                    {"entry": "192.0.2.2", "action": "error", "message": "421 4.7.0 Try later"},
                    {"entry": "192.0.2.3", "action": "discard"},
                    {"entry": "192.0.2.4"},
                ],
                default_error="554 5.7.1 Blocked by policy",
            ),
        )
    )
    assert entries == {
        "Connect:192.0.2.1": 'ERROR:"554 5.7.1 Blocked by policy"',
        "Connect:192.0.2.2": 'ERROR:"421 4.7.0 Try later"',
        "Connect:192.0.2.3": "DISCARD",
        "Connect:192.0.2.4": "REJECT",
    }
    default = pm.passerelle_access([{"entry": "192.0.2.1", "action": "error"}])
    assert default == [["Connect:192.0.2.1", 'ERROR:"550 5.7.1 Access denied"']]


def test_relay_domains_and_networks():
    domains = pm.passerelle_domains([{"name": "a.example.org", "server": "mx"}])
    entries = pm.passerelle_access(
        ["198.51.100.7"],
        relay_domains=[*domains, "B.example.org"],
        relay_networks=["192.0.2.0/24", "10.1.2.3", "2001:db8::/32"],
    )
    assert entries == [
        ["Connect:10.1.2.3", "RELAY"],
        ["Connect:192.0.2", "RELAY"],
        ["Connect:198.51.100.7", "REJECT"],
        ["Connect:IPv6:2001:db8", "RELAY"],
        ["To:a.example.org", "RELAY"],
        ["To:b.example.org", "RELAY"],
    ]


def test_identical_duplicates_merged():
    assert pm.passerelle_access(["192.0.2.0/24", "192.0.2.0/24", "192.0.2.0/24"]) == [
        ["Connect:192.0.2", "REJECT"]
    ]


def test_conflicting_duplicates_name_both_entries():
    with pytest.raises(AnsibleFilterError) as exc:
        pm.passerelle_access(["192.0.2.0/23", {"entry": "192.0.3.0/24", "action": "discard"}])
    message = str(exc.value)
    assert "'Connect:192.0.3'" in message
    assert "blacklist[0] '192.0.2.0/23'" in message
    assert "blacklist[1] '192.0.3.0/24'" in message


def test_blacklist_conflicting_with_relay_network():
    with pytest.raises(AnsibleFilterError) as exc:
        pm.passerelle_access(["10.0.0.0/8"], relay_networks=["10.0.0.0/8"])
    assert "relay_networks[0] '10.0.0.0/8'" in str(exc.value)
    assert "blacklist[0] '10.0.0.0/8'" in str(exc.value)


@pytest.mark.parametrize(
    ("blacklist", "expected"),
    [
        (["192.0.2.1", "not an ip"], "blacklist[1] 'not an ip': not an IP address, network"),
        (["10.0.0.1/8"], "blacklist[0] '10.0.0.1/8': host bits set in network, did you mean "),
        (["10.0.0.1/8"], "10.0.0.0/8"),
        (["0.0.0.0/0"], "blacklist[0] '0.0.0.0/0': a /0 network"),
        (["::/0"], "blacklist[0] '::/0': a /0 network"),
        (["192.0.2.0/33"], "blacklist[0] '192.0.2.0/33': not a valid IP network"),
        (
            ["2001:db8::/33"],
            "blacklist[0] '2001:db8::/33': IPv6 prefix /33 is not a multiple of 16",
        ),
        (["999.1.1.1"], "blacklist[0] '999.1.1.1': not an IP address"),
        (["IPv6:nonsense"], "blacklist[0] 'IPv6:nonsense': not a valid IPv6 address"),
        (["localhost"], "blacklist[0] 'localhost': not an IP address, network or domain"),
        ([""], "blacklist[0] '': entry must be a non-empty string"),
        ([42], "blacklist[0] 42: entry must be a non-empty string"),
        ([{"action": "reject"}], "blacklist[0] {'action': 'reject'}: a dict needs 'entry'"),
        ([{"entry": "x.org", "why": "spam"}], "blacklist[0] 'x.org': a dict needs 'entry'"),
        ([{"entry": "x.org", "action": "drop"}], "blacklist[0] 'x.org': action 'drop'"),
        (
            [{"entry": "x.org", "message": "550 5.7.1 no"}],
            "blacklist[0] 'x.org': message is only used with action error",
        ),
        (
            [{"entry": "x.org", "action": "error", "message": "Go away"}],
            "blacklist[0] 'x.org': message 'Go away': must look like",
        ),
        (
            [{"entry": "x.org", "action": "error", "message": "550 4.7.1 Go away"}],
            "classes differ",
        ),
        (
            [{"entry": "x.org", "action": "error", "message": "250 2.0.0 fine"}],
            "must look like",
        ),
        (
            [{"entry": "x.org", "action": "error", "message": '550 5.7.1 say "no"'}],
            "double quotes",
        ),
    ],
)
def test_access_errors_name_the_entry(blacklist: list[Any], expected: str):
    with pytest.raises(AnsibleFilterError) as exc:
        pm.passerelle_access(blacklist)
    assert expected in str(exc.value)


def test_access_bad_relay_inputs():
    with pytest.raises(AnsibleFilterError, match=r"relay_domains\[0\] 'bad domain'"):
        pm.passerelle_access([], relay_domains=["bad domain"])
    with pytest.raises(AnsibleFilterError, match=r"relay_networks\[1\] '10.0.0.0/33'"):
        pm.passerelle_access([], relay_networks=["10.0.0.0/8", "10.0.0.0/33"])
    with pytest.raises(AnsibleFilterError, match="default_error"):
        pm.passerelle_access([], default_error="Access denied")


def test_large_expansion_limit_constant():
    # IPv4 expansion to octet boundaries never exceeds 128 keys per network
    assert len(pm.passerelle_access(["10.0.0.0/9"])) == 128
    assert pm.MAX_EXPANSION == 65536


# --- local addresses (spam-learning mailboxes) ------------------------------------------------


def test_local_addresses_route_their_domain_locally():
    out = pm.passerelle_local_addresses(
        [
            {"address": "Spam@Learn.Example.org", "user": "passerelle-learn-spam"},
            {"address": "ham@learn.example.org", "user": "passerelle-learn-ham"},
        ],
        [{"name": "example.org", "server": "mx.example.org"}],
    )
    assert out == {
        "mailertable": [["learn.example.org", "local:"]],
        "relay_domains": ["learn.example.org"],
        "aliases": [["ham", "passerelle-learn-ham"], ["spam", "passerelle-learn-spam"]],
    }
    assert pm.passerelle_local_addresses([], None) == {
        "mailertable": [],
        "relay_domains": [],
        "aliases": [],
    }


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ({"address": "spam@example.org", "user": "u"}, "example.org is a managed domain"),
        ({"address": "spam", "user": "u"}, "address must be local@domain"),
        ({"address": "sp am@learn.example.org", "user": "u"}, "invalid local part"),
        ({"address": "spam@learn..org", "user": "u"}, "invalid domain name"),
        ({"address": "spam@learn.example.org", "user": "Root!"}, "unix user name"),
        ({"address": "spam@learn.example.org", "usr": "u"}, "expected {address"),
        ({"address": "postmaster@learn.example.org", "user": "u"}, "is a system alias"),
    ],
)
def test_local_addresses_bad_entries_are_named(item, message):
    with pytest.raises(AnsibleFilterError, match="passerelle_local_addresses\\[0\\]") as e:
        pm.passerelle_local_addresses([item], [{"name": "example.org", "server": "mx"}])
    assert message in str(e.value)


def test_local_addresses_same_local_part_twice():
    with pytest.raises(AnsibleFilterError, match="used twice"):
        pm.passerelle_local_addresses(
            [
                {"address": "spam@a.example.net", "user": "u1"},
                {"address": "spam@b.example.net", "user": "u2"},
            ]
        )


# --- LDAP settings (routing: ldap) ---------------------------------------------------


def test_ldap_settings_defaults():
    got = pm.passerelle_ldap_settings(LDAP)
    assert got["uri"] == "ldap://ldap.example.org"
    assert got["host_attribute"] == "mailHost"
    assert got["address_attribute"] == "mailRoutingAddress"
    assert got["search_attribute"] == "mailLocalAddress"
    assert got["object_class"] == "inetLocalMailRecipient"
    assert got["bind_dn"] == "" and got["timeout"] == 5


def test_ldap_settings_overrides():
    got = pm.passerelle_ldap_settings(
        {
            **LDAP,
            "uri": "ldaps://ldap.example.org:636",
            "bind_dn": "cn=gw,ou=services,dc=example,dc=org",
            "bind_password": "s3cret",
            "host_attribute": "mailRoutingHost",
            "search_attribute": "mail",
            "timeout": "10",
        }
    )
    assert got["host_attribute"] == "mailRoutingHost" and got["search_attribute"] == "mail"
    assert got["timeout"] == 10 and got["uri"] == "ldaps://ldap.example.org:636"


@pytest.mark.parametrize(
    ("ldap", "expected"),
    [
        (None, "expected a dict"),
        ({"base": "dc=x"}, "passerelle_ldap.uri"),
        ({"uri": "ldap://a ldap://b", "base": "dc=x"}, "passerelle_ldap.uri"),
        ({"uri": "http://x", "base": "dc=x"}, "passerelle_ldap.uri 'http://x'"),
        ({"uri": "ldap://x"}, "passerelle_ldap.base"),
        ({"uri": "ldap://x", "base": "ou=my people,dc=x"}, "passerelle_ldap.base"),
        ({**LDAP, "bind_dn": "cn=gw,dc=x"}, "bind_dn and bind_password go together"),
        ({**LDAP, "bind_password": "x"}, "bind_dn and bind_password go together"),
        ({**LDAP, "host_attribute": "mail host"}, "passerelle_ldap.host_attribute"),
        ({**LDAP, "timeout": 0}, "passerelle_ldap.timeout"),
        ({**LDAP, "tiemout": 3}, "unknown keys ['tiemout']"),
    ],
)
def test_ldap_settings_errors(ldap: Any, expected: str):
    with pytest.raises(AnsibleFilterError, match=re.escape(expected)):
        pm.passerelle_ldap_settings(ldap)


def test_ldap_domain_checks_the_settings():
    with pytest.raises(AnsibleFilterError, match=r"passerelle_ldap\.host_attribute"):
        pm.passerelle_domains(
            [{"name": "l.example.org", "routing": "ldap"}], ldap={**LDAP, "host_attribute": "?"}
        )


def test_ldap_domains_listed_and_left_out_of_the_mailertable():
    items = [
        {"name": "s.example.org", "server": "m1"},
        {"name": "B.example.org", "routing": "ldap"},
        {"name": "a.example.org", "routing": "ldap"},
    ]
    assert pm.passerelle_ldap_domains(items) == ["a.example.org", "b.example.org"]
    assert [e[0] for e in pm.passerelle_mailertable(items)] == ["s.example.org"]
