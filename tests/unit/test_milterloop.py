"""passerelle.milterloop: the milter protocol in one thread, driven over a real unix socket.

The packets are built here by hand (``_pkt``), as sendmail writes them (mfdef.h), not with the
module's own encoder."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import Milter
import pytest

from passerelle import milterloop
from passerelle.milterloop import (
    MAX_PACKET,
    MilterLoop,
    ProtocolError,
    reply_text,
    take_packet,
)
from passerelle.milterrun import bind

V6_ACTIONS = 0x1FF
V6_PROTOCOL = 0x1FFFFF


def _pkt(cmd: bytes, data: bytes = b"") -> bytes:
    return struct.pack("!I", len(data) + 1) + cmd + data


def _recv(s: socket.socket) -> tuple[bytes, bytes]:
    head = b""
    while len(head) < 4:
        got = s.recv(4 - len(head))
        if not got:
            raise ConnectionError("closed")
        head += got
    (n,) = struct.unpack("!I", head)
    body = b""
    while len(body) < n:
        got = s.recv(n - len(body))
        if not got:
            raise ConnectionError("closed")
        body += got
    return body[:1], body[1:]


def _closed(s: socket.socket, within: float = 5.0) -> bool:
    s.settimeout(within)
    try:
        return s.recv(100) == b""
    except (ConnectionError, TimeoutError, socket.timeout):
        return False


class Probe(Milter.Base):
    ACTIONS = Milter.ADDHDRS | Milter.CHGHDRS

    def __init__(self, seen: list[Any]) -> None:
        self.seen = seen

    @Milter.noreply
    def connect(self, hostname: str, family: int, hostaddr: Any) -> int:
        self.seen.append(
            ("connect", hostname, family, hostaddr, self.getsymval("{client_resolve}"))
        )
        return Milter.CONTINUE

    @Milter.noreply
    def envfrom(self, mailfrom: str, *params: str) -> int:
        self.seen.append(("mail", mailfrom, params, self.getsymval("{auth_authen}")))
        return Milter.CONTINUE

    def envrcpt(self, to: str, *params: str) -> int:
        self.seen.append(("rcpt", to))
        if "boom" in to:
            raise RuntimeError("boom")
        if "grey" in to:
            self.setreply("451", "4.7.1", "greylisted, retry later")
            return Milter.TEMPFAIL
        return Milter.CONTINUE

    def eom(self) -> int:
        self.addheader("X-Test", "one")
        self.chgheader("X-Old", 1, "")
        return Milter.ACCEPT

    def abort(self) -> int:
        self.seen.append(("abort",))
        return Milter.CONTINUE

    def close(self) -> int:
        self.seen.append(("close",))
        return Milter.CONTINUE


class Served:
    def __init__(self, tmp: Path, timeout: float) -> None:
        self.seen: list[Any] = []
        self.path = str(tmp / "m.sock")
        self.loop = MilterLoop("t", bind(Probe, self.seen, "t"), f"unix:{self.path}", timeout)
        self.loop.listen()
        self.thread = threading.Thread(target=self.loop.serve, kwargs={"install_signals": False})
        self.thread.start()

    def connect(self) -> socket.socket:
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(10)
        s.connect(self.path)
        return s

    def negotiated(self) -> tuple[socket.socket, int]:
        s = self.connect()
        s.sendall(_pkt(b"O", struct.pack("!III", 6, V6_ACTIONS, V6_PROTOCOL)))
        cmd, data = _recv(s)
        assert cmd == b"O"
        return s, struct.unpack("!III", data[:12])[2]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    srv = Served(tmp_path, 30)
    yield srv
    srv.loop.stop()
    srv.thread.join(10)
    assert not srv.thread.is_alive()


CONNECT = _pkt(b"D", b"C{client_resolve}\0FAIL\0") + _pkt(
    b"C", b"[192.0.2.7]\x004\x00\x19192.0.2.7\0"
)
MAIL = _pkt(b"D", b"M{auth_authen}\0alice\0") + _pkt(b"M", b"<a@example.org>\0SIZE=10\0")


def test_reply_text_is_what_sendmail_reads() -> None:
    assert reply_text("451", "4.7.1", "greylisted") == b"451 4.7.1 greylisted"
    assert reply_text("550", None, "no") == b"550 no"
    assert reply_text("451", "4.3.0", "a", "b") == b"451-4.3.0 a\r\n451 4.3.0 b"
    for bad in (
        ("250", None, "x"),
        ("45", None, "x"),
        ("451", "5.7.1", "x"),
        ("451", None, "a\r\nb"),
    ):
        with pytest.raises(ValueError):
            reply_text(*bad)


def test_packets_are_taken_whole_and_bad_lengths_refused() -> None:
    buf = bytearray(_pkt(b"R", b"<x>\0")[:5])
    assert take_packet(buf) is None  # not all there yet
    buf += _pkt(b"R", b"<x>\0")[5:] + _pkt(b"A")
    assert take_packet(buf) == (b"R", b"<x>\0")
    assert take_packet(buf) == (b"A", b"")
    assert buf == bytearray()
    for n in (0, MAX_PACKET + 1):
        with pytest.raises(ProtocolError):
            take_packet(bytearray(struct.pack("!I", n) + b"Q"))


def test_negotiation_offers_the_classs_steps_and_a_session_is_answered(served: Served) -> None:
    s, protocol = served.negotiated()
    assert protocol & Milter.P_NR_CONN and protocol & Milter.P_NR_MAIL
    assert not protocol & Milter.P_NR_RCPT
    assert protocol & Milter.P_NOHDRS and protocol & Milter.P_NOBODY
    s.sendall(CONNECT + MAIL + _pkt(b"R", b"<grey@example.org>\0"))
    assert _recv(s) == (b"y", b"451 4.7.1 greylisted, retry later\0")
    s.sendall(_pkt(b"R", b"<ok@example.org>\0") + _pkt(b"E"))
    assert _recv(s) == (b"c", b"")
    assert _recv(s) == (b"h", b"X-Test\0one\0")  # the edits come before the final answer
    assert _recv(s) == (b"m", struct.pack("!I", 1) + b"X-Old\0\0")
    assert _recv(s) == (b"a", b"")
    s.sendall(_pkt(b"Q"))
    assert _closed(s)
    time.sleep(0.2)
    assert served.seen[0] == ("connect", "[192.0.2.7]", socket.AF_INET, ("192.0.2.7", 25), "FAIL")
    assert served.seen[1] == ("mail", "<a@example.org>", ("SIZE=10",), "alice")
    assert served.seen[-1] == ("close",)


def test_a_message_macro_is_forgotten_after_abort(served: Served) -> None:
    s, _ = served.negotiated()
    s.sendall(
        CONNECT + MAIL + _pkt(b"A") + _pkt(b"M", b"<b@example.org>\0") + _pkt(b"R", b"<ok@x>\0")
    )
    assert _recv(s) == (b"c", b"")
    mails = [e for e in served.seen if e[0] == "mail"]
    assert mails == [
        ("mail", "<a@example.org>", ("SIZE=10",), "alice"),
        ("mail", "<b@example.org>", (), None),
    ]


def test_packets_split_into_single_bytes_are_answered(served: Served) -> None:
    s, _ = served.negotiated()
    for b in CONNECT + MAIL + _pkt(b"R", b"<grey@example.org>\0"):
        s.send(bytes([b]))
    assert _recv(s)[0] == b"y"


def test_an_exception_in_an_answered_step_tempfails(served: Served) -> None:
    s, _ = served.negotiated()
    s.sendall(CONNECT + MAIL + _pkt(b"R", b"<boom@example.org>\0"))
    assert _recv(s) == (b"t", b"")
    s.sendall(_pkt(b"R", b"<ok@example.org>\0"))
    assert _recv(s) == (b"c", b"")


@pytest.mark.parametrize(
    "bad",
    [
        struct.pack("!I", MAX_PACKET + 1) + b"L",
        struct.pack("!I", 0),
        _pkt(b"Z", b"what"),
        _pkt(b"C", b"no-nul-in-this-connect"),
        _pkt(b"O", b"\0\0\0\x06"),
        _pkt(b"D", b"C{client_resolve}\0FAIL\0") + _pkt(b"C", b"[x]\x004\x00"),
        _pkt(b"L", b"Subject"),
    ],
    ids=[
        "too-long",
        "zero-length",
        "unknown-command",
        "bad-connect",
        "short-optneg",
        "connect-without-address",
        "header-without-value",
    ],
)
def test_broken_input_closes_that_connection_only(served: Served, bad: bytes) -> None:
    other, _ = served.negotiated()
    s = served.connect()
    if bad[4:5] != b"O":  # every case but the short negotiation
        s.sendall(_pkt(b"O", struct.pack("!III", 6, V6_ACTIONS, V6_PROTOCOL)))
        _recv(s)
    s.sendall(bad)
    assert _closed(s)
    other.sendall(CONNECT + MAIL + _pkt(b"R", b"<ok@example.org>\0"))
    assert _recv(other) == (b"c", b"")


def test_an_empty_helo_is_answered(served: Served) -> None:
    s, _ = served.negotiated()
    s.sendall(CONNECT + _pkt(b"H", b"\0"))
    assert _recv(s) == (b"c", b"")


def test_an_unexpected_error_closes_that_connection_only(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(fam: bytes, rest: bytes) -> None:
        raise KeyError(fam)

    other, _ = served.negotiated()
    s, _ = served.negotiated()
    monkeypatch.setattr(milterloop, "_family", broken)
    s.sendall(CONNECT)
    assert _closed(s)
    monkeypatch.undo()
    other.sendall(CONNECT + MAIL + _pkt(b"R", b"<grey@example.org>\0"))
    assert _recv(other)[0] == b"y"


def test_a_connection_that_never_reads_its_answers_is_closed(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(milterloop, "MAX_BUFFERED", 10_000)
    s, _ = served.negotiated()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    with contextlib.suppress(OSError):  # closed under our feet
        s.sendall(CONNECT + MAIL + _pkt(b"R", b"<grey@example.org>\0") * 20_000)
    s.settimeout(10)
    received = 0
    with contextlib.suppress(ConnectionError):
        while chunk := s.recv(65536):
            received += len(chunk)
    assert received < 20_000 * 38  # closed before every answer was written
    other, _ = served.negotiated()
    other.sendall(CONNECT + MAIL + _pkt(b"R", b"<ok@x>\0"))
    assert _recv(other) == (b"c", b"")


def test_a_step_before_negotiation_closes_the_connection(served: Served) -> None:
    s = served.connect()
    s.sendall(_pkt(b"R", b"<ok@example.org>\0"))
    assert _closed(s)


def test_quit_nc_ends_one_smtp_connection_and_the_next_gets_a_new_object(served: Served) -> None:
    s, _ = served.negotiated()
    s.sendall(CONNECT + _pkt(b"K") + CONNECT + MAIL + _pkt(b"R", b"<ok@x>\0"))
    assert _recv(s) == (b"c", b"")
    kinds = [e[0] for e in served.seen]
    assert kinds == ["connect", "close", "connect", "mail", "rcpt"]


def test_an_idle_connection_is_closed_after_the_timeout(tmp_path: Path) -> None:
    srv = Served(tmp_path, 0.5)
    try:
        s, _ = srv.negotiated()
        t = time.monotonic()
        assert _closed(s, within=5)
        assert 0.4 < time.monotonic() - t < 3
    finally:
        srv.loop.stop()
        srv.thread.join(10)


def test_stop_ends_the_loop_and_removes_the_socket(tmp_path: Path) -> None:
    srv = Served(tmp_path, 30)
    s, _ = srv.negotiated()
    srv.loop.stop()
    srv.thread.join(10)
    assert not srv.thread.is_alive()
    assert not Path(srv.path).exists()
    assert _closed(s)
    assert ("close",) in srv.seen
