import socket
import threading
import time

import pytest

from passerelle.spam.spamc import (
    SpamdClient,
    SpamdError,
    SpamdProtocolError,
    build_request,
    parse_response,
)

OK = (
    b"SPAMD/1.1 0 EX_OK\r\nContent-length: 18\r\nSpam: True ; 1000.0 / 5.0\r\n\r\n"
    b"GTUBE,MISSING_DATE"
)


def test_build_request():
    assert build_request(b"hello", "pass") == (
        b"SYMBOLS SPAMC/1.5\r\nContent-length: 5\r\nUser: pass\r\n\r\nhello"
    )
    assert b"User" not in build_request(b"x")


def test_parse_symbols():
    r = parse_response(OK)
    assert (r.score, r.threshold, r.is_spam) == (1000.0, 5.0, True)
    assert r.rules == ("GTUBE", "MISSING_DATE")


def test_parse_ham_negative_no_rules():
    r = parse_response(
        b"SPAMD/1.5 0 EX_OK\r\nSpam: False ; -0.5 / 5.0\r\nContent-length: 0\r\n\r\n"
    )
    assert (r.score, r.is_spam, r.rules) == (-0.5, False, ())


def test_parse_check_without_body():
    r = parse_response(b"SPAMD/1.1 0 EX_OK\r\nSpam: False ; 1.2 / 5.0\r\n\r\n")
    assert r.score == 1.2
    assert r.rules == ()


def test_parse_content_length_cuts_body():
    r = parse_response(
        b"SPAMD/1.1 0 EX_OK\r\nContent-length: 5\r\nSpam: Yes ; 6 / 5\r\n\r\nGTUBEgarbage"
    )
    assert r.rules == ("GTUBE",)
    assert r.is_spam


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"HTTP/1.1 200 OK\r\n\r\n",
        b"SPAMD/1.1 0 EX_OK\r\nContent-length: 0\r\n\r\n",  # no Spam header
        b"SPAMD/1.1 0 EX_OK\r\nSpam: maybe ; x / y\r\n\r\n",
        b"SPAMD/1.1 0 EX_OK\r\nSpam: True ; 1.0 / 5.0\r\nContent-length: 99\r\n\r\nAB",
        b"SPAMD/1.1 0 EX_OK\r\nSpam: True ; 1.0 / 5.0\r\nContent-length: x\r\n\r\n",
        b"SPAMD/1.1 0 EX_OK\r\nSpam: True ; 1.0 / 5.0",  # never terminated
        b"SPAMD/1.1 0 EX_OK\r\nno colon here\r\n\r\n",
        b"SPAMD/1.1 0 EX_OK\r\nSpam: True ; 1.0 / 5.0\r\n\r\nRULE1,bad rule!",
    ],
)
def test_parse_malformed(data):
    with pytest.raises(SpamdProtocolError):
        parse_response(data)


def test_parse_error_code():
    with pytest.raises(SpamdError, match="76"):
        parse_response(b"SPAMD/1.0 76 Bad header line: x\r\n")


class FakeSpamd:
    """A spamd stand-in: ``behaviour`` is ok, slow, garbage, close or error."""

    def __init__(self, behaviour="ok", family=socket.AF_INET, path=None):
        self.behaviour = behaviour
        self.requests = []
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        if family == socket.AF_UNIX:
            self.sock.bind(str(path))
            self.address = f"unix:{path}"
        else:
            self.sock.bind(("127.0.0.1", 0))
            self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.sock.listen(5)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        self.sock.settimeout(0.1)
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(5)
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(4096)
                head, _, body = data.partition(b"\r\n\r\n")
                length = int(head.split(b"Content-length: ")[1].split(b"\r\n")[0])
                while len(body) < length:
                    body += conn.recv(4096)
                self.requests.append((head, body))
                if self.behaviour == "slow":
                    self.stop.wait(3)
                elif self.behaviour == "garbage":
                    conn.sendall(b"hello there\r\n\r\n")
                elif self.behaviour == "error":
                    conn.sendall(b"SPAMD/1.0 74 EX_TEMPFAIL\r\n\r\n")
                elif self.behaviour == "ok":
                    conn.sendall(OK)

    def close(self):
        self.stop.set()
        self.thread.join(5)
        self.sock.close()


@pytest.fixture
def servers():
    made = []

    def make(*a, **kw):
        s = FakeSpamd(*a, **kw)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


def dead_address():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def test_client_tcp(servers):
    srv = servers("ok")
    client = SpamdClient([srv.address], 1.0, 2.0, user="passerelle")
    result, host = client.check(b"Subject: x\r\n\r\nbody\r\n")
    assert host == srv.address
    assert result.rules == ("GTUBE", "MISSING_DATE")
    head, body = srv.requests[0]
    assert head.startswith(b"SYMBOLS SPAMC/1.5\r\n")
    assert b"User: passerelle" in head
    assert body == b"Subject: x\r\n\r\nbody\r\n"


def test_client_unix_socket(servers, tmp_path):
    srv = servers("ok", socket.AF_UNIX, tmp_path / "spamd.sock")
    result, host = SpamdClient([srv.address], 1.0, 2.0).check(b"x")
    assert host.startswith("unix:")
    assert result.is_spam


@pytest.mark.parametrize("bad", ["garbage", "error", "close"])
def test_failover_past_bad_hosts(servers, bad):
    first = servers(bad)
    good = servers("ok")
    client = SpamdClient([dead_address(), first.address, good.address], 1.0, 2.0)
    _result, host = client.check(b"x")
    assert host == good.address
    assert len(first.requests) == 1


def test_slow_host_times_out_then_failover(servers):
    slow = servers("slow")
    good = servers("ok")
    client = SpamdClient([slow.address, good.address], 1.0, 0.3)
    start = time.monotonic()
    _result, host = client.check(b"x")
    assert host == good.address
    assert time.monotonic() - start < 1.5


def test_all_hosts_down(servers):
    slow = servers("slow")
    client = SpamdClient([dead_address(), slow.address], 1.0, 0.3)
    start = time.monotonic()
    with pytest.raises(SpamdError) as exc:
        client.check(b"x")
    assert "cannot connect" in str(exc.value)
    assert "no answer within 0.3s" in str(exc.value)
    assert time.monotonic() - start < 1.5


def test_connect_timeout_is_passed():
    seen = []

    def connect(address, timeout):
        seen.append((address, timeout))
        raise TimeoutError("timed out")

    client = SpamdClient(["192.0.2.1:783"], 0.7, 5.0, connect=connect)
    with pytest.raises(SpamdError, match="cannot connect"):
        client.check(b"x")
    assert seen == [("192.0.2.1:783", 0.7)]


def test_deadline_uses_injected_clock():
    now = [0.0]

    class TrickleSock:
        def settimeout(self, t):
            assert t > 0

        def sendall(self, data):
            pass

        def shutdown(self, how):
            pass

        def recv(self, n):
            now[0] += 2.0  # each byte arrives two (fake) seconds later
            return b"S"

        def __enter__(self):
            return self

        def __exit__(self, *a):
            pass

    client = SpamdClient(
        ["h:1"], 1.0, 5.0, clock=lambda: now[0], connect=lambda a, t: TrickleSock()
    )
    with pytest.raises(SpamdError, match="no answer within 5s"):
        client.check(b"x")
    assert now[0] == 6.0
