"""STARTTLS in the sendmail role: the rendered sendmail.mc with and without a certificate,
and bad certificates, keys and TLS-required domains stopping the lab's run in the validation
play, before any host changes."""

from __future__ import annotations

import datetime

import pytest
from tls_material import pair

from ansible_render import assert_lab_run_stops_in_validation, inventory_vars, render, role_vars

MC = "etc/mail/sendmail.mc.j2"
TLS_DEFINES = (
    "confSERVER_CERT",
    "confSERVER_KEY",
    "confCLIENT_CERT",
    "confCLIENT_KEY",
    "confCACERT",
    "confCACERT_PATH",
    "confCIPHER_LIST",
    "confSERVER_SSL_OPTIONS",
    "confCLIENT_SSL_OPTIONS",
)


def test_no_certificate_renders_no_tls_settings():
    mc = render("sendmail", MC, sendmail_kind="gateway", sendmail_tls_certificate="")
    assert not [d for d in TLS_DEFINES if d in mc]
    assert "confTLS_FALLBACK_TO_CLEAR" not in mc


def test_a_certificate_renders_the_tls_settings():
    cert, key = pair()
    mc = render(
        "sendmail",
        MC,
        sendmail_kind="gateway",
        sendmail_tls_certificate=cert,
        sendmail_tls_private_key=key,
        sendmail_tls_ca_certificates="",
    )
    assert "define(`confSERVER_CERT', `/etc/mail/tls/cert.pem')dnl" in mc
    assert "define(`confSERVER_KEY', `/etc/mail/tls/key.pem')dnl" in mc
    assert "define(`confCLIENT_CERT', `/etc/mail/tls/cert.pem')dnl" in mc
    # no CA bundle given: the OS's
    assert "define(`confCACERT', `/etc/ssl/certs/ca-certificates.crt')dnl" in mc
    options = (
        "+SSL_OP_NO_SSLv2 +SSL_OP_NO_SSLv3 +SSL_OP_NO_TLSv1 +SSL_OP_NO_TLSv1_1 "
        "+SSL_OP_CIPHER_SERVER_PREFERENCE"
    )
    assert f"define(`confSERVER_SSL_OPTIONS', `{options}')dnl" in mc
    assert f"define(`confCLIENT_SSL_OPTIONS', `{options}')dnl" in mc
    assert "define(`confCIPHER_LIST', `HIGH:!aNULL:!eNULL:!MD5:!RC4:!3DES:!SHA1')dnl" in mc
    assert "define(`confTLS_FALLBACK_TO_CLEAR', `true')dnl" in mc


def test_a_ca_bundle_of_its_own_is_installed_and_used():
    cert, key = pair()
    mc = render(
        "sendmail",
        MC,
        os_family="RedHat",
        sendmail_kind="mailstore",
        sendmail_tls_certificate=cert,
        sendmail_tls_private_key=key,
        sendmail_tls_ca_certificates=cert,
    )
    assert "define(`confCACERT', `/etc/mail/tls/ca.pem')dnl" in mc
    assert "define(`confCACERT_PATH', `/etc/pki/tls/certs')dnl" in mc


@pytest.mark.parametrize("kind", ["gateway", "smtpx", "mailstore"])
def test_the_access_map_has_the_tls_required_entries(kind):
    v = role_vars(
        "sendmail",
        "smtpx1" if kind == "smtpx" else "gw1",
        overrides={"sendmail_kind": kind, "sendmail_tls_required_domains": ["bank.test"]},
    )
    access = v["__sendmail_access"]
    assert ["TLS_Srv:bank.test", "ENCR:128"] in access
    assert ["TLS_Rcpt:bank.test", "ENCR:128"] in access


def test_the_lab_requires_tls_for_its_partner_domain():
    v = role_vars("sendmail", "smtpx1", overrides={"sendmail_kind": "smtpx"})
    assert ["TLS_Srv:tls-required.test", "ENCR:128"] in v["__sendmail_access"]


def _bad() -> list[tuple[dict[str, object], str]]:
    cert, key = pair("gw1.lab.passerelle.test")
    _, other_key = pair("other")
    old_cert, old_key = pair(
        "old", datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=30), 10
    )
    return [
        (
            {"sendmail_tls_certificate": "not a certificate", "sendmail_tls_private_key": key},
            "sendmail_tls_certificate is not a PEM certificate",
        ),
        (
            {"sendmail_tls_certificate": cert, "sendmail_tls_private_key": "not a key"},
            "sendmail_tls_private_key is not an unencrypted PEM private key",
        ),
        (
            {"sendmail_tls_certificate": cert, "sendmail_tls_private_key": other_key},
            "does not match sendmail_tls_private_key",
        ),
        (
            {"sendmail_tls_certificate": old_cert, "sendmail_tls_private_key": old_key},
            "(CN=old) expired on",
        ),
        (
            {"passerelle_tls_required_domains": ["bank.test", "bad domain!"]},
            "sendmail_tls_required_domains[1] 'bad domain!'",
        ),
    ]


BAD = _bad()


@pytest.mark.parametrize(("extra", "named"), BAD, ids=[b[1][:40] for b in BAD])
def test_bad_tls_data_fails_before_any_host_changes(extra, named):
    out = assert_lab_run_stops_in_validation(extra, named)
    # the key's text never shows
    assert "PRIVATE KEY-----" not in out.replace("-----BEGIN PRIVATE KEY----- ...", "")


def test_no_extra_daemon_by_default():
    mc = render("sendmail", MC, sendmail_kind="gateway")
    daemons = [line for line in mc.splitlines() if line.startswith("DAEMON_OPTIONS(")]
    assert daemons == ["DAEMON_OPTIONS(`Family=inet, Name=MTA, Port=smtp, Listen=256')dnl"]


def test_the_lab_internet_has_a_port_without_starttls_for_the_tls_required_partner():
    mc = render("sendmail", MC, "outside")
    assert "DAEMON_OPTIONS(`Family=inet, Name=MTA, Port=smtp, Listen=256')dnl" in mc
    assert "DAEMON_OPTIONS(`Family=inet, Name=MTA-NOTLS, Port=2525, Listen=256, M=S')dnl" in mc
    # and smtpx1 sends that partner's mail there, through a mailer of that port
    routes = {r["name"]: r for r in inventory_vars("smtpx1")["passerelle_smtpx_routes"]}
    assert routes["tls-required.test"].get("port") == 2525
