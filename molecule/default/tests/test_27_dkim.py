"""DKIM signing on the outbound relay (role dkim_signer): a message submitted through smtpx1
to the internet arrives at outside with a DKIM-Signature of its sender domain that verifies
against the lab's DNS, and the same message altered after signing does not.

The keys are the lab's (playbooks/lab/pki.yml, PASSERELLE_LAB_PKI/dkim/DOMAIN.lab.key); their
TXT records are served by smtpx1's own unbound from its local data
(inventory/lab/group_vars/all/dkim.yml). The verifier is OpenDKIM's ``opendkim-testmsg`` on
smtpx1 (package opendkim-tools, installed by the role), which reads the message on standard
input and exits 0 only when its signature verifies, asking the key through the host's resolver
(unbound on 127.0.0.1)."""

import re

import pytest
from labsmtp import message, podman_exec, smtp, wait_for_mail

SELECTOR = "lab"

# Runs on smtpx1: the TXT record of NAME, asked of the local unbound (no dig in the image).
TXT_QUERY = r"""
import socket, struct, sys
name = sys.argv[1]
q = struct.pack(">6H", 0x2727, 0x0100, 1, 0, 0, 0)
q += b"".join(bytes([len(p)]) + p.encode() for p in name.rstrip(".").split(".")) + b"\0"
q += struct.pack(">2H", 16, 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(3)
s.sendto(q, ("127.0.0.1", 53))
r = s.recv(4096)
rcode, ancount = r[3] & 0x0F, struct.unpack(">H", r[6:8])[0]
pos = len(q)
out = []
for _ in range(ancount):
    while r[pos] and r[pos] < 0xC0:
        pos += r[pos] + 1
    pos += 2 if r[pos] >= 0xC0 else 1
    rtype, _, _, rdlen = struct.unpack(">2HIH", r[pos:pos + 10])
    pos += 10
    rdata, pos = r[pos:pos + rdlen], pos + rdlen
    if rtype == 16:
        i, txt = 0, b""
        while i < len(rdata):
            txt += rdata[i + 1:i + 1 + rdata[i]]
            i += 1 + rdata[i]
        out.append(txt.decode())
print(rcode, *out, sep="\n")
"""


def _message_with(mbox: str, tag: str) -> str:
    """The message of ``mbox`` that holds ``tag``, without its mbox From_ line."""
    for chunk in re.split(r"\n(?=From \S+ )", mbox):
        if tag in chunk:
            return chunk.split("\n", 1)[1]
    raise AssertionError(f"{tag} not in the mailbox")


def _testmsg(text: str) -> tuple[int, str]:
    crlf = text.replace("\r\n", "\n").replace("\n", "\r\n")
    out = podman_exec(
        "smtpx1",
        "sh",
        "-c",
        "opendkim-testmsg 2>&1; echo rc=$?",
        stdin=crlf,
    )
    body, _, rc = out.rpartition("rc=")
    return int(rc.strip()), body.strip()


@pytest.fixture(scope="module")
def signed() -> tuple[str, str]:
    """A message from alice@static-a.test through smtpx1, as outside received it."""
    tag, text = message("alice@static-a.test", "dave@internet.test", body="DKIM test.")
    d = smtp("gw1", "smtpx1", "alice@static-a.test", ["dave@internet.test"], data=text)
    assert d.last[0] == "eom" and d.last[1] == 250, d.transcript
    return tag, _message_with(wait_for_mail("outside", "dave", tag), tag)


def test_the_key_record_is_in_the_lab_dns_seen_from_smtpx1():
    out = podman_exec(
        "smtpx1", "python3", "-c", TXT_QUERY, f"{SELECTOR}._domainkey.static-a.test"
    ).splitlines()
    assert out[0] == "0", f"rcode {out[0]}: no record for the key (was pki.yml run?)"
    assert any(t.startswith("v=DKIM1; k=rsa; p=MII") for t in out[1:]), out


def test_mail_through_smtpx1_carries_a_signature_of_its_sender_domain(signed):
    _tag, text = signed
    headers = text.split("\n\n", 1)[0]
    sigs = re.findall(r"(?ms)^DKIM-Signature:(.*?)(?=^\S)", headers + "\nEnd:")
    assert len(sigs) == 1, headers
    tags = dict(
        (k.strip(), v.strip())
        for k, _, v in (t.partition("=") for t in re.sub(r"\s+", "", sigs[0]).split(";"))
        if k
    )
    assert tags["d"] == "static-a.test" and tags["s"] == SELECTOR, tags
    assert tags["a"] == "rsa-sha256", tags
    assert "from" in tags["h"].lower().split(":"), tags


def test_the_signature_verifies_against_the_lab_dns(signed):
    _tag, text = signed
    rc, out = _testmsg(text)
    assert rc == 0, f"opendkim-testmsg on smtpx1 failed ({rc}): {out}"


def test_an_altered_message_does_not_verify(signed):
    # the check can fail: the same message with its body changed after signing
    _tag, text = signed
    rc, out = _testmsg(text.replace("DKIM test.", "DKIM test, altered."))
    assert rc != 0, f"an altered message verified: {out}"
