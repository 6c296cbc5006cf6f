"""Property-based fuzzing of the antivirus engine with generated MIME (issue 14).

Random nesting (multipart, attached messages in base64), transfer encodings (base64,
quoted-printable, 7bit, broken base64), file names with raw 8-bit bytes and encoded words,
and zips / tars / tar.gz / .gz holding a small PE stub built on the fly. Properties: no
exception escapes the engine, no inspection goes over its budget, and no generated
executable is accepted as clean when the rules forbid executables (clamd is a fake that
always says OK: the content rules are the only line here).
"""

from __future__ import annotations

import base64
import gzip
import io
import quopri
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import hostile_samples as hs
from passerelle.antivirus import clamd as cl
from passerelle.antivirus.config import parse_config
from passerelle.antivirus.engine import ACCEPT, Engine, Envelope
from passerelle.antivirus.outbreak import OutbreakStore
from passerelle.antivirus.quarantine import Quarantine

CFG = parse_config({"antivirus": {"hostname": "gw1", "rules": hs.EXE_RULES}})


class CleanScanner:
    def scan(self, data):
        return cl.ScanResult(cl.CLEAN, host="fake")

    def version(self):
        return cl.SignatureVersion("ClamAV", 1, "d")


@dataclass
class Gen:
    raw: bytes
    exe: bool  # an intact executable is somewhere in it


CONTAINERS = ("plain", "zip", "tar", "tgz", "gz")
CONTENTS = ("text", "pdf", "exe")

name_bytes = st.binary(min_size=0, max_size=12).map(
    lambda b: bytes(c for c in b if c not in b'"\\\r\n\0')
)
extensions = st.sampled_from(["pdf", "txt", "zip", "gz", "tar", "doc", "", "bin", "dat"])


@st.composite
def filenames(draw) -> bytes:
    stem = draw(name_bytes) or b"f"
    ext = draw(extensions).encode()
    name = stem + (b"." + ext if ext else b"")
    if draw(st.booleans()):  # an encoded word, sometimes broken
        word = base64.b64encode(name).decode()
        if draw(st.booleans()):
            word = word[:-1] + "x"
        return f"=?utf-8?B?{word}?=".encode()
    return name


@st.composite
def leaf(draw) -> Gen:
    content = draw(st.sampled_from(CONTENTS))
    data = {"text": b"hello world\n" * 3, "pdf": hs.PDF_DOC, "exe": hs.PE_STUB}[content]
    inner_name = draw(st.sampled_from(["a.bin", "doc.txt", "x", "setup.exe"]))
    container = draw(st.sampled_from(CONTAINERS))
    if container == "zip":
        data = hs.make_zip({inner_name: data})
    elif container == "tar":
        data = hs.make_tar({inner_name: data})
    elif container == "tgz":
        data = hs.make_tar({inner_name: data}, "w:gz")
    elif container == "gz":  # the name stored in the gzip header (what gunzip -N restores)
        buf = io.BytesIO()
        with gzip.GzipFile(filename=inner_name, mode="wb", fileobj=buf, mtime=0) as gz:
            gz.write(data)
        data = buf.getvalue()
    exe = content == "exe" or (inner_name.endswith(".exe") and container != "plain")
    cte = draw(st.sampled_from(["base64", "quoted-printable", "broken-base64", "7bit"]))
    if cte == "7bit" and not data.isascii():
        cte = "base64"
    if cte == "base64":
        body = base64.encodebytes(data).replace(b"\n", b"\r\n")
    elif cte == "quoted-printable":
        body = quopri.encodestring(data).replace(b"\n", b"\r\n")
    elif cte == "broken-base64":
        enc = base64.encodebytes(data)
        cut = draw(st.integers(0, len(enc)))
        body = enc[:cut] + b"!!%%" + enc[cut:]
        cte = "base64"
        exe = False  # what it decodes to is anyone's guess
    else:
        body = data
    fname = draw(filenames())
    ctype = draw(st.sampled_from(["application/octet-stream", "text/plain", "application/pdf"]))
    headers = b"Content-Type: " + ctype.encode()
    if draw(st.booleans()):
        headers += b'; name="' + fname + b'"'
    if draw(st.booleans()):
        headers += b'\r\nContent-Disposition: attachment; filename="' + fname + b'"'
    headers += b"\r\nContent-Transfer-Encoding: " + cte.encode()
    return Gen(headers + b"\r\n\r\n" + body, exe)


def _multipart(children: list[Gen], boundary: str) -> Gen:
    out = [f'Content-Type: multipart/mixed; boundary="{boundary}"\r\n\r\n'.encode()]
    for c in children:
        out += [f"--{boundary}\r\n".encode(), c.raw, b"\r\n"]
    out.append(f"--{boundary}--\r\n".encode())
    return Gen(b"".join(out), any(c.exe for c in children))


def _attached_message(child: Gen) -> Gen:
    msg = b"From: x@example.net\r\nSubject: fwd\r\nMIME-Version: 1.0\r\n" + child.raw
    body = base64.encodebytes(msg).replace(b"\n", b"\r\n")
    head = b"Content-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    return Gen(head + body, child.exe)


def tree(max_depth: int = 3):
    counter = iter(range(10**9))

    def extend(children):
        return st.one_of(
            st.lists(children, min_size=1, max_size=4).map(
                lambda cs: _multipart(cs, f"b{next(counter)}")
            ),
            children.map(_attached_message),
        )

    return st.recursive(leaf(), extend, max_leaves=8)


def engine(tmp: Path) -> Engine:
    return Engine(
        CFG,
        scanner=CleanScanner(),
        quarantine=Quarantine(tmp / "q"),
        outbreak=OutbreakStore(tmp / "ob.json"),
    )


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(tree())
def test_generated_mime_never_escapes_never_overruns_never_passes_an_exe(tmp_path, gen):
    raw = b"From: f@example.net\r\nTo: b@example.com\r\nSubject: fuzz\r\nMIME-Version: 1.0\r\n"
    raw += gen.raw
    headers, _ = hs.split(raw)
    env = Envelope("f@example.net", ["b@example.com"], "192.0.2.9", "fuzz.example.net")
    t0 = time.process_time()
    v = engine(tmp_path).process(env, headers, io.BytesIO(raw), len(raw))  # must not raise
    cpu = time.process_time() - t0
    assert "time budget" not in v.log, v.log
    assert cpu < CFG.inspect_time_budget, f"{cpu:.2f} s"
    if gen.exe:
        assert v.action != ACCEPT, f"executable passed as clean: {v.log}\n{raw[:2000]!r}"
