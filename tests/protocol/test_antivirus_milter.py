"""The antivirus milter over its socket, with a real clamd (miltertest as the MTA)."""

from __future__ import annotations

import json

import antivirus_fixtures as fx
from antivirus_fixtures import (
    EICAR,
    EICAR_SIGNATURE,
    HOSTNAME,
    PDF_DOC,
    PE_STUB,
    RULES,
    final,
    mime_message,
    send_message,
    start_clamd,
    start_milter,
    write_milter_config,
)
from miltertest import constants as mc

clamd = fx.clamd
milter = fx.milter


def _b64_text(body: str) -> str:
    import email

    msg = email.message_from_string(
        'Content-Type: multipart/mixed; boundary="=_passerelle_test_boundary"\n\n' + body
    )
    return "".join(p.get_payload(decode=True).decode() for p in msg.walk() if not p.is_multipart())


def _reply(res):
    cmd, data = final(res)
    assert cmd == mc.SMFIR_REPLYCODE, res
    return data["smtpcode"], data["text"]


def test_eicar_rejected_naming_signature(milter):
    headers, body = mime_message([("eicar.com", "application/octet-stream", EICAR)])
    code, text = _reply(send_message(milter.socket, headers, body))
    assert code == "554"
    assert "5.7.1 Virus found:" in text
    assert EICAR_SIGNATURE in text


def test_clean_mail_passes_with_header(milter):
    headers, body = mime_message([("report.pdf", "application/pdf", PDF_DOC)])
    res = send_message(milter.socket, headers, body)
    assert final(res)[0] == mc.SMFIR_ACCEPT
    added = [(d["name"], d["value"]) for c, d in res if c == mc.SMFIR_ADDHEADER]
    assert ("X-Virus-Scanned", f"ClamAV on {HOSTNAME}") in added
    assert not list(milter.quarantine.glob("*.json"))


def test_header_rule_rejects_naming_rule(milter):
    headers, body = mime_message([], subject="Your INVOICE is very urgent")
    code, text = _reply(send_message(milter.socket, headers, body))
    assert code == "550"
    assert "urgent-invoice" in text


def test_exe_quarantined_then_released_once_to_original_recipients(milter):
    headers, body = mime_message([("setup.exe", "application/octet-stream", PE_STUB)])
    res = send_message(
        milter.socket,
        headers,
        body,
        sender="carol@example.org",
        rcpts=("dave@example.com", "erin@example.com"),
        client=("bad.example.net", "198.51.100.7"),
        queue_id="QEXE1",
    )
    assert final(res)[0] == mc.SMFIR_DISCARD
    metas = list(milter.quarantine.glob("*.json"))
    assert len(metas) == 1
    meta = json.loads(metas[0].read_text())
    assert meta["sender"] == "carol@example.org"
    assert meta["recipients"] == ["dave@example.com", "erin@example.com"]
    assert meta["client_ip"] == "198.51.100.7"
    assert meta["client_host"] == "bad.example.net"
    assert meta["reason"] == "rule"
    assert meta["detail"].startswith("executables")
    assert meta["queue_id"] == "QEXE1"
    assert meta["released"] is False
    stored = metas[0].with_suffix(".eml").read_bytes()
    assert b'filename="setup.exe"' in stored

    listing = milter.cli("quarantine", "list")
    assert listing.returncode == 0, listing.stderr
    assert meta["id"] in listing.stdout

    rel = milter.cli("quarantine", "release", meta["id"])
    assert rel.returncode == 0, rel.stderr
    sent = milter.released()
    assert len(sent) == 1
    argv, data = sent[0]
    assert argv == ["-oi", "-f", "carol@example.org", "--", "dave@example.com", "erin@example.com"]
    assert b"setup.exe" in data and b"\r\n" not in data

    again = milter.cli("quarantine", "release", meta["id"])
    assert again.returncode == 1
    assert "already released" in again.stderr
    assert len(milter.released()) == 1
    meta = json.loads(metas[0].read_text())
    assert meta["released"] is True
    assert [h["action"] for h in meta["history"]] == ["quarantined", "released"]


def test_strip_rule_replaces_attachment(milter):
    headers, body = mime_message([("run.hta", "application/hta", b"<script>alert(1)</script>")])
    res = send_message(milter.socket, headers, body)
    assert final(res)[0] == mc.SMFIR_ACCEPT
    new_body = "".join(d["buf"] for c, d in res if c == mc.SMFIR_REPLBODY)
    assert "The attachment run.hta was removed" in _b64_text(new_body)
    assert "PHNjcmlwdD5" not in new_body  # base64 of the script is gone
    assert "Hello Bob." in new_body
    assert "--=_passerelle_test_boundary--" in new_body
    added = dict((d["name"], d["value"]) for c, d in res if c == mc.SMFIR_ADDHEADER)
    assert added["X-Passerelle-Stripped"] == "no-scripts"


def test_outbreak_holds_attachment_and_releases_after_signature_update(milter, clamd):
    on = milter.cli("outbreak", "on", "--reason", "test")
    assert on.returncode == 0, on.stderr
    headers, body = mime_message([("report.pdf", "application/pdf", PDF_DOC)])
    res = send_message(milter.socket, headers, body, rcpts=("frank@example.com",))
    assert final(res)[0] == mc.SMFIR_DISCARD
    # A message without attachment still passes.
    h2, b2 = mime_message([])
    assert final(send_message(milter.socket, h2, b2))[0] == mc.SMFIR_ACCEPT
    [meta_path] = milter.quarantine.glob("*.json")
    assert json.loads(meta_path.read_text())["reason"] == "outbreak"

    # Same signatures: nothing released.
    held = milter.cli("outbreak", "release-held")
    assert held.returncode == 0, held.stderr
    assert "released 0" in held.stdout
    assert milter.released() == []

    # New signatures (freshclam would do this), clamd reloads: the PDF is rescanned, released.
    (clamd.db_dir / "update.hdb").write_text(
        "0123456789abcdef0123456789abcdef:1234:Passerelle-Test-Update\n"
    )
    try:
        clamd.reload()
        held = milter.cli("outbreak", "release-held")
        assert held.returncode == 0, held.stderr
        assert "released 1" in held.stdout
        [(argv, _data)] = milter.released()
        assert argv[-2:] == ["--", "frank@example.com"]
        assert json.loads(meta_path.read_text())["released"] is True
    finally:
        (clamd.db_dir / "update.hdb").unlink()
        clamd.reload()
    off = milter.cli("outbreak", "off")
    assert off.returncode == 0, off.stderr
    assert "outbreak mode: off" in off.stdout


def test_clamd_killed_tempfails(tmp_path):
    own = start_clamd(tmp_path / "clamd")
    base = tmp_path / "milter"
    base.mkdir()
    conf = write_milter_config(base, [str(own.socket)], own.db_dir, RULES)
    m = start_milter(base, conf)
    try:
        headers, body = mime_message([("report.pdf", "application/pdf", PDF_DOC)])
        assert final(send_message(m.socket, headers, body))[0] == mc.SMFIR_ACCEPT
        own.stop()
        code, text = _reply(send_message(m.socket, headers, body))
        assert code == "451"
        assert text.startswith("4.7.1")
        assert not list(m.quarantine.glob("*.json"))
    finally:
        m.stop()
        own.stop()


def test_clamd_failover_to_second_host(tmp_path):
    own = start_clamd(tmp_path / "clamd")
    base = tmp_path / "milter"
    base.mkdir()
    conf = write_milter_config(base, [str(tmp_path / "missing.sock"), str(own.socket)], own.db_dir)
    m = start_milter(base, conf)
    try:
        headers, body = mime_message([("eicar.txt", "text/plain", EICAR)])
        code, text = _reply(send_message(m.socket, headers, body))
        assert code == "554" and EICAR_SIGNATURE in text
    finally:
        m.stop()
        own.stop()


def test_on_error_accept_adds_not_scanned_header(tmp_path):
    base = tmp_path / "milter"
    base.mkdir()
    conf = write_milter_config(base, [str(tmp_path / "missing.sock")], tmp_path, RULES)
    conf.write_text(conf.read_text().replace('log_level = "debug"', 'on_error = "accept"'))
    m = start_milter(base, conf)
    try:
        headers, body = mime_message([("report.pdf", "application/pdf", PDF_DOC)])
        res = send_message(m.socket, headers, body)
        assert final(res)[0] == mc.SMFIR_ACCEPT
        added = [(d["name"], d["value"]) for c, d in res if c == mc.SMFIR_ADDHEADER]
        assert added == [("X-Virus-Scanned", "not scanned (clamd unavailable)")]
    finally:
        m.stop()


# -- issue 14: hostile input -----------------------------------------------------------------
def _hostile(name: str):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import hostile_samples as hs

    sample = hs.BY_NAME[name]
    headers, body = hs.split(sample.build())
    return sample, headers, body


def test_clamd_limits_alert_is_uninspectable_not_clean(milter):
    """EICAR after 27 MiB of zeros in a 37 kB gzip: clamd (the role's limits, AlertExceedsMax)
    stops at MaxFileSize and says so; the milter quarantines it as uninspectable."""
    _s, headers, body = _hostile("eicar_after_zeros_gz")
    res = send_message(milter.socket, headers, body, queue_id="QLIM")
    assert final(res)[0] == mc.SMFIR_DISCARD, res
    [meta_path] = milter.quarantine.glob("*.json")
    meta = json.loads(meta_path.read_text())
    assert meta["reason"] == "uninspectable"
    assert "Heuristics.Limits.Exceeded" in meta["detail"]


def test_hostile_corpus_over_the_socket(milter):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import hostile_samples as hs

    for sample in hs.SAMPLES:
        raw = sample.build()
        if not raw.isascii():
            continue  # miltertest sends str bodies; 8-bit cases are covered by the engine tests
        headers, body = hs.split(raw)
        res = send_message(milter.socket, headers, body, queue_id=sample.name[:20])
        want = mc.SMFIR_ACCEPT if sample.verdict == "accept" else mc.SMFIR_DISCARD
        assert final(res)[0] == want, (sample.name, res[-1])


def test_forged_x_virus_scanned_is_removed_before_ours(milter):
    headers, body = mime_message([("report.pdf", "application/pdf", PDF_DOC)])
    headers = [("X-Virus-Scanned", "ClamAV on mx.example.net (forged)"), *headers]
    headers.append(("x-virus-scanned", "clean"))
    res = send_message(milter.socket, headers, body)
    assert final(res)[0] == mc.SMFIR_ACCEPT
    changes = [
        (d["index"], d["name"].lower(), d["value"]) for c, d in res if c == mc.SMFIR_CHGHEADER
    ]
    assert changes == [(2, "x-virus-scanned", ""), (1, "x-virus-scanned", "")]
    added = [(d["name"], d["value"]) for c, d in res if c == mc.SMFIR_ADDHEADER]
    assert added == [("X-Virus-Scanned", f"ClamAV on {HOSTNAME}")]


def test_negotiates_only_the_steps_it_uses(milter):
    """Exactly these steps are skipped and these are sent without a reply: re-enabling a
    step, or asking again for a reply per header line, fails here."""
    from milterclient import NO_REPLY_BITS, SKIP_BITS, MilterClient
    from miltertest import constants as c

    with MilterClient(milter.socket, timeout=10) as client:
        flags = client.protocol
    # it needs the client, the envelope, the headers and the body; never HELO, DATA or
    # unknown commands
    assert flags & SKIP_BITS == (c.SMFIP_NOHELO | c.SMFIP_NODATA | c.SMFIP_NOUNKNOWN), hex(flags)
    # only end of message is answered
    assert flags & NO_REPLY_BITS == (
        c.SMFIP_NR_CONN
        | c.SMFIP_NR_MAIL
        | c.SMFIP_NR_RCPT
        | c.SMFIP_NR_HDR
        | c.SMFIP_NR_EOH
        | c.SMFIP_NR_BODY
    ), hex(flags)


def test_spool_full_while_collecting_body_tempfails_then_next_message_passes(clamd, tmp_path):
    """The spool cannot grow past 3 MB (RLIMIT_FSIZE: EFBIG, as on a full disk): a bigger
    message fails in the (no-reply) body step, is answered 451 4.3.0 at end of message, and
    the next message of the same connection is scanned as usual."""
    from milterclient import MilterClient

    base = tmp_path / "milter"
    base.mkdir()
    conf = write_milter_config(base, [str(clamd.socket)], clamd.db_dir, RULES)
    m = start_milter(base, conf, max_file_size=3 * 1024 * 1024)
    try:
        big_headers, big_body = mime_message(
            [("data.bin", "application/octet-stream", b"\x00" * (5 * 1024 * 1024))]
        )
        headers, body = mime_message([("report.pdf", "application/pdf", PDF_DOC)])
        with MilterClient(m.socket) as c:
            assert c.connect("mx.example.net", "192.0.2.10", family=mc.SMFIA_INET)[0] == (
                mc.SMFIR_CONTINUE
            )
            for _ in range(2):
                for r in (c.mail("<alice@example.org>"), c.rcpt("<bob@example.com>")):
                    assert r[0] == mc.SMFIR_CONTINUE, r
                code, text = _reply(c.message(big_headers, big_body, "TESTQ1"))
                assert code == "451" and text.startswith("4.3.0 "), (code, text)
                for r in (c.mail("<alice@example.org>"), c.rcpt("<bob@example.com>")):
                    assert r[0] == mc.SMFIR_CONTINUE, r
                res = c.message(headers, body, "TESTQ2")
                assert final(res)[0] == mc.SMFIR_ACCEPT, res
        assert m.proc.poll() is None
    finally:
        m.stop()
