from __future__ import annotations

import pytest
from av_helpers import ELF, PDF, PE, attachment, make_zip, multipart, raw_part

from passerelle.antivirus.config import ArchiveLimits, MimeLimits, parse_config
from passerelle.antivirus.filetypes import detect_type, extension
from passerelle.antivirus.mime import walk
from passerelle.antivirus.rules import MIME_TOO_DEEP, OVERSIZED_ARCHIVE, evaluate

CFG = parse_config(
    {
        "antivirus": {
            "rules": [
                {
                    "name": "executables",
                    "extensions": ["exe", "scr", "js", "vbs"],
                    "types": ["pe", "elf"],
                    "action": "quarantine",
                },
                {
                    "name": "urgent-invoice",
                    "header": "Subject",
                    "pattern": "(?i)invoice.*urgent",
                    "action": "reject",
                },
                {"name": "no-hta", "extensions": ["hta"], "action": "strip"},
            ]
        }
    }
)


def rules_for(raw: bytes, headers=(), archives: ArchiveLimits | None = None):
    w = walk(raw, max_depth=CFG.mime.max_depth)
    return evaluate(w, list(headers), CFG.rules, archives or CFG.archives, CFG.mime)


def names(res):
    return sorted({m.rule for m in res.matches})


def test_clean_message_has_no_match():
    res = rules_for(multipart("Content-Type: text/plain\n\nhello", attachment("a.pdf", PDF)))
    assert res.matches == []
    assert res.action is None


@pytest.mark.parametrize("filename", ["setup.exe", "SETUP.EXE", "x.pdf.exe", "evil.exe.", "a.Js"])
def test_extension_by_filename(filename):
    res = rules_for(multipart(attachment(filename, b"harmless text")))
    assert names(res) == ["executables"]
    assert res.action == "quarantine"


def test_extension_from_content_type_name_only():
    part = raw_part('Content-Type: application/octet-stream; name="tool.scr"', b"data")
    assert names(rules_for(multipart(part))) == ["executables"]


def test_rfc2231_encoded_filename():
    part = raw_part(
        "Content-Type: application/octet-stream\n"
        "Content-Disposition: attachment; filename*=utf-8''r%C3%A9sum%C3%A9%2Eexe",
        b"data",
    )
    res = rules_for(multipart(part))
    assert names(res) == ["executables"]
    assert "résumé.exe" in res.matches[0].detail


def test_rfc2231_continuations():
    part = raw_part(
        "Content-Type: application/octet-stream\n"
        'Content-Disposition: attachment; filename*0="invoice_2024"; filename*1=".e";'
        ' filename*2="xe"',
        b"data",
    )
    assert names(rules_for(multipart(part))) == ["executables"]


def test_rfc2047_encoded_name():
    part = raw_part(
        'Content-Type: application/octet-stream; name="=?UTF-8?B?ZmFjdHVyZS5leGU=?="', b"data"
    )
    assert names(rules_for(multipart(part))) == ["executables"]


@pytest.mark.parametrize("data", [PE, ELF])
def test_type_detected_whatever_the_name(data):
    res = rules_for(multipart(attachment("invoice.pdf", data, "application/pdf")))
    assert names(res) == ["executables"]
    assert "type" in res.matches[0].detail


def test_type_detected_in_unnamed_part():
    part = "Content-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n\n"
    part += __import__("base64").encodebytes(PE).decode()
    assert names(rules_for(multipart(part))) == ["executables"]


def test_exe_inside_zip():
    z = make_zip({"docs/readme.txt": b"hi", "docs/setup.exe": b"not really"})
    res = rules_for(multipart(attachment("docs.zip", z, "application/zip")))
    assert names(res) == ["executables"]
    assert "in archive" in res.matches[0].detail


def test_pe_type_inside_zip_with_innocent_name():
    z = make_zip({"photo.jpg": PE})
    assert names(rules_for(multipart(attachment("photos.zip", z)))) == ["executables"]


def test_nested_zip_within_depth():
    inner = make_zip({"deep/payload.vbs": b"x"})
    outer = make_zip({"inner.zip": inner})
    res = rules_for(multipart(attachment("outer.zip", outer)))
    assert names(res) == ["executables"]


def test_nested_zip_beyond_depth_is_oversized_not_bypass():
    z = make_zip({"payload.exe": b"x"})
    for _ in range(4):
        z = make_zip({"layer.zip": z})
    res = rules_for(multipart(attachment("onion.zip", z)))
    assert OVERSIZED_ARCHIVE in names(res)
    assert res.action == "quarantine"


def test_zip_member_count_bound():
    z = make_zip({f"f{i}.txt": b"x" for i in range(20)})
    limits = ArchiveLimits(max_members=10)
    res = rules_for(multipart(attachment("many.zip", z)), archives=limits)
    assert names(res) == [OVERSIZED_ARCHIVE]


def test_zip_total_size_bound_zip_bomb():
    z = make_zip({"big.txt": b"\0" * 2_000_000})
    assert len(z) < 20_000
    res = rules_for(
        multipart(attachment("bomb.zip", z)), archives=ArchiveLimits(max_total_size=1_000_000)
    )
    assert names(res) == [OVERSIZED_ARCHIVE]


def test_corrupt_zip_is_not_a_bypass():
    # Unreadable is not "too big": it follows the uninspectable-content policy.
    bad = b"PK\x03\x04" + b"\xff" * 200
    res = rules_for(multipart(attachment("data.zip", bad)))
    assert res.matches == []
    assert res.uninspectable and "end of central directory" in res.uninspectable[0]


def test_ooxml_type():
    z = make_zip({"[Content_Types].xml": b"<Types/>", "word/document.xml": b"<w/>"})
    cfg = parse_config(
        {"antivirus": {"rules": [{"name": "office", "types": ["ooxml"], "action": "reject"}]}}
    )
    w = walk(multipart(attachment("a.docx", z)))
    res = evaluate(w, [], cfg.rules, cfg.archives, cfg.mime)
    assert names(res) == ["office"]


def test_header_pattern_rule():
    hdrs = [("From", "x@y"), ("subject", "Your Invoice is URGENT")]
    res = rules_for(multipart(attachment("a.pdf", PDF)), headers=hdrs)
    assert names(res) == ["urgent-invoice"]
    assert res.action == "reject"


def test_header_pattern_on_rfc2047_subject():
    hdrs = [("Subject", "=?UTF-8?B?SW52b2ljZSB0csOocyB1cmdlbnQ=?=")]  # "Invoice très urgent"
    assert names(rules_for(b"Subject: x\n\nbody\n", headers=hdrs)) == ["urgent-invoice"]


def test_header_pattern_no_match_on_other_header():
    hdrs = [("X-Note", "invoice urgent")]
    assert rules_for(b"Subject: x\n\nbody\n", headers=hdrs).matches == []


def test_strip_match_is_locatable_and_reject_wins():
    raw = multipart(attachment("a.hta", b"<script/>"), attachment("b.exe", b"x"))
    res = rules_for(raw, headers=[("Subject", "invoice urgent")])
    assert res.action == "reject"
    assert {m.rule: m.path for m in res.matches if m.rule == "no-hta"} == {"no-hta": (0,)}


def test_filetypes():
    assert detect_type(PE) == "pe"
    assert detect_type(b"Rar!\x1a\x07\x01\x00") == "rar"
    assert detect_type(b"7z\xbc\xaf\x27\x1c\x00") == "7z"
    assert detect_type(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1") == "ole"
    assert detect_type(b"junk" * 10 + b"%PDF-1.7") == "pdf"
    assert detect_type(b"hello") is None
    assert extension("C:\\dir\\evil.EXE. . ") == "exe"
    assert extension("noext") == ""


def test_mime_limits_default_types():
    assert isinstance(CFG.mime, MimeLimits)
    assert MIME_TOO_DEEP == "mime_too_deep"
