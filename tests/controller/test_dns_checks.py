"""DNS-based checks: filter_plugins/passerelle_dns.py (blocklists of sendmail, local records
of unbound), what the sendmail, resolver and spamassassin roles render from them, and bad
entries stopping the lab's run in the validation play, before any host changes."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from ansible.errors import AnsibleFilterError
from ansible.template import Templar

import ansible_render
from ansible_render import assert_lab_run_stops_in_validation, render, role_vars
from plugins import load

dns = load("filter_plugins/passerelle_dns.py")
pm = load("filter_plugins/passerelle_maps.py")
MC = "etc/mail/sendmail.mc.j2"
HW = {"processor_vcpus": 2, "memtotal_mb": 4096}
CF_DIR = Path("/usr/share/sendmail/cf")
ROOT = Path(__file__).resolve().parents[2]
PRODUCTION = ROOT / "inventory" / "production"
# The lab network, as the lab inventory reads it.
NET = os.environ.get("PASSERELLE_LAB_NET", "10.89.77")


def test_filters_are_exported():
    assert {"passerelle_dnsbl", "passerelle_local_data"} <= set(dns.FilterModule().filters())


# --- passerelle_dnsbl -----------------------------------------------------------------------


def test_a_zone_alone_gets_the_default_message_and_any_127_0_0_x_reply():
    assert dns.passerelle_dnsbl([{"zone": "bl.example.org."}]) == [
        {
            "zone": "bl.example.org",
            "message": (
                '"550 5.7.1 Mail from " $&{client_addr} " refused: listed at bl.example.org"'
            ),
            "replies": ["127.0.0.$-."],
        }
    ]


def test_message_and_replies_of_an_entry():
    got = dns.passerelle_dnsbl(
        [
            {
                "zone": "ZEN.Example.org",
                "message": "554 5.7.1 Listed: see https://example.org/q?ip={client_addr} now",
                "replies": ["127.0.0.2", "127.0.0.10"],
            }
        ]
    )
    assert got == [
        {
            "zone": "zen.example.org",
            "message": '"554 5.7.1 Listed: see https://example.org/q?ip=" $&{client_addr} " now"',
            "replies": ["127.0.0.2.", "127.0.0.10."],
        }
    ]


def test_the_zone_is_checked_with_the_routing_rules_of_the_package():
    """One definition of a domain name: src/passerelle/routing/rules.py, loaded by path."""
    assert dns.hostname_problem is pm.RULES.hostname_problem


@pytest.mark.parametrize(
    "zone", ["static-a.test", "xn--bcher-kva.example", "192.0.2.5", "-a.test", "a_b.test", "x"]
)
def test_a_zone_is_taken_when_the_package_takes_the_name(zone):
    try:
        dns.passerelle_dnsbl([{"zone": zone}])
        accepted = True
    except AnsibleFilterError:
        accepted = False
    assert accepted is (pm.hostname_problem(zone) is None)


def test_no_blocklist():
    assert dns.passerelle_dnsbl([]) == []
    assert dns.passerelle_dnsbl(None) == []


@pytest.mark.parametrize(
    ("entries", "named"),
    [
        (
            [{"zone": "bl example.org"}],
            "sendmail_dnsbl[0] 'bl example.org': the zone is an invalid domain name "
            "(bad label 'bl example')",
        ),
        (
            [{"zone": "localhost"}],
            "sendmail_dnsbl[0] 'localhost': the zone is an invalid domain name "
            "(needs at least 2 labels)",
        ),
        (
            [{"zone": "bl.example.123"}],
            "sendmail_dnsbl[0] 'bl.example.123': the zone is an invalid domain name "
            "(numeric top-level label)",
        ),
        (
            [{"zone": 5}],
            "sendmail_dnsbl[0] 5: the zone is an invalid domain name (not a string)",
        ),
        (
            [{"zone": "bl.example.org.."}],
            "sendmail_dnsbl[0] 'bl.example.org..': the zone is an invalid domain name "
            "(bad label '')",
        ),
        (
            [{"zone": "b\u00fccher.example"}],
            "the zone is an invalid domain name (IDN must be given as punycode, xn--...)",
        ),
        (
            [{"zone": "a" * 60 + "." + "b" * 60 + "." + "c" * 60 + "." + "d" * 20 + ".test"}],
            "the zone is too long for a query name (200 characters at most)",
        ),
        (
            [{"zone": "a.example"}, {"zone": "b.example", "replies": ["127.0.0.2", "10.0.0.2"]}],
            "sendmail_dnsbl[1] 'b.example': reply '10.0.0.2' is not an IPv4 address in 127.0.0.0/8",
        ),
        ([{"zone": "a.example", "replies": ["127.0.0"]}], "reply '127.0.0' is not an IPv4"),
        ([{"zone": "a.example", "replies": ["::1"]}], "reply '::1' is not an IPv4"),
        ([{"zone": "a.example", "replies": "127.0.0.2"}], "replies must be a list"),
        (
            [{"zone": "a.example", "replies": [f"127.0.0.{i}" for i in range(2, 9)]}],
            "7 replies: sendmail's enhdnsbl takes 6 at most",
        ),
        ([{"zone": "a.example", "message": "Go away"}], "message 'Go away' must look like"),
        ([{"zone": "a.example", "message": "451 4.7.1 Later"}], "a permanent 5xx reply"),
        ([{"zone": "a.example", "message": '550 5.7.1 "quoted"'}], "must look like"),
        ([{"zone": "a.example", "message": "550 5.7.1 a, b"}], "must look like"),
        ([{"zone": "a.example", "message": "550 5.7.1 it`s"}], "must look like"),
        ([{"zone": "a.example", "message": "550 5.7.1 $x"}], "must look like"),
        ([{"zone": "a.example", "message": "550 5.7.1 see dnl"}], "the word 'dnl' is an m4"),
        ([{"zone": "a.example", "reply": ["127.0.0.2"]}], "needs 'zone' and only"),
        (["a.example"], "sendmail_dnsbl[0] 'a.example': an entry is {zone"),
        ([{"zone": "a.example"}, {"zone": "A.example."}], "listed twice (also sendmail_dnsbl[0])"),
    ],
)
def test_bad_blocklists_are_refused_naming_the_entry(entries, named):
    with pytest.raises(AnsibleFilterError) as err:
        dns.passerelle_dnsbl(entries)
    assert named in str(err.value)


# --- passerelle_local_data ------------------------------------------------------------------

GOOD_RECORDS = [
    "2.0.0.127.bl.lab.example.test. A 127.0.0.2",
    'example.test. TXT "v=spf1 ip4:192.0.2.25 -all"',
    'sel._domainkey.example.test. 300 IN TXT "v=DKIM1; k=rsa; " "p=' + "A" * 250 + '"',
    '_dmarc.example.test. TXT "v=DMARC1; p=reject"',
    "*.wild.example.test. A 192.0.2.1",
    "example.test. MX 10 mx.example.test.",
    "host.example.test. AAAA 2001:db8::1",
    "www.example.test. CNAME host.example.test.",
]


def test_good_records_are_kept_as_they_are():
    assert dns.passerelle_local_data(GOOD_RECORDS) == GOOD_RECORDS
    assert dns.passerelle_local_data(None) == []


@pytest.mark.parametrize(
    ("record", "why"),
    [
        ("example.test.", "a record is 'NAME TYPE DATA'"),
        ("example.test. A", "a record is 'NAME TYPE DATA'"),
        ("bad..name. A 192.0.2.1", "is not a domain name"),
        ("a.*.example. A 192.0.2.1", "is not a domain name"),
        ("x.example. A 192.0.2", "A data '192.0.2' is not an IPv4 address"),
        ("x.example. AAAA 192.0.2.1", "is not an IPv6 address"),
        ("x.example. TXT v=spf1 -all", "TXT data must be one or more double-quoted strings"),
        ('x.example. TXT "unterminated', "TXT data must be one or more double-quoted strings"),
        ('x.example. TXT "' + "a" * 256 + '"', "longer than 255 bytes"),
        ("x.example. MX mx.example.", "MX data 'mx.example.' must be 'PREFERENCE HOST'"),
        ("x.example. FOO bar", "type 'FOO' is not one of"),
        ("x.example. TXT 'single'", "without single quotes"),
        ("x.example. A 192.0.2.1\nlocal-zone: evil. static", "one line"),
    ],
)
def test_bad_records_are_refused_naming_the_entry(record, why):
    with pytest.raises(AnsibleFilterError) as err:
        dns.passerelle_local_data(["ok.example. A 192.0.2.1", record])
    text = str(err.value)
    assert text.startswith(f"resolver_local_data[1] {record!r}: "), text
    assert why in text


# --- sendmail -------------------------------------------------------------------------------

DNSBL = [
    {"zone": "bl.example.org"},
    {
        "zone": "zen.example.org",
        "message": "550 5.7.1 {client_addr} is listed",
        "replies": ["127.0.0.2", "127.0.0.4"],
    },
]


def test_a_gateway_renders_one_enhdnsbl_feature_per_blocklist_in_order():
    mc = render("sendmail", MC, sendmail_kind="gateway", sendmail_dnsbl=DNSBL, facts=HW)
    features = [
        line for line in mc.splitlines() if "enhdnsbl" in line and line.startswith("FEATURE")
    ]
    assert features == [
        "FEATURE(`enhdnsbl', `bl.example.org', `\"550 5.7.1 Mail from \" $&{client_addr} "
        "\" refused: listed at bl.example.org\"', `t', `127.0.0.$-.')dnl",
        'FEATURE(`enhdnsbl\', `zen.example.org\', `"550 5.7.1 " $&{client_addr} " is listed"\', '
        "`t', `127.0.0.2.', `127.0.0.4.')dnl",
    ]


@pytest.mark.parametrize("kind", ["smtpx", "mailstore"])
def test_only_gateways_ask_blocklists(kind):
    mc = render("sendmail", MC, "smtpx1", sendmail_kind=kind, sendmail_dnsbl=DNSBL, facts=HW)
    assert "enhdnsbl" not in mc


def test_no_blocklist_no_feature_and_no_exempt_entries():
    mc = render("sendmail", MC, sendmail_kind="gateway", sendmail_dnsbl=[], facts=HW)
    assert "enhdnsbl" not in mc
    v = role_vars("sendmail", overrides={"sendmail_kind": "gateway", "sendmail_dnsbl": []})
    assert not [e for e in v["__sendmail_access"] if e[1] == "OK"]


def test_the_lab_gateway_asks_the_lab_blocklist_and_exempts_the_greylist_whitelist():
    mc = render("sendmail", MC, sendmail_kind="gateway", facts=HW)
    assert (
        "FEATURE(`enhdnsbl', `bl.lab.passerelle.test', `\"550 5.7.1 Client \" $&{client_addr} "
        "\" is listed at the lab blocklist\"', `t', `127.0.0.2.')dnl"
    ) in mc
    access = role_vars("sendmail", overrides={"sendmail_kind": "gateway"})["__sendmail_access"]
    net = NET
    # outside's main address and .242 (greylist whitelist), the fleet's .0/26 (64 keys)
    assert [f"Connect:{net}.242", "OK"] in access
    assert [f"Connect:{net}.250", "OK"] in access
    assert [f"Connect:{net}.63", "OK"] in access
    assert [f"Connect:{net}.241", "OK"] not in access
    # the blacklist is untouched: .240 still refused
    assert [f"Connect:{net}.240", "REJECT"] in access


def test_exempt_clients_are_the_greylist_whitelist_and_trusted_networks_addresses():
    v = role_vars(
        "sendmail",
        overrides={
            "sendmail_kind": "gateway",
            "greylist_whitelist_clients": ["192.0.2.7", "198.51.100.0/24", "mx.partner.test"],
            "greylist_trusted_networks": ["127.0.0.0/8"],
            "sendmail_dnsbl_exempt_extra": ["203.0.113.9"],
        },
    )
    ok = sorted(e[0] for e in v["__sendmail_access"] if e[1] == "OK")
    assert ok == ["Connect:127", "Connect:192.0.2.7", "Connect:198.51.100", "Connect:203.0.113.9"]


def test_an_exempt_client_that_is_also_blacklisted_fails_naming_both():
    with pytest.raises(AnsibleFilterError) as err:
        pm.passerelle_access(["192.0.2.7"], ok_clients=["192.0.2.7/32"])
    text = str(err.value)
    assert "Connect:192.0.2.7" in text and "blacklist[0]" in text
    assert "sendmail_dnsbl_exempt_clients[0]" in text


@pytest.mark.skipif(
    shutil.which("m4") is None or not (CF_DIR / "feature" / "enhdnsbl.m4").exists(),
    reason="needs m4 and sendmail's cf files (Debian's sendmail-cf) on the controller",
)
def test_the_built_cf_refuses_listed_clients_and_defers_on_a_failed_lookup():
    mc = render("sendmail", MC, sendmail_kind="gateway", sendmail_dnsbl=DNSBL, facts=HW)
    cf = subprocess.run(["m4"], input=mc, capture_output=True, text=True, check=True).stdout
    lines = cf.splitlines()
    start = lines.index("# DNS based IP address spam list zen.example.org")
    rules = [" ".join(line.split()) for line in lines[start : start + 7]]
    assert "R$-.$-.$-.$- $: <?> $(ednsbl $4.$3.$2.$1.zen.example.org. $: OK $)" in rules
    # a lookup that fails for a while: 451, never a refusal or a pass
    assert (
        'R<?>$+<TMP> $#error $@ 4.4.3 $: "451 Temporary lookup failure of " $&{client_addr} '
        '" at zen.example.org"'
    ) in rules
    assert 'R<?>127.0.0.2. $#error $@ 5.7.1 $: "550 5.7.1 " $&{client_addr} " is listed"' in rules
    assert 'R<?>127.0.0.4. $#error $@ 5.7.1 $: "550 5.7.1 " $&{client_addr} " is listed"' in rules
    # after the access map's answer: an OK (exempt client) returns before any lookup
    accept = lines.index("R<$={Accept}> <$*>\t$@ $1\t\t\t\treturn value of lookup")
    assert accept < start


# --- resolver -------------------------------------------------------------------------------


def test_local_data_is_written_in_single_quotes_inside_the_server_clause():
    conf = render(
        "resolver",
        "passerelle.conf.j2",
        resolver_local_data=["a.example.test. A 192.0.2.1", 'example.test. TXT "v=spf1 -all"'],
        resolver_forwarders=["192.0.2.53"],
        __resolver_resolv_conf={"changed": False},
        facts={"all_ipv6_addresses": []},
    )
    server, forward = conf.split("forward-zone:")
    assert "    local-data: 'a.example.test. A 192.0.2.1'\n" in server
    assert "    local-data: 'example.test. TXT \"v=spf1 -all\"'\n" in server
    assert "local-data" not in forward


def test_the_lab_resolvers_serve_the_lab_zones():
    conf = render(
        "resolver",
        "passerelle.conf.j2",
        __resolver_resolv_conf={"changed": False},
        facts={"all_ipv6_addresses": []},
    )
    net = NET
    rev = ".".join(reversed(net.split(".")))
    assert f"    local-data: '241.{rev}.bl.lab.passerelle.test. A 127.0.0.2'\n" in conf
    assert f"    local-data: '242.{rev}.bl.lab.passerelle.test. A 127.0.0.2'\n" in conf
    assert "    local-data: 'listed-url.test.uribl.lab.passerelle.test. A 127.0.0.2'\n" in conf
    assert f"    local-data: 'internet.test. TXT \"v=spf1 ip4:{net}.250 -all\"'\n" in conf
    assert "    local-data: '_dmarc.internet.test. TXT \"v=DMARC1; p=reject\"'\n" in conf
    assert f"    local-data: 'internet.test. A {net}.250'\n" in conf


# --- spamassassin ---------------------------------------------------------------------------


def _spamassassin_value(name: str, os_family: str = "Debian", **overrides: object) -> Any:
    v = role_vars("spamassassin", os_family=os_family, overrides=overrides)
    templar = Templar(loader=ansible_render._inventory(str(ansible_render.LAB))[0], variables=v)
    return templar.template(v[name])


def _spamassassin_packages(os_family: str, **overrides: object) -> list[str]:
    return _spamassassin_value("__spamassassin_all_packages", os_family, **overrides)


def test_network_tests_are_on_by_default_with_mail_spf():
    defaults = yaml.safe_load((ROOT / "roles/spamassassin/defaults/main.yml").read_text())
    assert defaults["spamassassin_network_tests"] is True
    # the production example keeps the default (no inventory file turns them off)
    production = "".join(p.read_text() for p in PRODUCTION.rglob("*.yml"))
    assert "spamassassin_network_tests" not in production
    assert "libmail-spf-perl" in _spamassassin_packages("Debian", spamassassin_network_tests=True)
    assert "perl-Mail-SPF" in _spamassassin_packages("RedHat", spamassassin_network_tests=True)
    cf = render("spamassassin", "etc/spamassassin/local.cf.j2", spamassassin_network_tests=True)
    assert "dns_available yes\nskip_rbl_checks 0\n" in cf


def test_network_tests_off_install_no_spf_and_disable_every_network_check():
    assert "libmail-spf-perl" not in _spamassassin_packages(
        "Debian", spamassassin_network_tests=False
    )
    cf = render("spamassassin", "etc/spamassassin/local.cf.j2", spamassassin_network_tests=False)
    assert "dns_available no\nskip_rbl_checks 1\n" in cf


DMARC_RULES = ("DMARC_PASS", "DMARC_REJECT", "DMARC_QUAR", "DMARC_NONE", "DMARC_MISSING")


def test_dmarc_is_on_by_default_with_its_rules_from_spamassassin_4():
    assert "libmail-dmarc-perl" in _spamassassin_packages("Debian")
    cf = render("spamassassin", "etc/spamassassin/local.cf.j2").splitlines()
    # loaded from SpamAssassin 4 only (EL 9's 3.4 has no such plugin: its lint would fail)
    guard = cf.index("if (version >= 4.000000)")
    assert cf[guard + 1 : guard + 3] == ["loadplugin Mail::SpamAssassin::Plugin::DMARC", "endif"]
    # the rules under the correctly spelt plugin name (the stock 25_dmarc.cf misspells it)
    block = cf[cf.index("ifplugin Mail::SpamAssassin::Plugin::DMARC") :]
    block = block[: block.index("endif")]
    assert "header DMARC_REJECT eval:check_dmarc_reject()" in block
    assert "header DMARC_QUAR eval:check_dmarc_quarantine()" in block
    assert "tflags DMARC_PASS net nice" in block
    assert {line.split()[1] for line in block if line.startswith("header ")} == set(DMARC_RULES)


def test_dmarc_off_or_network_tests_off_install_and_load_nothing_of_it():
    for overrides in ({"spamassassin_dmarc": False}, {"spamassassin_network_tests": False}):
        assert "libmail-dmarc-perl" not in _spamassassin_packages("Debian", **overrides)
        cf = render("spamassassin", "etc/spamassassin/local.cf.j2", **overrides)
        assert "DMARC" not in cf, overrides
    # EL 9: no Mail::DMARC package (SpamAssassin 3.4), the version guard keeps the plugin off
    assert not any("DMARC" in p for p in _spamassassin_packages("RedHat"))


def test_private_suffixes_get_a_suffix_list_of_their_own_only_when_listed():
    # the lab's senders are under test., which Mail::DMARC would skip: the lab lists it
    lab = yaml.safe_load((ROOT / "inventory/lab/group_vars/all/spam.yml").read_text())
    assert lab["spamassassin_dmarc_private_suffixes"] == ["test"]
    copy = "__spamassassin_dmarc_suffix_copy"
    assert _spamassassin_value(copy, spamassassin_dmarc_private_suffixes=["test"]) is True
    assert _spamassassin_value(copy, spamassassin_dmarc_private_suffixes=[]) is False
    off = {"spamassassin_dmarc_private_suffixes": ["test"], "spamassassin_dmarc": False}
    assert _spamassassin_value(copy, **off) is False


def test_the_lab_asks_only_its_own_zones():
    cf = render("spamassassin", "etc/spamassassin/local.cf.j2")
    lines = cf.splitlines()
    assert "dns_query_restriction deny *" in lines
    assert "dns_query_restriction allow test" in lines
    assert (
        "header LAB_DNSBL eval:check_rbl_rcvd('labdnsbl', 'bl.lab.passerelle.test.', '127.0.0.2')"
        in lines
    )
    assert "urirhssub LAB_URIBL uribl.lab.passerelle.test. A 127.0.0.2" in lines
    assert "body LAB_URIBL eval:check_uridnsbl('LAB_URIBL')" in lines


# --- validation play ------------------------------------------------------------------------

BAD = [
    ({"sendmail_dnsbl": [{"zone": "not a zone"}]}, "sendmail_dnsbl[0] 'not a zone'"),
    (
        {"sendmail_dnsbl": [{"zone": "bl.example.org", "replies": ["10.0.0.2"]}]},
        "sendmail_dnsbl[0] 'bl.example.org': reply '10.0.0.2' is not an IPv4 address in "
        "127.0.0.0/8",
    ),
    (
        {"resolver_local_data": ["ok.example.test. A 192.0.2.1", "internet.test. TXT v=spf1"]},
        "resolver_local_data[1] 'internet.test. TXT v=spf1'",
    ),
]


@pytest.mark.parametrize(("extra", "named"), BAD, ids=[b[1][:40] for b in BAD])
def test_bad_dns_data_fails_before_any_host_changes(extra, named):
    assert_lab_run_stops_in_validation(extra, named)
