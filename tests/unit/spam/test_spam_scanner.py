from dataclasses import replace

import pytest

from passerelle.spam.config import OcrConfig, SpamConfig
from passerelle.spam.marking import ScanResult, apply_edits
from passerelle.spam.scanner import Scanner, build_message
from passerelle.spam.spamc import SpamdError


class FakeClient:
    def __init__(self, result=None, error=None):
        self.result = result
        self.error = error
        self.messages = []

    def check(self, message):
        self.messages.append(message)
        if self.error:
            raise SpamdError(self.error)
        return self.result, "127.0.0.1:783"


H = [("Subject", "Hello"), ("X-Spam-Status", "No, forged"), ("X-Folded", "a\n\tb")]


def cfg(**kw):
    return replace(SpamConfig(hostname="gw1"), **kw)


def get(h, name):
    return [v for n, v in h if n.lower() == name.lower()]


def test_build_message_crlf_and_folding():
    assert build_message(H, b"body\r\n") == (
        b"Subject: Hello\r\nX-Spam-Status: No, forged\r\nX-Folded: a\r\n\tb\r\n\r\nbody\r\n"
    )


def test_scanned_high():
    client = FakeClient(ScanResult(8.0, 5.0, True, ("GTUBE",)))
    out = Scanner(cfg(), client).scan(H, b"body\r\n", 100)
    assert out.action == "accept"
    final = apply_edits(H, out.edits)
    assert get(final, "X-status") == ["HIGH"]
    assert get(final, "X-Spam-Status") == ["Yes, score=8.0 required=5.0 tests=GTUBE"]
    assert "tier=HIGH" in out.summary
    assert client.messages[0].endswith(b"\r\n\r\nbody\r\n")


@pytest.mark.parametrize(("score", "status"), [(8.0, "HIGH"), (4.5, "MEDIUM"), (3.5, "LOW")])
def test_oversize_first_max_size_bytes_are_scanned_and_marked(score, status):
    """Like spamc with its own limit: the headers intact, the body cut at a line boundary so
    the whole is at most max_size; the tiers apply to that partial scan, which is stated."""
    client = FakeClient(ScanResult(score, 5.0, score >= 5.0, ("GTUBE",)))
    body = b"".join(b"line %04d of the body\r\n" % i for i in range(200))
    out = Scanner(cfg(max_size=1000), client).scan(H, body[:1001], 5200)
    assert out.action == "accept"
    assert len(client.messages) == 1
    sent = client.messages[0]
    assert len(sent) <= 1000
    head, _, sent_body = sent.partition(b"\r\n\r\n")
    assert head == build_message(H, b"").rstrip(b"\r\n")  # headers intact
    assert sent_body.endswith(b"\r\n") and body.startswith(sent_body)  # cut at a line end
    assert len(sent) > 1000 - len(b"line 0000 of the body\r\n")  # no more cut than needed
    final = apply_edits(H, out.edits)
    assert get(final, "X-status") == [status]
    assert get(final, "Subject") == (
        ["[MESSAGE MARQUE SPAM] Hello"] if status == "HIGH" else ["Hello"]
    )
    assert get(final, "X-Spam-Status")[0].startswith(("Yes, score=", "No, score="))
    partial = get(final, "X-Spam-Partial")
    assert partial == [f"first {len(sent)} of 5200 bytes scanned (max_size 1000)"]
    assert f"partial={len(sent)}/5200" in out.summary


def test_oversize_with_one_long_line_is_still_scanned():
    client = FakeClient(ScanResult(8.0, 5.0, True, ()))
    out = Scanner(cfg(max_size=1000), client).scan(H, b"A" * 1001, 90000)
    sent = client.messages[0]
    assert 0 < len(sent) <= 1000 and sent.endswith(
        b"\r\n\r\n" + b"A" * (1000 - sent.index(b"\r\n\r\n") - 4)
    )
    assert get(apply_edits(H, out.edits), "X-status") == ["HIGH"]


def test_not_oversize_has_no_partial_note():
    client = FakeClient(ScanResult(8.0, 5.0, True, ()))
    final = apply_edits(H, Scanner(cfg(max_size=1000), client).scan(H, b"b\r\n", 100).edits)
    assert get(final, "X-Spam-Partial") == []


def test_forged_partial_note_is_removed():
    h = [*H, ("X-Spam-Partial", "no")]
    client = FakeClient(ScanResult(1.0, 5.0, False, ()))
    final = apply_edits(h, Scanner(cfg(), client).scan(h, b"b\r\n", 100).edits)
    assert get(final, "X-Spam-Partial") == []


def test_spamd_down_accept():
    out = Scanner(cfg(), FakeClient(error="all down")).scan(H, b"b", 10)
    assert out.action == "accept"
    final = apply_edits(H, out.edits)
    assert get(final, "X-Spam-Status") == ["not scanned (spamd unavailable)"]
    assert get(final, "Subject") == ["Hello"]
    assert "all down" in out.summary


def test_spamd_down_tempfail():
    out = Scanner(cfg(on_error="tempfail"), FakeClient(error="all down")).scan(H, b"b", 10)
    assert out.action == "tempfail"
    assert out.edits == []


def test_ocr_text_goes_to_spamd_only():
    msg_headers = [
        ("Subject", "pic"),
        ("MIME-Version", "1.0"),
        ("Content-Type", 'multipart/mixed; boundary="BB"'),
    ]
    body = (
        b"--BB\r\nContent-Type: text/plain\r\n\r\nsee picture\r\n"
        b"--BB\r\nContent-Type: image/png\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        b"iVBORw0KGgo=\r\n--BB--\r\n"
    )
    client = FakeClient(ScanResult(1.0, 5.0, False, ()))
    calls = []

    def ocr(image, timeout):
        calls.append(image)
        return "BUY CHEAP VIAGRA"

    sc = Scanner(cfg(ocr=OcrConfig(enabled=True)), client, ocr=ocr)
    out = sc.scan(msg_headers, body, len(body) + 100)
    assert calls == [b"\x89PNG\r\n\x1a\n"]
    assert b"BUY CHEAP VIAGRA" in client.messages[0]
    assert "ocr_images=1" in out.summary


def test_ocr_crash_does_not_stop_scan():
    def ocr(image, timeout):
        raise RuntimeError("boom")

    client = FakeClient(ScanResult(1.0, 5.0, False, ()))
    h = [("Content-Type", 'multipart/mixed; boundary="B"')]
    body = b"--B\r\nContent-Type: image/gif\r\n\r\nGIF89a\r\n--B--\r\n"
    out = Scanner(cfg(), client, ocr=ocr).scan(h, body, 100)
    assert out.action == "accept"
    assert len(client.messages) == 1


def test_received_hop_goes_to_spamd_only():
    client = FakeClient(ScanResult(1.0, 5.0, False, ()))
    rcv = "from client.test ([192.0.2.7]) by gw1 with ESMTP id Q1; Fri, 27 Nov 2026 10:00:00 +0000"
    out = Scanner(cfg(), client).scan(H, b"body\r\n", 100, rcv)
    assert client.messages[0].startswith(b"Received: " + rcv.encode() + b"\r\nSubject: Hello")
    # The edits are computed on the message as sendmail holds it: no Received added there.
    final = apply_edits(H, out.edits)
    assert get(final, "Received") == []
