import mailbox
import subprocess
from email import message_from_bytes
from pathlib import Path

import pytest

from passerelle.spam.learn import learn
from passerelle.spam.ocr import OcrLimits, augment, tesseract_runner

PNG = b"\x89PNG\r\n\x1a\nfake"
B64 = "iVBORw0KGgpmYWtl"  # base64 of PNG


def multipart(n_images=1, nl=b"\r\n"):
    parts = [b"--XX", b"Content-Type: text/plain", b"", b"hello", b""]
    for _ in range(n_images):
        parts += [
            b"--XX",
            b"Content-Type: image/png",
            b"Content-Transfer-Encoding: base64",
            b"",
            B64.encode(),
            b"",
        ]
    parts += [b"--XX--", b""]
    head = [b"Subject: pic", b"MIME-Version: 1.0", b'Content-Type: multipart/mixed; boundary="XX"']
    return nl.join([*head, b"", *parts])


def test_augment_appends_text_part_keeping_original_bytes():
    msg = multipart()
    out, n = augment(msg, lambda img, t: "  CHEAP\n WATCHES ", OcrLimits())
    assert n == 1
    closing = msg.rindex(b"--XX--")
    assert out.startswith(msg[:closing])
    assert out.endswith(b"--XX--\r\n")
    parsed = message_from_bytes(out)
    texts = [
        p.get_payload(decode=True).strip()
        for p in parsed.walk()
        if p.get_content_type() == "text/plain"
    ]
    assert texts == [b"hello", b"CHEAP WATCHES"]


def test_augment_single_part_image_is_wrapped():
    msg = (
        b"Subject: pic\r\nMIME-Version: 1.0\r\nContent-Type: image/png\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n" + B64.encode() + b"\r\n"
    )
    out, n = augment(msg, lambda img, t: "WIN MONEY", OcrLimits())
    assert n == 1
    parsed = message_from_bytes(out)
    assert parsed["Subject"] == "pic"
    types = [p.get_content_type() for p in parsed.walk()]
    assert types == ["multipart/mixed", "image/png", "text/plain"]
    assert parsed.get_payload()[0].get_payload(decode=True) == PNG


def test_no_images_or_no_text_leaves_message_alone():
    plain = b"Subject: x\r\n\r\nno image/png here\r\n"
    assert augment(plain, lambda i, t: "X", OcrLimits()) == (plain, 0)
    assert augment(multipart(), lambda i, t: "  \n", OcrLimits()) == (multipart(), 0)


def test_limits_count_size_and_time():
    seen = []

    def ocr(img, timeout):
        seen.append(timeout)
        return "T"

    _out, n = augment(multipart(7), ocr, OcrLimits(max_images=3))
    assert n == 3
    assert len(seen) == 3
    _out, n = augment(multipart(2), ocr, OcrLimits(max_image_size=len(PNG) - 1))
    assert n == 0

    now = [0.0]
    timeouts = []

    def slow(img, timeout):
        timeouts.append(timeout)
        now[0] += 4.0
        return "T"

    _out, n = augment(
        multipart(5), slow, OcrLimits(timeout=3.0, total_timeout=9.0), clock=lambda: now[0]
    )
    assert timeouts == [3.0, 3.0, 1.0]
    assert n == 3


def test_ocr_timeout_skips_image():
    def ocr(img, timeout):
        raise subprocess.TimeoutExpired("tesseract", timeout)

    assert augment(multipart(2), ocr, OcrLimits())[1] == 0


def test_real_tesseract_reads_generated_png(tmp_path):
    # needs Debian packages tesseract-ocr, imagemagick and fonts-dejavu-core
    png = tmp_path / "spam.png"
    subprocess.run(
        [
            "/usr/bin/convert",
            "-size",
            "900x160",
            "xc:white",
            "-font",
            "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
            "-pointsize",
            "56",
            "-fill",
            "black",
            "-annotate",
            "+20+100",
            "CHEAP WATCHES ONLINE",
            str(png),
        ],
        check=True,
    )
    text = tesseract_runner("/usr/bin/tesseract", "eng")(png.read_bytes(), 20.0)
    assert "CHEAP WATCHES ONLINE" in text


def test_learn_mbox_and_maildir_in_batches(tmp_path):
    (tmp_path / "spam").mkdir()
    box = mailbox.mbox(tmp_path / "spam" / "box.mbox")
    for i in range(5):
        box.add(f"From: a@b\nSubject: spam {i}\n\nbuy now {i}\n".encode())
    box.flush()
    md = mailbox.Maildir(tmp_path / "spam" / "Junk")
    for i in range(3):
        md.add(f"Subject: md {i}\n\nbody\n".encode())
    calls = []

    def run(argv):
        files = sorted(Path(argv[-1]).iterdir())
        calls.append((argv[:-1], [f.read_bytes() for f in files]))
        return 0

    total, failed = learn("spam", tmp_path / "spam", "/usr/bin/sa-learn", 4, ["--no-sync"], run)
    assert (total, failed) == (8, 0)
    assert [len(m) for _a, m in calls] == [4, 4]
    assert all(a == ["/usr/bin/sa-learn", "--spam", "--no-sync"] for a, _m in calls)
    subjects = sorted(message_from_bytes(m)["Subject"] for _a, ms in calls for m in ms)
    assert subjects == [f"md {i}" for i in range(3)] + [f"spam {i}" for i in range(5)]


def test_learn_single_mbox_file_reports_failures(tmp_path):
    f = tmp_path / "ham.mbox"
    box = mailbox.mbox(f)
    box.add(b"Subject: ham\n\nhello\n")
    box.flush()
    assert learn("ham", f, run=lambda argv: 1) == (1, 1)
    with pytest.raises(ValueError):
        learn("eggs", f, run=lambda argv: 0)


def test_learn_cli(tmp_path, capsys):
    from passerelle.cli import main

    assert main(["spam", "learn", "--ham", str(tmp_path / "missing")]) == 1
    assert "not found" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["spam", "learn"])
