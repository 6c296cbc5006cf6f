"""filter_plugins/passerelle_tls.py (STARTTLS certificate and key checks) and the
TLS-required entries of passerelle_access."""

from __future__ import annotations

import datetime

import pytest
from ansible.errors import AnsibleFilterError
from tls_material import NOW, pair

from plugins import load

tls = load("filter_plugins/passerelle_tls.py")
pm = load("filter_plugins/passerelle_maps.py")
check = tls.passerelle_tls_credentials

START = NOW - datetime.timedelta(days=10)


def test_filter_is_exported():
    assert "passerelle_tls_credentials" in tls.FilterModule().filters()


def test_no_certificate_no_key_means_no_starttls():
    assert check("", "", now=NOW) == {"enabled": False}
    assert check(None, None, now=NOW) == {"enabled": False}


def test_a_matching_valid_pair_is_accepted():
    cert, key = pair("gw1.example.test", START)
    got = check(cert, key, now=NOW)
    assert got["enabled"] is True
    assert got["subject"] == "CN=gw1.example.test"
    assert got["not_after"] == (START + datetime.timedelta(days=365)).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_a_chain_is_checked_by_its_first_certificate():
    cert, key = pair("gw1.example.test", START)
    other, _ = pair("intermediate", START)
    assert check(cert + other, key, now=NOW)["enabled"] is True
    with pytest.raises(AnsibleFilterError, match="does not match"):
        check(other + cert, key, now=NOW)


@pytest.mark.parametrize(
    ("cert", "key", "message"),
    [
        ("hello", "KEY", "sendmail_tls_certificate is not a PEM certificate"),
        ("CERT", "", "sendmail_tls_private_key is empty but sendmail_tls_certificate is set"),
        ("", "KEY", "sendmail_tls_certificate is empty but sendmail_tls_private_key is set"),
        (
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----",
            "KEY",
            "sendmail_tls_certificate is not a valid PEM certificate",
        ),
    ],
)
def test_bad_text_is_refused_naming_the_variable(cert, key, message):
    good_cert, good_key = pair(not_before=START)
    cert = good_cert if cert == "CERT" else cert
    key = good_key if key == "KEY" else key
    with pytest.raises(AnsibleFilterError, match=message):
        check(cert, key, now=NOW)


def test_a_key_that_is_not_a_key_is_refused_without_showing_it():
    cert, _ = pair(not_before=START)
    secret = "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LXRleHQ=\n-----END PRIVATE KEY-----"
    with pytest.raises(AnsibleFilterError) as err:
        check(cert, secret, now=NOW)
    assert "sendmail_tls_private_key is not an unencrypted PEM private key" in str(err.value)
    assert "c2VjcmV0" not in str(err.value)


def test_a_certificate_with_another_key_is_refused():
    cert, _ = pair("gw1.example.test", START)
    _, other_key = pair("gw2.example.test", START)
    with pytest.raises(AnsibleFilterError, match=r"\(CN=gw1.example.test\) does not match"):
        check(cert, other_key, now=NOW)


def test_an_expired_certificate_is_refused():
    cert, key = pair("old.example.test", NOW - datetime.timedelta(days=400), days=365)
    with pytest.raises(AnsibleFilterError, match=r"\(CN=old.example.test\) expired on "):
        check(cert, key, now=NOW)


def test_a_certificate_not_yet_valid_is_refused():
    cert, key = pair("new.example.test", NOW + datetime.timedelta(days=1))
    with pytest.raises(AnsibleFilterError, match="is not valid before"):
        check(cert, key, now=NOW)


def test_the_other_names_are_used_in_messages():
    with pytest.raises(AnsibleFilterError, match="nagios_tls_certificate is not a PEM"):
        check("x", "y", name="nagios_tls_certificate", key_name="nagios_tls_private_key")


def test_tls_required_domains_become_tls_srv_and_tls_rcpt_entries():
    got = pm.passerelle_access([], tls_required=["Partner.example", "bank.test"])
    assert got == [
        ["TLS_Rcpt:bank.test", "ENCR:128"],
        ["TLS_Rcpt:partner.example", "ENCR:128"],
        ["TLS_Srv:bank.test", "ENCR:128"],
        ["TLS_Srv:partner.example", "ENCR:128"],
    ]


def test_a_tls_required_entry_that_is_not_a_domain_is_named():
    with pytest.raises(
        AnsibleFilterError, match=r"sendmail_tls_required_domains\[1\] 'not a domain'"
    ):
        pm.passerelle_access([], tls_required=["ok.test", "not a domain"])


sv = load("filter_plugins/passerelle_supervision.py")


def _smtp_cert(checks):
    return [c["command"] for c in checks if c["name"] == "smtp_certificate"]


def test_sendmail_hosts_check_their_starttls_certificate_expiry():
    got = _smtp_cert(sv.passerelle_checks(["gateways"], os_family="Debian"))
    assert got == ["/usr/lib/nagios/plugins/check_smtp -H 127.0.0.1 -S -D 30,14"]
    custom = {"smtp_cert_warning": 20, "smtp_cert_critical": 7}
    got = _smtp_cert(sv.passerelle_checks(["smtpx"], custom, os_family="Debian"))
    assert got == ["/usr/lib/nagios/plugins/check_smtp -H 127.0.0.1 -S -D 20,7"]


def test_no_certificate_check_without_starttls_or_sendmail():
    assert (
        _smtp_cert(sv.passerelle_checks(["mailstores"], {"smtp_tls": False}, os_family="Debian"))
        == []
    )
    assert _smtp_cert(sv.passerelle_checks(["greylist_db"], os_family="Debian")) == []


def test_certificate_thresholds_critical_is_fewer_days():
    with pytest.raises(AnsibleFilterError, match="smtp_cert_critical"):
        sv.passerelle_checks(
            ["gateways"], {"smtp_cert_warning": 7, "smtp_cert_critical": 14}, os_family="Debian"
        )


def test_a_host_given_starts_every_message():
    cert, _ = pair("mon1.example.test", START)
    _, other_key = pair("other", START)
    names = {"name": "nagios_tls_certificate", "key_name": "nagios_tls_private_key"}
    with pytest.raises(AnsibleFilterError) as err:
        check(cert, other_key, now=NOW, host="mon1", **names)
    assert str(err.value).startswith(
        "mon1: nagios_tls_certificate (CN=mon1.example.test) does not match nagios_tls_private_key"
    )
    with pytest.raises(AnsibleFilterError, match=r"^mon1: nagios_tls_private_key is empty but"):
        check(cert, "", now=NOW, host="mon1", **names)
    # a good pair gives the same answer with or without the host
    good_cert, good_key = pair("mon1.example.test", START)
    assert check(good_cert, good_key, now=NOW, host="mon1") == check(good_cert, good_key, now=NOW)
