"""The routing rules are defined once (src/passerelle/routing/rules.py) and both sides apply
them: the maps filter on the controller and routing.config on the gateway accept and refuse
the same domain names, LDAP URIs, attribute names and timeouts."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from ansible.errors import AnsibleFilterError

import passerelle.routing.config as config_module
import passerelle.routing.rules as rules
from passerelle.config import ConfigError
from passerelle.routing.config import LdapSettings, parse_config
from plugins import load

ROOT = Path(__file__).resolve().parents[2]
pm = load("filter_plugins/passerelle_maps.py")


def test_the_filter_loads_the_packages_rules_file():
    assert Path(pm.RULES.__file__).resolve() == Path(rules.__file__).resolve()
    assert Path(rules.__file__).resolve() == ROOT / "src/passerelle/routing/rules.py"
    assert pm.hostname_problem is pm.RULES.hostname_problem
    assert pm.LDAP_DEFAULTS is pm.RULES.LDAP_DEFAULTS


def test_ldap_defaults_are_the_same_on_both_sides():
    settings = LdapSettings(domains=("a.test",), uri="ldap://d", base="dc=x")
    for key in (*rules.LDAP_NAME_KEYS, "timeout", "bind_dn"):
        assert getattr(settings, key) == rules.LDAP_DEFAULTS[key]
    filled = pm.passerelle_ldap_settings({"uri": "ldap://d", "base": "dc=x"})
    assert {k: filled[k] for k in rules.LDAP_DEFAULTS} == rules.LDAP_DEFAULTS


@pytest.mark.parametrize(
    "path",
    [
        "filter_plugins/passerelle_maps.py",
        "filter_plugins/passerelle_dns.py",
        "src/passerelle/routing/config.py",
    ],
)
def test_no_second_copy_of_the_rules(path):
    """The label pattern, the URI pattern and the default attribute names live in rules.py."""
    text = (ROOT / path).read_text()
    code = re.sub(r'"""[\s\S]*?"""', "", text)  # docstrings may show the defaults
    for copy in ("[a-z0-9](", "ldaps?://", '"inetLocalMailRecipient"', '"mailHost"'):
        assert copy not in code, f"{path} has its own copy of {copy!r}"


def _filter_accepts(ldap: dict[str, Any]) -> bool:
    try:
        pm.passerelle_ldap_settings(ldap)
    except AnsibleFilterError:
        return False
    return True


def _package_accepts(ldap: dict[str, Any], mailertable: dict[str, str] | None = None) -> bool:
    section = {"domains": ["ldap-a.test"], "uri": ldap["uri"], "base": ldap["base"]}
    if "timeout" in ldap:
        section["timeout"] = f"{ldap['timeout']}s"
    try:
        parse_config({"routing": {"mailertable": mailertable or {}, "ldap": section}})
    except ConfigError:
        return False
    return True


URIS = {
    "ldap://ldap.example.org": True,
    "ldaps://ldap.example.org:636": True,
    "ldap://ldap1": True,
    "ldap://ldap1/": True,
    "ldap://192.0.2.5:389": True,
    "ldap://[2001:db8::5]:389": True,
    # The package used to take anything without a space after ldap(s):// ...
    "ldap://ldap.example.org/dc=example,dc=org": False,
    "ldap://ldap.example.org/??sub?(uid=x)": False,
    "ldap://admin@ldap.example.org": False,
    "ldap://ldap.example.org,ldap://ldap2.example.org": False,
    # ... and both sides took a port out of range or a bad host.
    "ldap://ldap.example.org:99999": False,
    "ldap://ldap.example.org:0": False,
    "ldap://-bad-.example.org": False,
    "ldap://[not-ipv6]": False,
    "ldap://": False,
    "http://ldap.example.org": False,
}


@pytest.mark.parametrize(("uri", "valid"), URIS.items())
def test_ldap_uri_rule_is_the_same_on_both_sides(uri, valid):
    ldap = {"uri": uri, "base": "dc=example,dc=org"}
    assert _filter_accepts(ldap) is valid
    assert _package_accepts(ldap) is valid


@pytest.mark.parametrize(("timeout", "valid"), [(1, True), (300, True), (301, False)])
def test_ldap_timeout_range_is_the_same_on_both_sides(timeout, valid):
    ldap = {"uri": "ldap://d", "base": "dc=x", "timeout": timeout}
    assert _filter_accepts(ldap) is valid
    assert _package_accepts(ldap) is valid


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        ("static-a.test", True),
        ("xn--bcher-kva.example", True),
        ("192.0.2.5", False),  # numeric top-level label: the package used to take it
        ("a.123", False),
        ("-a.test", False),
        ("a..test", False),
        ("single", False),
        ("a" * 64 + ".test", False),
    ],
)
def test_domain_rule_is_the_same_on_both_sides(name, valid):
    assert (pm.hostname_problem(name) is None) is valid
    try:
        parse_config({"routing": {"mailertable": {name: "esmtp:[m]"}}})
        accepted = True
    except ConfigError:
        accepted = False
    assert accepted is valid


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("bl.example.org.", None),
        ("bl.example.org", None),
        ("bl.example.org..", "invalid domain name (bad label '')"),
        (".", "invalid domain name (empty or longer than 253 characters)"),
        ("localhost.", "invalid domain name (needs at least 2 labels)"),
        ("a" * 250 + ".test.", "invalid domain name (empty or longer than 253 characters)"),
        ("bl.example.123.", "invalid domain name (numeric top-level label)"),
    ],
)
def test_a_fully_qualified_name_may_end_with_its_dot_when_asked(name, problem):
    """DNS data (sendmail_dnsbl zones) write a name with its root's dot; routing does not."""
    assert rules.hostname_problem(name, trailing_dot=True) == problem
    if name.endswith("."):
        assert rules.hostname_problem(name) == "invalid domain name (trailing dot)"


def test_config_module_has_no_regex_for_names():
    """routing.config keeps only its own pattern (a mailertable route), nothing shared."""
    shared = {id(v) for v in vars(rules).values()}
    patterns = [
        v.pattern
        for v in vars(config_module).values()
        if isinstance(v, re.Pattern) and id(v) not in shared
    ]
    assert patterns == [config_module._ROUTE.pattern]
