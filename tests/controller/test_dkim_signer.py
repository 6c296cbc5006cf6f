"""DKIM signing on the outbound relays: filter_plugins/passerelle_dkim.py (the pre-flight
checks and the records), the role dkim_signer's renderings (opendkim.conf, its tables), its
registration as sendmail's last milter, and a lab run stopped by bad DKIM data before any host
changes."""

from __future__ import annotations

import base64
import json
import subprocess

import pytest
import yaml
from ansible.errors import AnsibleFilterError
from ansible.template import Templar
from tls_material import key_pem, pair, rsa_key_pem

import ansible_render
from ansible_render import ansible_playbook, assert_lab_run_stops_in_validation, render, trust
from passerelle.dkim.keys import load_private_key
from plugins import load

dkim = load("filter_plugins/passerelle_dkim.py")
components = load("filter_plugins/passerelle_components.py")
ROLE = ansible_render.ROLES / "dkim_signer"
KEY_A = rsa_key_pem()
KEY_B = rsa_key_pem()


def _domains() -> list[dict[str, str]]:
    return [
        {"name": "Static-A.test", "selector": "s2026", "private_key": KEY_A},
        {"name": "static-b.test", "selector": "lab", "private_key": KEY_B},
    ]


def _openssl_public(pem: str) -> str:
    der = subprocess.run(
        ["openssl", "pkey", "-pubout", "-outform", "DER"],
        input=pem.encode(),
        capture_output=True,
        check=True,
    ).stdout
    return base64.b64encode(der).decode()


# --- the filter --------------------------------------------------------------------------
def test_filters_are_exported():
    assert set(dkim.FilterModule().filters()) == {
        "passerelle_dkim_domains",
        "passerelle_dkim_records",
    }


def test_domains_are_checked_and_normalised():
    out = dkim.passerelle_dkim_domains(_domains(), "rsa-sha256")
    assert [(d["name"], d["selector"], d["algorithm"], d["bits"]) for d in out] == [
        ("static-a.test", "s2026", "rsa", 2048),
        ("static-b.test", "lab", "rsa", 2048),
    ]
    assert dkim.passerelle_dkim_domains([]) == [] and dkim.passerelle_dkim_domains(None) == []


def test_records_hold_openssls_public_key_in_strings_of_255():
    zone, local = (dkim.passerelle_dkim_records(_domains()[:1], fmt) for fmt in ("zone", "unbound"))
    name, _, strings = zone[0].partition(" IN TXT ")
    assert name == "s2026._domainkey.static-a.test."
    parts = strings[1:-1].split('" "')
    assert all(len(p) <= 255 for p in parts) and len(parts) == 2
    assert "".join(parts) == "v=DKIM1; k=rsa; p=" + _openssl_public(KEY_A)
    assert local == [f"s2026._domainkey.static-a.test. TXT {strings}"]


def _with(**changes: object) -> list[dict[str, object]]:
    entries: list[dict[str, object]] = [dict(d) for d in _domains()]
    entries[1].update(changes)
    return entries


_, EC_KEY = pair()
BAD = [
    (_with(private_key="not a key"), "[1] (static-b.test): private_key is not a PEM private key"),
    (_with(private_key=EC_KEY), "[1] (static-b.test): private_key is not an RSA or Ed25519 key"),
    (_with(private_key=rsa_key_pem(1024)[:200]), "[1] (static-b.test): private_key is not a PEM"),
    (_with(name="not a domain"), "[1] (not a domain): invalid domain name"),
    (_with(name="static-a.test"), "[1] (static-a.test): static-a.test is listed twice"),
    (_with(selector="lab.2026"), "[1] (static-b.test): invalid selector 'lab.2026'"),
    (_with(selector=""), "[1] (static-b.test): invalid selector ''"),
    (_with(extra=1), "[1] (static-b.test): unknown keys extra"),
]


@pytest.mark.parametrize(("domains", "why"), BAD, ids=[b[1][4:40] for b in BAD])
def test_a_bad_entry_is_named_and_its_key_never_shown(domains, why):
    with pytest.raises(AnsibleFilterError) as info:
        dkim.passerelle_dkim_domains(domains)
    message = str(info.value)
    assert message.startswith("dkim_signer_domains") and why in message
    # the key's text never shows (only the expected form, "-----BEGIN PRIVATE KEY----- ...")
    assert "PRIVATE KEY-----" not in message.replace("-----BEGIN PRIVATE KEY----- ...", "")
    assert KEY_B[40:80] not in message


def test_a_key_of_another_algorithm_than_the_signers_is_named():
    from cryptography.hazmat.primitives.asymmetric import ed25519

    ed = key_pem(ed25519.Ed25519PrivateKey.generate())  # type: ignore[arg-type]
    assert dkim.passerelle_dkim_domains(_with(private_key=ed)[1:], "ed25519-sha256")
    with pytest.raises(AnsibleFilterError, match=r"\[1\] \(static-b.test\).*ed25519 key"):
        dkim.passerelle_dkim_domains(_with(private_key=ed), "rsa-sha256")
    with pytest.raises(AnsibleFilterError, match="not one of"):
        dkim.passerelle_dkim_domains(_domains(), "rsa-sha1")


# --- the role's renderings ----------------------------------------------------------------
def _render(src: str, **overrides: object) -> str:
    overrides.setdefault("dkim_signer_domains", _domains())
    return render("dkim_signer", src, "smtpx1", **overrides)


def _lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]


def test_key_and_signing_tables():
    keys = "/etc/opendkim/keys"
    assert _lines(_render("etc/opendkim/KeyTable.j2")) == [
        f"s2026._domainkey.static-a.test static-a.test:s2026:{keys}/static-a.test.s2026.key",
        f"lab._domainkey.static-b.test static-b.test:lab:{keys}/static-b.test.lab.key",
    ]
    assert _lines(_render("etc/opendkim/SigningTable.j2")) == [
        "*@static-a.test s2026._domainkey.static-a.test",
        "*@static-b.test lab._domainkey.static-b.test",
    ]


def test_internal_hosts_are_the_host_and_the_relay_networks():
    text = _render(
        "etc/opendkim/TrustedHosts.j2", passerelle_smtpx_allowed_networks=["10.1.0.0/26"]
    )
    assert _lines(text) == ["127.0.0.1", "::1", "10.1.0.0/26"]


def test_opendkim_conf_signs_on_the_registered_socket():
    conf = dict(
        ln.split(None, 1) for ln in _lines(_render("etc/opendkim.conf.j2", inventory_hostname="x"))
    )
    assert conf["Mode"] == "s"
    assert conf["Socket"] == "local:/run/opendkim/opendkim.sock"
    assert conf["UserID"] == "opendkim:opendkim"
    assert conf["KeyTable"] == "file:/etc/opendkim/KeyTable"
    assert conf["SigningTable"] == "refile:/etc/opendkim/SigningTable"
    assert conf["InternalHosts"] == "file:/etc/opendkim/TrustedHosts"
    assert conf["SignatureAlgorithm"] == "rsa-sha256"
    assert conf["Canonicalization"] == "relaxed/relaxed"
    assert conf["OversignHeaders"] == "From"


def _tasks() -> list[dict]:
    return ansible_render._tasks(ROLE)


def test_configs_are_validated_keys_private_and_reloads_not_restarts():
    tasks = {t["name"]: t for t in _tasks()}
    conf = tasks["Configure OpenDKIM (checked by opendkim -n)"]
    assert conf["ansible.builtin.template"]["validate"] == "opendkim -n -x %s"
    keys = tasks["Install the signing keys (readable by OpenDKIM only)"]
    assert keys["ansible.builtin.copy"]["mode"] == "0600"
    assert keys["ansible.builtin.copy"]["owner"] == "{{ __dkim_signer_user }}"
    assert keys["no_log"] is True and keys["diff"] is False
    tables = tasks["Install OpenDKIM's key table, signing table and internal hosts"]
    assert tables["notify"] == "Reload OpenDKIM"
    handlers = yaml.safe_load((ROLE / "handlers" / "main.yml").read_text())
    reload = next(h for h in handlers if h["name"] == "Reload OpenDKIM")
    assert reload["ansible.builtin.systemd_service"]["state"] == "reloaded"


def test_no_domain_no_package_and_nothing_done():
    tasks = yaml.safe_load((ROLE / "tasks" / "main.yml").read_text())
    block = next(t for t in tasks if "block" in t)
    assert block["when"] == "__dkim_signer_enabled | bool"
    assert [t for t in tasks if "block" not in t and "include_vars" not in str(t)] == []
    variables = ansible_render.role_vars(
        "dkim_signer", "smtpx1", overrides={"dkim_signer_domains": []}
    )
    templar = Templar(
        loader=ansible_render._inventory(str(ansible_render.LAB))[0], variables=variables
    )
    assert templar.template(trust("{{ __dkim_signer_enabled }}")) is False
    packages = yaml.safe_load((ROLE / "tasks" / "packages.yml").read_text())[1]
    value = packages["ansible.builtin.set_fact"]["passerelle_packages_wanted"]
    assert templar.template(trust(value)) == []


# --- the last milter -----------------------------------------------------------------------
def test_the_signer_runs_after_every_other_milter_role():
    fleet = [r["role"] for r in components.PLAYS["fleet"]]
    milter_roles = ("greylist", "antivirus", "spam_milter")
    assert all(fleet.index("dkim_signer") > fleet.index(r) for r in milter_roles)
    assert fleet.index("dkim_signer") < fleet.index("sendmail")


def test_registration_puts_the_signer_last_and_the_mc_calls_it_last():
    task = next(
        t for t in _tasks() if "passerelle_milters" in str(t.get("ansible.builtin.set_fact"))
    )
    expr = task["ansible.builtin.set_fact"]["passerelle_milters"]
    antivirus = {
        "name": "antivirus",
        "socket": "unix:/run/passerelle/antivirus.sock",
        "flags": "T",
        "timeouts": "C:10s;S:30s;R:30s;E:5m",
    }
    variables = ansible_render.role_vars("dkim_signer", "smtpx1")
    # a rerun: the signer registered before, the antivirus milter registered again after it
    variables["passerelle_milters"] = [{"name": "dkim", "socket": "old"}, antivirus]
    templar = Templar(
        loader=ansible_render._inventory(str(ansible_render.LAB))[0], variables=variables
    )
    milters = templar.template(trust(expr))
    assert [m["name"] for m in milters] == ["antivirus", "dkim"]
    mc = render(
        "sendmail",
        "etc/mail/sendmail.mc.j2",
        "smtpx1",
        sendmail_kind="smtpx",
        sendmail_milters=milters,
    )
    filters = [ln for ln in mc.splitlines() if ln.startswith("INPUT_MAIL_FILTER")]
    assert filters == [
        "INPUT_MAIL_FILTER(`antivirus', `S=unix:/run/passerelle/antivirus.sock, F=T, "
        "T=C:10s;S:30s;R:30s;E:5m')dnl",
        "INPUT_MAIL_FILTER(`dkim', `S=local:/run/opendkim/opendkim.sock, F=T, "
        "T=C:10s;S:30s;R:30s;E:5m')dnl",
    ]


# --- a lab run with bad DKIM data stops before any host changes ----------------------------
LAB_BAD = [
    (
        {
            "dkim_signer_domains": [
                {"name": "static-a.test", "selector": "lab", "private_key": "not a key"}
            ]
        },
        "dkim_signer_domains[0] (static-a.test): private_key is not a PEM private key",
    ),
    (
        {
            "dkim_signer_domains": [
                {"name": "static a.test", "selector": "lab", "private_key": KEY_A}
            ]
        },
        "dkim_signer_domains[0] (static a.test): invalid domain name",
    ),
    (
        {
            "dkim_signer_domains": [
                {"name": "static-a.test", "selector": "a_b", "private_key": KEY_A}
            ]
        },
        "dkim_signer_domains[0] (static-a.test): invalid selector 'a_b'",
    ),
]


@pytest.mark.parametrize(("extra", "named"), LAB_BAD, ids=["key", "domain", "selector"])
def test_bad_dkim_data_fails_before_any_host_changes(extra, named):
    out = assert_lab_run_stops_in_validation(extra, named)
    assert KEY_A[60:120] not in out


# --- the production example: the vault's keys reach the check ------------------------------
PRODUCTION_SECRETS = {
    "vault_passerelle_greylist_db_secret": "0123456789abcdef-test",
    "vault_passerelle_ldap_bind_password": "not-a-real-password",
    "vault_nagios_admin_password": "not-a-real-password",
    "vault_passerelle_console_accounts": [{"name": "admin", "role": "admin"}],
    "vault_passerelle_console_session_secret": "not-a-real-password" * 2,
}


def _validate_production(dkim_keys: dict) -> tuple[int, str]:
    extra = {**PRODUCTION_SECRETS, "vault_passerelle_dkim_keys": dkim_keys}
    res = ansible_playbook(
        "-i", "inventory/production", "playbooks/validate.yml", "-e", json.dumps(extra)
    )
    return res.returncode, " ".join((res.stdout + res.stderr).split())


def test_production_vault_keys_are_checked_naming_the_domain():
    rc, out = _validate_production({"example.fr": {"selector": "s2026", "key": "CHANGE-ME"}})
    assert rc != 0, out
    assert "dkim_signer_domains[0] (example.fr): private_key is not a PEM private key" in out
    rc, out = _validate_production({"example.fr": {"key": KEY_A}})
    assert rc != 0 and "dkim_signer_domains[0] (example.fr): invalid selector ''" in out, out


def test_production_vault_with_a_good_key_passes_the_dkim_check():
    rc, out = _validate_production({"example.fr": {"selector": "s2026", "key": KEY_A}})
    assert rc == 0, out
    assert "Validate the DKIM signing domains and their keys" in out, out
    assert "dkim_signer_domains" not in out.replace("DKIM signing domains", ""), out
    assert KEY_A[60:120] not in out


def test_keys_made_by_cryptography_give_its_public_keys() -> None:
    """The DKIM key reader (standard library only) agrees with the cryptography library,
    which the controller's venv has (ansible's crypto collection needs it)."""
    from cryptography.hazmat.primitives import serialization as ser
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    for fmt in (ser.PrivateFormat.TraditionalOpenSSL, ser.PrivateFormat.PKCS8):
        pem = rsa_key.private_bytes(ser.Encoding.PEM, fmt, ser.NoEncryption()).decode()
        got = load_private_key(pem)
        want = rsa_key.public_key().public_bytes(
            ser.Encoding.DER, ser.PublicFormat.SubjectPublicKeyInfo
        )
        assert (got.bits, got.public) == (2048, want)
    ed_key = ed25519.Ed25519PrivateKey.generate()
    pem = ed_key.private_bytes(
        ser.Encoding.PEM, ser.PrivateFormat.PKCS8, ser.NoEncryption()
    ).decode()
    want = ed_key.public_key().public_bytes(ser.Encoding.Raw, ser.PublicFormat.Raw)
    assert load_private_key(pem).public == want
