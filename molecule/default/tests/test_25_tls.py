"""STARTTLS (roles/sendmail, README "STARTTLS"): gw1 offers TLS 1.2+ with a certificate
from the lab CA, refuses TLS 1.1, relays to mailstore1 over a verified session, and mail to
a TLS-required partner whose server offers no STARTTLS stays deferred in smtpx1's queue.

The lab CA is the controller's (playbooks/lab/pki.yml, PASSERELLE_LAB_PKI); the TLS client
runs inside ``outside`` with Python's ssl/smtplib, the CA given on stdin."""

import json
import os
import re
import time
import uuid
from pathlib import Path

import pytest
from labsmtp import LAB_DOMAIN, message, podman_exec, smtp, wait_for_mail

PKI = Path(
    os.environ.get("PASSERELLE_LAB_PKI", str(Path.home() / ".cache" / "passerelle-lab" / "pki"))
)

# Runs inside a container: EHLO, STARTTLS with the given protocol bounds, then reports what
# was negotiated (or the error). Arguments as JSON on stdin.
STARTTLS = r"""
import json, smtplib, ssl, sys
a = json.loads(sys.stdin.read())
out = {}
try:
    ctx = ssl.create_default_context(cadata=a["ca"])
    ctx.check_hostname = True
    if a.get("max"):
        ctx.minimum_version = ssl.TLSVersion[a["min"]]
        ctx.maximum_version = ssl.TLSVersion[a["max"]]
        ctx.set_ciphers("ALL:@SECLEVEL=0")
    s = smtplib.SMTP(a["server"], 25, timeout=30)
    s.ehlo("client.internet.test")
    out["offers"] = s.has_extn("starttls")
    s.starttls(context=ctx)
    out["version"] = s.sock.version()
    out["subject"] = dict(x[0] for x in s.sock.getpeercert()["subject"])
    s.quit()
except Exception as exc:
    out["error"] = repr(exc)
print(json.dumps(out))
"""


def starttls(server: str, tls_min: str | None = None, tls_max: str | None = None) -> dict:
    ca = (PKI / "ca.crt").read_text()
    args = {"server": server, "ca": ca, "min": tls_min, "max": tls_max}
    return json.loads(podman_exec("outside", "python3", "-c", STARTTLS, stdin=json.dumps(args)))


def test_gw1_offers_starttls_with_a_certificate_of_the_lab_ca():
    got = starttls(f"gw1.{LAB_DOMAIN}")
    assert got.get("offers") is True, got
    assert "error" not in got, got  # the chain verified against the lab CA, name included
    assert got["version"] in ("TLSv1.2", "TLSv1.3"), got
    assert got["subject"]["commonName"] == f"gw1.{LAB_DOMAIN}", got


def test_gw1_refuses_tls_1_1():
    got = starttls(f"gw1.{LAB_DOMAIN}", "TLSv1_1", "TLSv1_1")
    assert got.get("offers") is True, got
    assert "error" in got and "version" not in got, got


def assert_hop_verified_tls(mbox: str, tag: str, sender: str, receiver: str) -> None:
    """The Received line of the hop sender -> receiver, in the message carrying tag, shows
    TLS 1.2+ and a peer certificate that verified."""
    # the message's own headers, from its "From " line on (the first message of a mailbox
    # has no newline before its "From ": one is added, or rfind found none)
    box = "\n" + mbox
    msg = box[box.rfind("\nFrom ", 0, box.find(tag)) :]
    hop = re.search(
        rf"Received: from {sender}\.{re.escape(LAB_DOMAIN)}.*?by {receiver}\.[^;]*;", msg, re.S
    )
    assert hop, msg
    assert "version=TLSv1.3" in hop[0] or "version=TLSv1.2" in hop[0], hop[0]
    assert "verify=OK" in hop[0], hop[0]


def test_gw1_relays_to_mailstore1_over_a_verified_session():
    tag, text = message("dave@internet.test", "alice@static-a.test")
    d = smtp("outside", "gw1", "dave@internet.test", ["alice@static-a.test"], data=text)
    assert d.last[0] == "eom" and d.last[1] == 250, d.transcript
    assert_hop_verified_tls(wait_for_mail("mailstore1", "alice", tag), tag, "gw1", "mailstore1")


def test_smtpx1_sends_out_over_a_verified_session():
    """Opportunistic TLS outbound: outside (the internet) offers STARTTLS on port 25 with a
    certificate of the lab CA, and smtpx1 uses it, verifying the certificate."""
    tag, text = message("alice@static-a.test", "dave@internet.test")
    d = smtp("gw1", "smtpx1", "alice@static-a.test", ["dave@internet.test"], data=text)
    assert d.last[0] == "eom" and d.last[1] == 250, d.transcript
    assert_hop_verified_tls(wait_for_mail("outside", "dave", tag), tag, "smtpx1", "outside")


def queue_entry(mailq: str, rcpt: str) -> str:
    """The lines of ``mailq``'s entry (from its queue ID line on) that names ``rcpt``."""
    entries: list[list[str]] = []
    for line in mailq.splitlines():
        if re.match(r"^\w{14}\*?\s", line):
            entries.append([line])
        elif entries:
            entries[-1].append(line)
    return next(("\n".join(e) for e in entries if rcpt in "\n".join(e)), "")


@pytest.fixture
def queued_ids():
    ids: list[str] = []
    yield ids
    for qid in ids:  # do not leave the test's message for 5 days in the queue
        podman_exec("smtpx1", "sh", "-c", f"rm -f /var/spool/mqueue/*{qid}", check=False)


def test_tls_required_partner_without_starttls_stays_deferred(queued_ids):
    rcpt = f"partner-{uuid.uuid4().hex[:10]}@tls-required.test"
    _tag, text = message("alice@static-a.test", rcpt)
    d = smtp("gw1", "smtpx1", "alice@static-a.test", [rcpt], data=text)
    assert d.last[0] == "eom" and d.last[1] == 250, d.transcript
    entry = ""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        entry = queue_entry(podman_exec("smtpx1", "mailq", check=False), rcpt)
        if "4.7.0" in entry or "encryption" in entry.lower():
            break
        time.sleep(2)
    queued_ids.extend(re.findall(r"^(\w{14})", entry, re.M))
    assert entry, "the message is not in smtpx1's queue"
    assert "4.7.0" in entry or "encryption" in entry.lower(), entry
    # and nothing reached outside in clear
    log = podman_exec("smtpx1", "sh", "-c", "journalctl -u sendmail --no-pager -n 400 || true")
    assert not re.search(rf"to=<{re.escape(rcpt)}>.*stat=Sent", log), log
