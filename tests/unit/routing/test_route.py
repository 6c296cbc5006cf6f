"""``passerelle route``: the routing decision with an injected directory, and its config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from passerelle.cli import main
from passerelle.config import ConfigError
from passerelle.routing.config import LdapSettings, RoutingConfig, load_config, parse_config
from passerelle.routing.route import (
    QUEUED,
    RELAY_DENIED,
    UNKNOWN_USER,
    DirectoryUnavailable,
    Entry,
    explain,
    split_address,
)

LDAP = LdapSettings(
    domains=("ldap-a.test",), uri="ldap://ldap1", base="ou=people,dc=lab", timeout=5
)
CONFIG = RoutingConfig(
    local_names=("gw1.lab.test",),
    mailertable={
        "static-a.test": "esmtp:[mailstore1]",
        "static-b.test": "esmtp2525:[mailstore2]",
        "mailstore9": "esmtp:[192.0.2.9]",
        "learn.test": "local:",
    },
    ldap=LDAP,
)
ENTRIES = {
    "ana@ldap-a.test": [Entry("uid=ana,ou=people,dc=lab", mail_host="mailstore1")],
    "ben@ldap-a.test": [
        Entry("uid=ben,ou=people,dc=lab", "mailstore2", routing_address="benm@ldap-a.test")
    ],
    "moved@ldap-a.test": [Entry("uid=moved,ou=people,dc=lab", None, "moved@static-b.test")],
    "here@ldap-a.test": [Entry("uid=here,ou=people,dc=lab", "GW1.lab.test", "x@static-a.test")],
    "nine@ldap-a.test": [Entry("uid=nine,ou=people,dc=lab", "mailstore9")],
    "empty@ldap-a.test": [Entry("uid=empty,ou=people,dc=lab")],
    "twice@ldap-a.test": [Entry("uid=t1,dc=lab", "m1"), Entry("uid=t2,dc=lab", "m2")],
}
asked: list[str] = []


def lookup(address: str) -> list[Entry]:
    asked.append(address)
    return ENTRIES.get(address, [])


def down(address: str) -> list[Entry]:
    raise DirectoryUnavailable("ldap://ldap1: Can't contact LDAP server")


def never(address: str) -> list[Entry]:
    raise AssertionError(f"directory asked for {address}")


def test_static_domain_uses_the_mailertable_without_the_directory():
    d = explain("Alice@STATIC-A.test", CONFIG, never)
    assert (d.kind, d.mailer, d.host, d.recipient) == (
        "static",
        "esmtp",
        "[mailstore1]",
        "Alice@static-a.test",
    )
    assert "mailertable: static-a.test -> esmtp:[mailstore1]" in d.reasons[0]


def test_static_domain_on_another_port():
    d = explain("bob@static-b.test", CONFIG, never)
    assert d.mailer == "esmtp2525" and d.host == "[mailstore2]"


def test_ldap_user_with_a_mail_host_goes_there_unchanged():
    asked.clear()
    d = explain("Ana@Ldap-A.test", CONFIG, lookup)
    assert asked == ["ana@ldap-a.test"]  # lowercased like sendmail's key
    assert (d.kind, d.mailer, d.host, d.recipient) == (
        "ldap",
        "relay",
        "mailstore1",
        "Ana@ldap-a.test",
    )
    assert d.entry is not None and d.entry.dn == "uid=ana,ou=people,dc=lab"
    assert any("MX lookup" in r for r in d.reasons)


def test_ldap_user_with_a_routing_address_is_rewritten():
    d = explain("ben@ldap-a.test", CONFIG, lookup)
    assert (d.mailer, d.host, d.recipient) == ("relay", "mailstore2", "benm@ldap-a.test")
    assert "mailHost=mailstore2, mailRoutingAddress=benm@ldap-a.test" in " ".join(d.reasons)


def test_mail_host_found_in_the_mailertable():
    d = explain("nine@ldap-a.test", CONFIG, lookup)
    assert (d.mailer, d.host) == ("esmtp", "[192.0.2.9]")


@pytest.mark.parametrize("user", ["moved", "here"])
def test_routing_address_without_a_remote_host_is_routed_as_the_new_address(user):
    d = explain(f"{user}@ldap-a.test", CONFIG, lookup)
    expected = {"moved": ("esmtp2525", "[mailstore2]"), "here": ("esmtp", "[mailstore1]")}
    assert (d.mailer, d.host) == expected[user]
    assert d.recipient == ENTRIES[f"{user}@ldap-a.test"][0].routing_address


@pytest.mark.parametrize("user", ["nobody", "empty", "twice"])
def test_unknown_user_is_refused_at_rcpt(user):
    d = explain(f"{user}@ldap-a.test", CONFIG, lookup)
    assert d.kind == "unknown-user" and d.rcpt_reply == UNKNOWN_USER
    assert d.mailer is None
    if user == "twice":
        assert any("2 entries match" in r for r in d.reasons)


def test_directory_down_means_queued_never_bounced():
    d = explain("ana@ldap-a.test", CONFIG, down)
    assert d.kind == "deferred" and d.rcpt_reply == QUEUED
    assert any("never bounced" in r and "Can't contact" in r for r in d.reasons)


@pytest.mark.parametrize(
    "address", ["x@unmanaged.test", "x@sub.static-a.test", "x@ldap-a.test.evil"]
)
def test_unmanaged_domain_is_not_relayed(address):
    d = explain(address, CONFIG, never)
    assert d.kind == "unmanaged" and d.rcpt_reply == RELAY_DENIED


@pytest.mark.parametrize("address", ["nobody", "@static-a.test", "a b@static-a.test", "x@"])
def test_invalid_address(address):
    assert explain(address, CONFIG, never).kind == "invalid"


def test_split_address():
    assert split_address("<Jo@Example.ORG.>") == ("Jo", "example.org")
    assert split_address("jo") is None


TOML = """
[routing]
local_names = ["gw1.lab.test"]
[routing.mailertable]
"static-a.test" = "esmtp:[mailstore1]"
[routing.ldap]
domains = ["ldap-a.test"]
uri = "ldap://ldap1"
base = "ou=people,dc=lab"
bind_dn = "cn=gw,dc=lab"
password_file = "{secret}"
host_attribute = "mailRoutingHost"
timeout = "3s"
"""


def _write(tmp_path: Path, text: str) -> Path:
    secret = tmp_path / "secret"
    secret.write_text("pw\n")
    path = tmp_path / "routing.toml"
    path.write_text(text.replace("{secret}", str(secret)))
    return path


def test_config_file(tmp_path):
    cfg = load_config(_write(tmp_path, TOML))
    assert cfg.mailertable == {"static-a.test": "esmtp:[mailstore1]"}
    assert cfg.ldap is not None and cfg.ldap.host_attribute == "mailRoutingHost"
    assert cfg.ldap.timeout == 3 and cfg.ldap.read_password() == "pw"


@pytest.mark.parametrize(
    ("change", "key"),
    [
        (('uri = "ldap://ldap1"', 'uri = "http://ldap1"'), "routing.ldap.uri"),
        (('domains = ["ldap-a.test"]', 'domains = ["static-a.test"]'), "routing.ldap.domains"),
        (('domains = ["ldap-a.test"]', "domains = []"), "routing.ldap.domains"),
        (('timeout = "3s"', 'tiemout = "3s"'), "routing.ldap.tiemout"),
        (('= "esmtp:[mailstore1]"', '= "mailstore1"'), "routing.mailertable.static-a.test"),
        (('host_attribute = "mailRoutingHost"', 'host_attribute = "a b"'), "host_attribute"),
        (('password_file = "{secret}"', ""), "routing.ldap.password_file"),
    ],
)
def test_config_errors_name_the_key(tmp_path, change, key):
    path = _write(tmp_path, TOML.replace(*change))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert key in str(info.value) and str(path) in str(info.value)


def test_config_without_ldap():
    cfg = parse_config({"routing": {"mailertable": {"a.test": "esmtp:[m]"}}})
    assert cfg.ldap is None and cfg.ldap_domains == ()


def test_cli_check_config_and_static_answer(tmp_path, capsys):
    path = tmp_path / "routing.toml"
    path.write_text('[routing]\n[routing.mailertable]\n"static-a.test" = "esmtp:[mailstore1]"\n')
    assert main(["route", "check-config", str(path)]) == 0
    assert main(["route", "alice@static-a.test", "--config", str(path), "--json"]) == 0
    out = capsys.readouterr().out
    answer = json.loads(out[out.index("{") :])
    assert answer["kind"] == "static" and answer["host"] == "[mailstore1]"
    assert main(["route", "x@other.test", "--config", str(path)]) == 0
    assert "unmanaged" in capsys.readouterr().out
    bad = tmp_path / "bad.toml"
    bad.write_text("[routing]\nfoo = 1\n")
    assert main(["route", "check-config", str(bad)]) == 1
    assert "routing.foo" in capsys.readouterr().err


def test_cli_gateway_runs_the_command_there(capsys):
    # The connect command is any prefix: 'echo' shows what would run on the gateway.
    rc = main(["route", "ana@ldap-a.test", "--gateway", "gw1", "--connect", "echo via {host}"])
    assert rc == 0
    assert capsys.readouterr().out.strip() == "via gw1 passerelle route ana@ldap-a.test"


def test_local_route_of_a_learning_mailbox():
    d = explain("spam@learn.test", CONFIG, never)
    assert (d.kind, d.mailer) == ("static", "local")
    assert "local mailer" in d.reasons[-1]


def test_config_accepts_local_routes_only_for_the_local_mailer():
    ok = parse_config({"routing": {"local_names": [], "mailertable": {"learn.test": "local:"}}})
    assert ok.mailertable["learn.test"] == "local:"
    with pytest.raises(ConfigError, match="is not mailer:host"):
        parse_config({"routing": {"local_names": [], "mailertable": {"a.test": "esmtp:"}}})
