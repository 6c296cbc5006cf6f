"""DKIM signing on the outbound relay (role dkim_signer): a message submitted through smtpx1
to the internet arrives at outside with a DKIM-Signature of its sender domain that verifies
against the lab's DNS, and the same message altered after signing does not.

The keys are the lab's (playbooks/lab/pki.yml, PASSERELLE_LAB_PKI/dkim/DOMAIN.lab.key); their
TXT records are served by smtpx1's own unbound from its local data
(inventory/lab/group_vars/all/dkim.yml). The key record is asked of that unbound (on smtpx1),
and the signature is checked here by ``verify`` (RFC 6376 section 6: rsa-sha256, simple or
relaxed canonicalization), with the cryptography library of the test environment.
OpenDKIM's own opendkim-testmsg is not used: Debian 12's (2.11.0~beta2-8) fails on every
message with "dkim_chunk(): Syntax error"."""

import base64
import hashlib
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


def _crlf_lines(text: str) -> list[str]:
    return text.replace("\r\n", "\n").split("\n")


def _fields(lines: list[str]) -> list[str]:
    """The header fields, each with its folded lines joined by CRLF."""
    fields: list[str] = []
    for line in lines:
        if line[:1] in (" ", "\t") and fields:
            fields[-1] += "\r\n" + line
        else:
            fields.append(line)
    return fields


def _relaxed_header(field: str) -> str:
    name, _, value = field.partition(":")
    value = re.sub(r"[ \t]+", " ", value.replace("\r\n", "")).strip(" ")
    return f"{name.strip().lower()}:{value}"


def _body(lines: list[str], relaxed: bool) -> bytes:
    if relaxed:
        lines = [re.sub(r"[ \t]+", " ", ln).rstrip(" ") for ln in lines]
    while lines and lines[-1] == "":
        lines = lines[:-1]
    if not lines:
        return b"" if relaxed else b"\r\n"
    return ("\r\n".join(lines) + "\r\n").encode()


def signature_tags(text: str) -> dict[str, str]:
    """The tags of the message's (first) DKIM-Signature, whitespace removed."""
    head = _crlf_lines(text)
    head = head[: head.index("")] if "" in head else head
    sig = next(f for f in _fields(head) if f.lower().startswith("dkim-signature:"))
    value = re.sub(r"\s+", "", sig.partition(":")[2])
    return dict(t.partition("=")[::2] for t in value.split(";") if t)


def verify(text: str, txt_record: str) -> str | None:
    """Why the DKIM-Signature of ``text`` does not verify with the key of ``txt_record``
    (the record's strings joined), or None when it does."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding

    lines = _crlf_lines(text)
    split = lines.index("")
    fields, body = _fields(lines[:split]), lines[split + 1 :]
    tags = signature_tags(text)
    if tags.get("a") != "rsa-sha256":
        return f"algorithm {tags.get('a')}"
    header_canon, _, body_canon = tags.get("c", "simple/simple").partition("/")
    relaxed_h, relaxed_b = header_canon == "relaxed", (body_canon or "simple") == "relaxed"
    body_hash = base64.b64encode(hashlib.sha256(_body(body, relaxed_b)).digest()).decode()
    if body_hash != tags["bh"]:
        return "body hash mismatch (the body changed after signing)"
    unused = list(fields)
    signed = []
    for name in tags["h"].split(":"):
        for field in reversed(unused):  # the last instance not used yet
            if field.split(":", 1)[0].strip().lower() == name.lower():
                unused.remove(field)
                signed.append(field)
                break
    sig_field = next(f for f in fields if f.lower().startswith("dkim-signature:"))
    sig_empty_b = re.sub(r"(\bb=)[^;]*", r"\1", sig_field)
    canon = _relaxed_header if relaxed_h else (lambda f: f)
    data = "".join(canon(f) + "\r\n" for f in signed) + canon(sig_empty_b)
    key_tags = dict(t.strip().partition("=")[::2] for t in txt_record.split(";") if t.strip())
    key = serialization.load_der_public_key(base64.b64decode(key_tags["p"]))
    try:
        key.verify(  # type: ignore[union-attr]
            base64.b64decode(tags["b"]), data.encode(), padding.PKCS1v15(), hashes.SHA256()
        )
    except InvalidSignature:
        return "bad signature (a signed header changed, or another key)"
    return None


def lab_txt(name: str) -> list[str]:
    """The TXT records of ``name`` as smtpx1's unbound answers them (strings joined)."""
    out = podman_exec("smtpx1", "python3", "-c", TXT_QUERY, name).splitlines()
    assert out[0] == "0", f"{name}: rcode {out[0]} from smtpx1's unbound (was pki.yml run?)"
    return out[1:]


@pytest.fixture(scope="module")
def signed() -> tuple[str, str]:
    """A message from alice@static-a.test through smtpx1, as outside received it."""
    tag, text = message("alice@static-a.test", "dave@internet.test", body="DKIM test.")
    d = smtp("gw1", "smtpx1", "alice@static-a.test", ["dave@internet.test"], data=text)
    assert d.last[0] == "eom" and d.last[1] == 250, d.transcript
    return tag, _message_with(wait_for_mail("outside", "dave", tag), tag)


def test_the_key_record_is_in_the_lab_dns_seen_from_smtpx1():
    records = lab_txt(f"{SELECTOR}._domainkey.static-a.test")
    assert any(t.startswith("v=DKIM1; k=rsa; p=MII") for t in records), records


def test_mail_through_smtpx1_carries_a_signature_of_its_sender_domain(signed):
    _tag, text = signed
    tags = signature_tags(text)
    assert tags["d"] == "static-a.test" and tags["s"] == SELECTOR, tags
    assert tags["a"] == "rsa-sha256" and tags["c"] == "relaxed/relaxed", tags
    assert "from" in tags["h"].lower().split(":"), tags


def test_the_signature_verifies_against_the_lab_dns(signed):
    _tag, text = signed
    tags = signature_tags(text)
    records = lab_txt(f"{tags['s']}._domainkey.{tags['d']}")
    assert verify(text, records[0]) is None


def test_an_altered_message_does_not_verify(signed):
    # the check can fail: the same message with its body, then its subject, changed
    tag, text = signed
    record = lab_txt(f"{SELECTOR}._domainkey.static-a.test")[0]
    altered_body = text.replace("DKIM test.", "DKIM test, altered.")
    assert verify(altered_body, record) == "body hash mismatch (the body changed after signing)"
    altered_subject = text.replace(f"Passerelle test {tag}", f"Passerelle test {tag}!")
    assert verify(altered_subject, record).startswith("bad signature")
