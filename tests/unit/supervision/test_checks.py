"""Nagios checks (passerelle check ...): decisions, and the I/O against real sockets/files."""

import json
import os
import socket
import struct
import threading
import time

import pytest

from passerelle.cli import main
from passerelle.supervision import checks
from passerelle.supervision.checks import CRITICAL, OK, UNKNOWN, WARNING


def test_threshold_state():
    assert checks.threshold_state(4, 5, 10) == OK
    assert checks.threshold_state(5, 5, 10) == WARNING
    assert checks.threshold_state(10, 5, 10) == CRITICAL


def test_thresholds_are_validated():
    with pytest.raises(ValueError, match="critical"):
        checks.check_thresholds(10, 5, "queue")
    with pytest.raises(ValueError, match="negative"):
        checks.check_thresholds(-1, 5, "queue")


def _serve_once(path, reply):
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(path))
    srv.listen(1)
    got = {}

    def run():
        conn, _ = srv.accept()
        with conn:
            head = conn.recv(4)
            (n,) = struct.unpack("!I", head)
            got["optneg"] = conn.recv(n)
            conn.sendall(reply)
            got["quit"] = conn.recv(16)
        srv.close()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, got


def test_milter_negotiation_ok(tmp_path):
    body = b"O" + struct.pack("!III", 6, 0x1, 0x2)
    t, got = _serve_once(tmp_path / "m.sock", struct.pack("!I", len(body)) + body)
    res = checks.check_milter(f"unix:{tmp_path / 'm.sock'}", timeout=2)
    t.join(2)
    assert res.state == OK, res
    assert "version 6" in res.text
    assert got["optneg"][:1] == b"O" and len(got["optneg"]) == 13
    assert got["quit"].endswith(b"Q")


def test_milter_wrong_reply_is_critical(tmp_path):
    t, _ = _serve_once(tmp_path / "m.sock", b"HTTP/1.0 400 Bad\r\n\r\n")
    res = checks.check_milter(f"unix:{tmp_path / 'm.sock'}", timeout=2)
    t.join(2)
    assert res.state == CRITICAL


def test_milter_socket_missing_is_critical(tmp_path):
    res = checks.check_milter(f"unix:{tmp_path / 'none.sock'}", timeout=1)
    assert res.state == CRITICAL
    assert "none.sock" in res.text


def test_milter_bad_spec_is_unknown():
    assert checks.check_milter("tcp:nowhere").state == UNKNOWN
    assert checks.socket_address("inet:8890@127.0.0.1") == (socket.AF_INET, ("127.0.0.1", 8890))


def test_queue_counts_qf_files(tmp_path):
    for i in range(7):
        (tmp_path / f"qf5ARB{i:05d}").write_text("x")
        (tmp_path / f"df5ARB{i:05d}").write_text("x")
    (tmp_path / "xfjunk").write_text("x")
    assert checks.count_queue(tmp_path) == 7
    assert checks.check_queue([str(tmp_path)], 5, 10).state == WARNING
    assert checks.check_queue([str(tmp_path)], 8, 10).state == OK
    assert checks.check_queue([str(tmp_path)], 2, 7).state == CRITICAL
    assert checks.check_queue([str(tmp_path / "missing")], 2, 7).state == UNKNOWN


def test_memory():
    info = checks.parse_meminfo("MemTotal: 1000000 kB\nMemFree: 1 kB\nMemAvailable: 50000 kB\n")
    res = checks.memory_result(info, 90, 95)
    assert res.state == CRITICAL and "95.0% used" in res.text
    assert checks.memory_result({"MemTotal": 100, "MemAvailable": 50}, 90, 95).state == OK
    assert checks.memory_result({}, 90, 95).state == UNKNOWN


def test_mysql_greeting():
    greet = b"\x0a5.5.5-10.11.6-MariaDB-0+deb12u1\x00" + b"\x00" * 20
    data = len(greet).to_bytes(3, "little") + b"\x00" + greet
    res = checks.parse_mysql_greeting(data)
    assert res.state == OK and "10.11.6-MariaDB" in res.text
    err = b"\xff\x6a\x04Host 'x' is not allowed to connect"
    res = checks.parse_mysql_greeting(len(err).to_bytes(3, "little") + b"\x00" + err)
    assert res.state == CRITICAL and "1130" in res.text
    assert checks.parse_mysql_greeting(b"").state == CRITICAL


def test_db_check_against_a_listener():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    greet = b"\x0a10.11.6-MariaDB\x00" + b"\x00" * 20

    def run():
        c, _ = srv.accept()
        c.sendall(len(greet).to_bytes(3, "little") + b"\x00" + greet)
        c.close()

    threading.Thread(target=run, daemon=True).start()
    assert checks.check_db("127.0.0.1", port, 2).state == OK
    srv.close()
    assert checks.check_db("127.0.0.1", port, 1).state == CRITICAL


NOW = 1_800_000_000.0


def test_restarts_window_and_thresholds():
    ev = [
        {"unit": "spamd.service", "time": NOW - 100, "kind": "watch-start"},
        {"unit": "spamd.service", "time": NOW - 3000, "kind": "systemd-restart"},
        {"unit": "clamav-daemon.service", "time": NOW - 4000, "kind": "systemd-restart"},
    ]
    res = checks.restarts_result(ev, NOW, 3600, 1, 3)
    assert res.state == WARNING
    assert "spamd.service x2" in res.text and "clamav" not in res.text
    assert checks.restarts_result(ev, NOW, 3600, 1, 2).state == CRITICAL
    assert checks.restarts_result(ev, NOW + 7200, 3600, 1, 2).state == OK


def test_restarts_state_file(tmp_path):
    f = tmp_path / "watch.json"
    assert checks.check_restarts(str(f), NOW, 3600, 1, 3, 600).state == UNKNOWN
    f.write_text(json.dumps({"events": [], "down": {"spamd.service": NOW - 10}}))
    now = time.time()
    res = checks.check_restarts(str(f), now, 3600, 1, 3, 600)
    assert res.state == WARNING and "down now: spamd.service" in res.text
    os.utime(f, (now - 1000, now - 1000))
    assert checks.check_restarts(str(f), now, 3600, 1, 3, 600).state == UNKNOWN


def test_status_file(tmp_path):
    f = tmp_path / "connwatch.status"
    now = time.time()
    assert checks.check_status_file(str(f), now, 600).state == UNKNOWN
    f.write_text("CRITICAL - inbound gw1: blocked 192.0.2.7 (3000/1h) | clients=3 max=3000\n")
    res = checks.check_status_file(str(f), now, 600)
    assert res.state == CRITICAL and res.text.startswith("inbound gw1") and "max=3000" in res.perf
    os.utime(f, (now - 700, now - 700))
    assert checks.check_status_file(str(f), now, 600).state == UNKNOWN


def test_cli_exit_codes(tmp_path, capsys):
    for i in range(3):
        (tmp_path / f"qf{i}").write_text("x")
    assert main(["check", "queue", "--dir", str(tmp_path), "-w", "2", "-c", "5"]) == WARNING
    assert capsys.readouterr().out.startswith("QUEUE WARNING - 3 message(s)")
    assert main(["check", "queue", "--dir", str(tmp_path), "-w", "9", "-c", "5"]) == UNKNOWN
    assert "must be >= warning" in capsys.readouterr().out
