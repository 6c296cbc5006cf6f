"""Malformed MIME corpus: never a crash, never an attachment rule bypassed."""

from __future__ import annotations

import base64

import pytest
from av_helpers import PE, attachment, multipart

from passerelle.antivirus.config import parse_config
from passerelle.antivirus.mime import walk
from passerelle.antivirus.rules import MIME_TOO_DEEP, evaluate

CFG = parse_config(
    {
        "antivirus": {
            "rules": [
                {
                    "name": "executables",
                    "extensions": ["exe", "scr"],
                    "types": ["pe"],
                    "action": "strip",
                }
            ]
        }
    }
)
B64_PE = base64.encodebytes(PE + b"\0" * 100).decode()


def _nested(depth: int) -> bytes:
    head = "From: a@b\nSubject: nest\nMIME-Version: 1.0\n"
    body = attachment("deep.exe", b"x")
    for i in range(depth):
        body = f'Content-Type: multipart/mixed; boundary="b{i}"\n\n--b{i}\n{body}\n--b{i}--\n'
    return (head + body).encode()


CORPUS: dict[str, bytes] = {
    "boundary-mismatch": (
        b'From: a@b\nContent-Type: multipart/mixed; boundary="AAA"\n\n--BBB\n'
        + attachment("payload.exe", b"x").encode()
        + b"\n--BBB--\n"
    ),
    "missing-end-boundary": multipart(attachment("payload.exe", b"x"))[: -len(b"--BOUND--\n")],
    "no-boundary-param": (
        b"From: a@b\nContent-Type: multipart/mixed\n\n--X\n"
        + attachment("payload.exe", b"x").encode()
    ),
    "bad-base64": multipart(
        'Content-Type: application/octet-stream; name="payload.exe"\n'
        "Content-Transfer-Encoding: base64\n\n!!!@@@###$$$%%%^^^&&&***\n====\nTVq\n"
    ),
    "bad-base64-pe-no-name": multipart(
        "Content-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n\n"
        + B64_PE
        + "%%%%garbage%%%%\n"
    ),
    "huge-header": multipart(
        attachment("payload.exe", b"x"), extra_headers="X-Huge: " + "A" * 2_000_000
    ),
    "huge-folded-header": multipart(
        attachment("payload.exe", b"x"), extra_headers="X-Fold: a\n" + " b\n" * 50_000
    ),
    "deep-nesting": _nested(60),
    "very-deep-nesting": _nested(3000),
    "nul-and-8bit": multipart(attachment("payload.exe", b"\0\xff" * 50)).replace(
        b"preamble", b"\0\xff\xfe pre"
    ),
    "crlf-mixed": multipart(attachment("payload.exe", b"x")).replace(b"\n", b"\r\n", 5),
    "quoted-unterminated-filename": multipart(
        "Content-Type: application/octet-stream\n"
        'Content-Disposition: attachment; filename="payload.exe\n\nxx'
    ),
    "bad-rfc2231-charset": multipart(
        "Content-Type: application/octet-stream\n"
        "Content-Disposition: attachment; filename*=x-nonexistent''payload%2Eexe\n\nxx"
    ),
    "bad-encoded-word": multipart(
        'Content-Type: application/octet-stream; name="=?bogus?Q?payload=2Eexe?="\n\nxx'
    ),
    "headers-only-no-body-separator": (
        b"From: a@b\nContent-Type: application/octet-stream; name=payload.exe"
    ),
    "single-part-exe": (
        b'From: a@b\nContent-Type: application/octet-stream; name="payload.exe"\n'
        b"Content-Transfer-Encoding: base64\n\n" + B64_PE.encode()
    ),
    "message-rfc822-wrapped": multipart(
        "Content-Type: message/rfc822\n\n" + multipart(attachment("payload.exe", b"x")).decode()
    ),
}


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_malformed_never_crashes_nor_bypasses(name):
    raw = CORPUS[name]
    w = walk(raw, max_depth=CFG.mime.max_depth)
    res = evaluate(w, [], CFG.rules, CFG.archives, CFG.mime)
    # Either a rule matched, or the content is uninspectable (its own policy, never clean).
    assert res.matches or res.uninspectable, f"{name}: rule bypassed"
    assert res.action in ("strip", "quarantine") or not res.matches
    # A strip must be locatable; anything else was escalated to quarantine.
    for m in res.matches:
        if m.action == "strip":
            assert m.path is not None and m.path != ()


def test_deep_nesting_is_a_match_of_its_own():
    w = walk(_nested(60), max_depth=20)
    assert w.too_deep
    res = evaluate(w, [], CFG.rules, CFG.archives, CFG.mime)
    assert MIME_TOO_DEEP in {m.rule for m in res.matches}
    assert res.action == "quarantine"


def test_raw_fallback_ignores_html_name_attributes():
    raw = multipart('Content-Type: text/html\n\n<input name="setup.exe"><a name=x.exe>')
    w = walk(raw)
    assert w.raw_names == []
    assert evaluate(w, [], CFG.rules, CFG.archives, CFG.mime).matches == []
