from __future__ import annotations

import contextlib
import io
import socket
import struct
import threading

import pytest
from av_helpers import PE, attachment, multipart

from passerelle.antivirus import clamd as cl
from passerelle.antivirus.cli import cmd_check_config
from passerelle.antivirus.config import parse_config
from passerelle.antivirus.engine import Engine, Envelope
from passerelle.antivirus.outbreak import OutbreakStore
from passerelle.antivirus.quarantine import Quarantine
from passerelle.config import ConfigError

FULL = """
[antivirus]
socket = "unix:/run/passerelle/antivirus.sock"
clamd = ["unix:/run/clamav/clamd.ctl", "127.0.0.1:3310"]
connect_timeout = "2s"
timeout = "60s"
on_error = "tempfail"
on_virus = "reject"
direction = "outbound"
hostname = "gw1"

[[antivirus.rules]]
name = "executables"
extensions = ["exe"]
types = ["pe"]
action = "quarantine"

[antivirus.archives]
max_depth = 3

[antivirus.outbreak]
auto = true
window = "10m"
threshold = 0.2
min_messages = 50
"""


def test_check_config_ok_and_errors(tmp_path, capsys):
    f = tmp_path / "av.toml"
    f.write_text(FULL)
    args = type("A", (), {"file": str(f)})
    assert cmd_check_config(args) == 0
    assert capsys.readouterr().out.strip() == f"{f}: OK"
    f.write_text(FULL.replace("on_virus", "on_virsu"))
    assert cmd_check_config(args) == 1
    assert "antivirus.on_virsu" in capsys.readouterr().err
    f.write_text(FULL.replace('"127.0.0.1:3310"', '"127.0.0.1"'))
    assert cmd_check_config(args) == 1
    assert "antivirus.clamd" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("rule", "key"),
    [
        ({"name": "x", "header": "Subject", "pattern": "(", "action": "reject"}, "pattern"),
        ({"name": "x", "extensions": ["exe"], "action": "burn"}, "action"),
        ({"name": "x", "types": ["exe"]}, "types"),
        ({"name": "x"}, "rules[0]"),
        ({"name": "x", "extensions": ["a"], "typo": 1}, "typo"),
    ],
)
def test_rule_errors_name_the_key(rule, key):
    with pytest.raises(ConfigError) as exc:
        parse_config({"antivirus": {"rules": [rule]}})
    assert key in exc.value.key


def test_defaults():
    cfg = parse_config({"antivirus": {}})
    assert cfg.on_error == "tempfail" and cfg.on_virus == "reject"
    assert cfg.archives.max_depth == 3 and cfg.outbreak.auto is False


@pytest.mark.parametrize(
    ("reply", "status", "info"),
    [
        ("stream: OK", cl.CLEAN, ""),
        ("stream: Eicar-Signature FOUND", cl.INFECTED, "Eicar-Signature"),
        ("stream: Win.Test.X-1 FOUND\0", cl.INFECTED, "Win.Test.X-1"),
        (
            "INSTREAM size limit exceeded. ERROR",
            cl.TOO_LARGE,
            "INSTREAM size limit exceeded. ERROR",
        ),
        ("stream: Can't allocate memory ERROR", cl.ERROR, "stream: Can't allocate memory ERROR"),
        ("garbage", cl.ERROR, "unexpected reply: 'garbage'"),
    ],
)
def test_parse_reply(reply, status, info):
    assert cl.parse_reply(reply) == (status, info)


def test_parse_version():
    v = cl.parse_version("ClamAV 1.0.5/27100/Mon Nov 20 08:30:00 2023\0")
    assert (v.version, v.date) == (27100, "Mon Nov 20 08:30:00 2023")
    assert cl.parse_version("ClamAV 1.4.6").version is None


class FakeClamd:
    """A tiny clamd on a unix socket that decodes INSTREAM chunks."""

    def __init__(self, path, reply=b"stream: OK\0", hang=False):
        self.path = str(path)
        self.reply = reply
        self.hang = hang
        self.received = b""
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(self.path)
        self.sock.listen(5)
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            with c:
                f = c.makefile("rb")
                assert f.read(10) == b"zINSTREAM\0"
                while True:
                    (n,) = struct.unpack("!L", f.read(4))
                    if n == 0:
                        break
                    self.received += f.read(n)
                if self.hang:
                    threading.Event().wait(5)
                with contextlib.suppress(OSError):  # the client gave up (timeout test)
                    c.sendall(self.reply)


def test_client_chunks_and_failover(tmp_path):
    fake = FakeClamd(tmp_path / "c.sock", b"stream: Bad.Thing FOUND\0")
    client = cl.ClamdClient(
        [f"unix:{tmp_path / 'missing.sock'}", "127.0.0.1:1", f"unix:{fake.path}"], 1, 5
    )
    data = b"x" * (cl.CHUNK * 2 + 10)
    res = client.scan(io.BytesIO(data))
    assert res.status == cl.INFECTED and res.signature == "Bad.Thing"
    assert res.host == f"unix:{fake.path}"
    assert fake.received == data


def test_client_read_timeout_is_bounded(tmp_path):
    fake = FakeClamd(tmp_path / "h.sock", hang=True)
    client = cl.ClamdClient([f"unix:{fake.path}"], 1, 1)
    res = client.scan(b"data")
    assert res.status == cl.ERROR
    assert "Timeout" in res.detail or "timed out" in res.detail


class StubScanner:
    def __init__(self, result):
        self.result = result
        self.calls = 0

    def scan(self, data):
        self.calls += 1
        return self.result

    def version(self):
        return cl.SignatureVersion("ClamAV", 7, "d")


def _engine(tmp_path, result, **over):
    cfg = parse_config(
        {
            "antivirus": {
                "hostname": "gw1",
                "rules": [{"name": "exe", "extensions": ["exe"], "action": "quarantine"}],
                **over,
            }
        }
    )
    return Engine(
        cfg,
        scanner=StubScanner(result),
        quarantine=Quarantine(tmp_path / "q"),
        outbreak=OutbreakStore(tmp_path / "ob.json"),
    )


def _run(engine, raw):
    env = Envelope("a@x", ["b@y"], "192.0.2.1", "mx")
    return engine.process(env, [("Subject", "s")], io.BytesIO(raw), len(raw))


PLAIN = b"Subject: s\r\n\r\nhello\r\n"


def test_engine_virus_reject_and_quarantine(tmp_path):
    v = _run(_engine(tmp_path, cl.ScanResult(cl.INFECTED, "Eicar")), PLAIN)
    assert (v.action, v.code, v.text) == ("reject", "554", "Virus found: Eicar")
    e = _engine(tmp_path, cl.ScanResult(cl.INFECTED, "Eicar"), on_virus="quarantine")
    v = _run(e, PLAIN)
    assert v.action == "discard"
    item = e.quarantine.get(v.quarantine_id)
    assert (item.reason, item.detail) == ("signature", "Eicar")


def test_engine_clamd_error_policies(tmp_path):
    v = _run(_engine(tmp_path, cl.ScanResult(cl.ERROR, detail="down")), PLAIN)
    assert (v.action, v.code, v.xcode) == ("tempfail", "451", "4.7.1")
    v = _run(_engine(tmp_path, cl.ScanResult(cl.ERROR), on_error="accept"), PLAIN)
    assert v.action == "accept"
    assert v.headers == [("X-Virus-Scanned", "not scanned (clamd unavailable)")]


def test_engine_clean_header_and_oversize(tmp_path):
    v = _run(_engine(tmp_path, cl.ScanResult(cl.CLEAN)), PLAIN)
    assert v.headers == [("X-Virus-Scanned", "ClamAV on gw1")]
    e = _engine(tmp_path, cl.ScanResult(cl.CLEAN), max_size=10)
    v = _run(e, PLAIN)
    assert (v.action, v.code) == ("reject", "552")
    assert e.scanner.calls == 0


def test_engine_quarantine_write_failure_tempfails(tmp_path):
    e = _engine(tmp_path, cl.ScanResult(cl.CLEAN))
    (tmp_path / "q").write_text("not a dir")
    v = _run(e, multipart(attachment("a.exe", PE)))
    assert (v.action, v.code) == ("tempfail", "451")


def test_engine_outbreak_holds_attachments_only(tmp_path):
    e = _engine(tmp_path, cl.ScanResult(cl.CLEAN))
    e.outbreak.set(True, by="test")
    assert _run(e, PLAIN).action == "accept"
    v = _run(e, multipart(attachment("doc.pdf", b"%PDF-1.4")))
    assert v.action == "discard"
    item = e.quarantine.get(v.quarantine_id)
    assert item.reason == "outbreak" and item.signature_version == "7/d"


def test_engine_auto_outbreak_trigger(tmp_path):
    e = _engine(
        tmp_path,
        cl.ScanResult(cl.INFECTED, "W"),
        on_virus="reject",
        outbreak={"auto": True, "min_messages": 3, "threshold": 0.5},
    )
    for _ in range(3):
        _run(e, PLAIN)
    st = e.outbreak.read()
    assert st.on and st.by == "auto"
