"""The RCPT-time socket map: netstrings, the TTL cache, the answers, the server on loopback."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest

from passerelle.config import ConfigError
from passerelle.routing.cache import CachedLookup
from passerelle.routing.config import SocketmapSettings, parse_config
from passerelle.routing.netstring import NetstringError, NetstringReader, decode, encode
from passerelle.routing.route import DirectoryUnavailable, Entry
from passerelle.routing.socketmap import Answerer, SocketmapServer

ANA = Entry("uid=ana,ou=people,dc=lab", mail_host="[mailstore1]")
BEN = Entry("uid=ben,ou=people,dc=lab", "[mailstore2]", routing_address="benm@ldap-a.test")
EMPTY = Entry("uid=empty,ou=people,dc=lab")
MOVED = Entry("uid=moved,ou=people,dc=lab", None, "moved@static-b.test")


class FakeDirectory:
    """Counts searches; ``down`` makes every search fail like an unreachable server."""

    def __init__(self) -> None:
        self.entries = {
            "ana@ldap-a.test": [ANA],
            "ben@ldap-a.test": [BEN],
            "empty@ldap-a.test": [EMPTY],
            "moved@ldap-a.test": [MOVED],
            "twice@ldap-a.test": [ANA, BEN],
        }
        self.searches: list[str] = []
        self.down = False
        self.broken = False

    def __call__(self, address: str) -> list[Entry]:
        self.searches.append(address)
        if self.down:
            raise DirectoryUnavailable("ldap://ldap1: Can't contact LDAP server")
        if self.broken:
            raise RuntimeError("boom")
        return list(self.entries.get(address, []))


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- netstrings ---------------------------------------------------------------------------


def test_netstring_encode_and_decode():
    assert encode("ldapmh ana@ldap-a.test") == b"22:ldapmh ana@ldap-a.test,"
    assert encode(b"") == b"0:,"
    assert encode("NOTFOUND ") == b"9:NOTFOUND ,"
    assert decode(b"22:ldapmh ana@ldap-a.test,") == b"ldapmh ana@ldap-a.test"
    assert encode("é") == b"2:\xc3\xa9,"


def test_netstring_reader_takes_bytes_as_they_come():
    reader = NetstringReader()
    stream = encode("ldapmh a@b.test") + encode("ldapmra a@b.test") + encode("x")
    got: list[bytes] = []
    for i in range(len(stream)):
        got += reader.feed(stream[i : i + 1])
    assert got == [b"ldapmh a@b.test", b"ldapmra a@b.test", b"x"]
    assert not reader.pending
    assert reader.feed(b"5:ab") == [] and reader.pending
    assert reader.feed(b"cde,") == [b"abcde"]


@pytest.mark.parametrize(
    "data",
    [
        b"abc",  # no length
        b"x:abc,",  # length not a number
        b"-3:abc,",
        b"3:abc;",  # wrong terminator
        b"03:abc,",  # leading zero
        b"99999999999:",  # absurd length
        b"20000:",  # over the limit
        b"3:abcd,",
        b" 3:abc,",
    ],
)
def test_netstring_bad_input_is_a_clear_error(data):
    with pytest.raises(NetstringError):
        NetstringReader().feed(data)


def test_netstring_decode_wants_exactly_one():
    with pytest.raises(NetstringError):
        decode(b"1:a,1:b,")
    with pytest.raises(NetstringError):
        decode(b"3:ab")


# --- the cache ----------------------------------------------------------------------------


def test_cache_keeps_an_entry_for_the_positive_ttl():
    directory, clock = FakeDirectory(), FakeClock()
    cache = CachedLookup(directory, positive_ttl=300, negative_ttl=60, clock=clock)
    assert cache("ana@ldap-a.test") == [ANA]
    assert cache("ANA@ldap-a.test") == [ANA]  # same address, any case
    clock.now += 299
    assert cache("ana@ldap-a.test") == [ANA]
    assert directory.searches == ["ana@ldap-a.test"]
    clock.now += 1
    assert cache("ana@ldap-a.test") == [ANA]
    assert directory.searches == ["ana@ldap-a.test"] * 2
    assert (cache.stats.hits, cache.stats.misses) == (2, 2)


def test_cache_keeps_no_entry_for_the_negative_ttl():
    directory, clock = FakeDirectory(), FakeClock()
    cache = CachedLookup(directory, positive_ttl=300, negative_ttl=60, clock=clock)
    assert cache("nobody@ldap-a.test") == []
    clock.now += 59
    assert cache("nobody@ldap-a.test") == []
    assert len(directory.searches) == 1
    # The user is created: seen once the negative answer expires (60 s, not 300 s).
    directory.entries["nobody@ldap-a.test"] = [ANA]
    clock.now += 1
    assert cache("nobody@ldap-a.test") == [ANA]
    assert len(directory.searches) == 2
    # Several entries count as "not one": the negative TTL too.
    cache("twice@ldap-a.test")
    clock.now += 60
    cache("twice@ldap-a.test")
    assert directory.searches.count("twice@ldap-a.test") == 2


def test_cache_never_keeps_an_error():
    directory, clock = FakeDirectory(), FakeClock()
    cache = CachedLookup(directory, clock=clock)
    directory.down = True
    for _ in range(3):
        with pytest.raises(DirectoryUnavailable):
            cache("ana@ldap-a.test")
    assert len(directory.searches) == 3 and len(cache) == 0
    assert cache.stats.errors == 3
    directory.down = False
    assert cache("ana@ldap-a.test") == [ANA]
    assert len(directory.searches) == 4


def test_cache_answer_kept_while_the_directory_is_down():
    directory, clock = FakeDirectory(), FakeClock()
    cache = CachedLookup(directory, clock=clock)
    cache("ana@ldap-a.test")
    directory.down = True
    assert cache("ana@ldap-a.test") == [ANA]  # within the TTL: no search at all
    clock.now += 300
    with pytest.raises(DirectoryUnavailable):
        cache("ana@ldap-a.test")


def test_cache_size_is_bounded_least_recently_used_first():
    directory, clock = FakeDirectory(), FakeClock()
    cache = CachedLookup(directory, max_entries=2, clock=clock)
    cache("ana@ldap-a.test")
    cache("ben@ldap-a.test")
    cache("ana@ldap-a.test")  # ana used again: ben is now the oldest
    cache("nobody@ldap-a.test")
    assert len(cache) == 2 and cache.stats.evictions == 1
    cache("ana@ldap-a.test")
    assert directory.searches.count("ana@ldap-a.test") == 1
    cache("ben@ldap-a.test")
    assert directory.searches.count("ben@ldap-a.test") == 2


def test_cache_ttl_zero_keeps_nothing():
    directory = FakeDirectory()
    cache = CachedLookup(directory, positive_ttl=0, negative_ttl=0)
    cache("ana@ldap-a.test")
    cache("ana@ldap-a.test")
    cache("nobody@ldap-a.test")
    cache("nobody@ldap-a.test")
    assert len(directory.searches) == 4 and len(cache) == 0
    with pytest.raises(ValueError):
        CachedLookup(directory, max_entries=0)


# --- the answers --------------------------------------------------------------------------


def test_answers_for_both_maps_from_one_search():
    directory = FakeDirectory()
    ans = Answerer(CachedLookup(directory))
    assert ans.answer(b"ldapmh ana@ldap-a.test") == "OK [mailstore1]"
    assert ans.answer(b"ldapmra ana@ldap-a.test") == "NOTFOUND "
    assert ans.answer(b"ldapmh ben@ldap-a.test") == "OK [mailstore2]"
    assert ans.answer(b"ldapmra ben@ldap-a.test") == "OK benm@ldap-a.test"
    assert ans.answer(b"ldapmh moved@ldap-a.test") == "NOTFOUND "
    assert ans.answer(b"ldapmra moved@ldap-a.test") == "OK moved@static-b.test"
    assert directory.searches == ["ana@ldap-a.test", "ben@ldap-a.test", "moved@ldap-a.test"]


def test_answers_not_found():
    ans = Answerer(FakeDirectory())
    for key in ("nobody@ldap-a.test", "empty@ldap-a.test", "twice@ldap-a.test", "@ldap-a.test"):
        assert ans.answer(f"ldapmh {key}".encode()) == "NOTFOUND "
        assert ans.answer(f"ldapmra {key}".encode()) == "NOTFOUND "


def test_answers_key_is_searched_lowercased():
    directory = FakeDirectory()
    assert Answerer(directory).answer(b"ldapmh Ana@LDAP-A.test") == "OK [mailstore1]"
    assert directory.searches == ["ana@ldap-a.test"]


def test_answers_temp_on_any_failure_never_perm():
    directory = FakeDirectory()
    ans = Answerer(CachedLookup(directory))
    directory.down = True
    reply = ans.answer(b"ldapmh ana@ldap-a.test")
    assert reply.startswith("TEMP directory unavailable: ldap://ldap1")
    directory.down, directory.broken = False, True
    assert ans.answer(b"ldapmh ana@ldap-a.test") == "TEMP lookup failed: RuntimeError"
    directory.broken = False
    assert ans.answer(b"ldapmh ana@ldap-a.test") == "OK [mailstore1]"
    for bad in (b"virtuser ana@ldap-a.test", b"ldapmh", b"ldapmh ", b"", b"ldapmh \xff\xfe"):
        assert ans.answer(bad).startswith("TEMP "), bad


# --- the server, spoken to as sendmail does -----------------------------------------------


@pytest.fixture
def served(tmp_path: Path):
    directory = FakeDirectory()
    path = str(tmp_path / "run" / "route.sock")
    server = SocketmapServer(path, Answerer(CachedLookup(directory)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield path, directory
    server.shutdown()
    server.server_close()
    thread.join(5)


def _connect(path: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect(path)
    return s


def _read_answer(s: socket.socket) -> str:
    reader = NetstringReader()
    while True:
        data = s.recv(4096)
        assert data, "connection closed"
        got = reader.feed(data)
        if got:
            assert len(got) == 1 and not reader.pending
            return got[0].decode()


def test_server_answers_lookups_on_a_kept_connection(served):
    path, directory = served
    assert Path(path).is_socket()
    assert oct(Path(path).stat().st_mode & 0o777) == "0o660"
    with _connect(path) as s:
        # sendmail: the two ldap_routing lookups of a recipient, then the next recipient.
        for req, want in [
            ("ldapmra ben@ldap-a.test", "OK benm@ldap-a.test"),
            ("ldapmh ben@ldap-a.test", "OK [mailstore2]"),
            ("ldapmra nobody@ldap-a.test", "NOTFOUND "),
            ("ldapmh nobody@ldap-a.test", "NOTFOUND "),
            ("ldapmra ben@ldap-a.test", "OK benm@ldap-a.test"),
        ]:
            s.sendall(encode(req))
            assert _read_answer(s) == want
    assert directory.searches == ["ben@ldap-a.test", "nobody@ldap-a.test"]


def test_server_connections_are_served_side_by_side(served):
    path, _ = served
    first, second = _connect(path), _connect(path)
    with first, second:
        # first stays open and idle while second is answered (one thread per connection)
        first.sendall(b"22:ldapmh ")
        second.sendall(encode("ldapmh ana@ldap-a.test"))
        assert _read_answer(second) == "OK [mailstore1]"
        first.sendall(b"ana@ldap-a.test,")
        assert _read_answer(first) == "OK [mailstore1]"


def test_server_pipelined_requests_in_one_write(served):
    path, _ = served
    with _connect(path) as s:
        s.sendall(encode("ldapmh ana@ldap-a.test") + encode("ldapmra ana@ldap-a.test"))
        reader, got = NetstringReader(), []
        while len(got) < 2:
            got += reader.feed(s.recv(4096))
        assert got == [b"OK [mailstore1]", b"NOTFOUND "]


def test_server_survives_garbage(served):
    path, directory = served
    with _connect(path) as s:
        s.sendall(b"hello sendmail\r\n")
        assert _read_answer(s).startswith("TEMP bad request")
        assert s.recv(100) == b""  # that connection is closed...
    with _connect(path) as s:
        s.sendall(b"99999:")
        assert _read_answer(s).startswith("TEMP bad request")
    directory.down = True
    with _connect(path) as s:  # ...the daemon goes on
        s.sendall(encode("ldapmh ana@ldap-a.test"))
        assert _read_answer(s).startswith("TEMP directory unavailable")
        s.sendall(encode("ldapmh ana@ldap-a.test"))
        assert _read_answer(s).startswith("TEMP ")
    directory.down = False
    with _connect(path) as s:
        s.sendall(encode("ldapmh ana@ldap-a.test"))
        assert _read_answer(s) == "OK [mailstore1]"


def test_server_replaces_a_stale_socket_but_not_a_file(tmp_path: Path):
    path = tmp_path / "route.sock"
    path.write_text("not a socket")
    with pytest.raises(OSError, match="not a socket"):
        SocketmapServer(str(path), Answerer(FakeDirectory()))
    path.unlink()
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()
    server = SocketmapServer(str(path), Answerer(FakeDirectory()))
    server.server_close()
    assert not path.exists()


# --- its settings in routing.toml ---------------------------------------------------------

BASE = {
    "routing": {
        "local_names": ["gw1.lab.test"],
        "mailertable": {},
        "ldap": {"domains": ["ldap-a.test"], "uri": "ldap://ldap1", "base": "dc=lab"},
    }
}


def _with_socketmap(table: dict) -> dict:
    data = {"routing": dict(BASE["routing"])}
    data["routing"]["socketmap"] = table
    return data


def test_socketmap_settings_defaults_and_values():
    assert parse_config(BASE).socketmap == SocketmapSettings(
        "/run/passerelle/route.sock", 300, 60, 10000
    )
    sm = parse_config(
        _with_socketmap(
            {"socket": "/run/x.sock", "positive_ttl": "10m", "negative_ttl": 0, "max_entries": 5}
        )
    ).socketmap
    assert sm == SocketmapSettings("/run/x.sock", 600, 0, 5)


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ({"socket": "run/x.sock"}, "routing.socketmap.socket"),
        ({"positive_ttl": "2d"}, "routing.socketmap.positive_ttl"),
        ({"negative_ttl": "soon"}, "routing.socketmap.negative_ttl"),
        ({"max_entries": 0}, "routing.socketmap.max_entries"),
        ({"ttl": "5m"}, "routing.socketmap.ttl"),
    ],
)
def test_socketmap_settings_errors_name_the_key(table, key):
    with pytest.raises(ConfigError) as err:
        parse_config(_with_socketmap(table))
    assert err.value.key == key


# --- the command --------------------------------------------------------------------------


def test_command_serves_and_answers_temp_when_the_directory_is_unreachable(tmp_path: Path):
    import os
    import signal
    import subprocess
    import sys

    pytest.importorskip("ldap")
    config = tmp_path / "routing.toml"
    config.write_text(
        "[routing]\nlocal_names = []\n[routing.mailertable]\n"
        '[routing.ldap]\ndomains = ["ldap-a.test"]\nuri = "ldap://127.0.0.1:9"\n'
        'base = "dc=lab"\ntimeout = "1s"\n'
    )
    sock = tmp_path / "run" / "route.sock"
    command = ["route", "socketmap", "--config", str(config), "--socket", str(sock)]
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)  # systemd's side (Type=notify)
    notify.bind(str(tmp_path / "notify"))
    notify.settimeout(30)
    proc = subprocess.Popen(
        [sys.executable, "-m", "passerelle.cli", *command],
        stderr=subprocess.PIPE,
        text=True,
        env={
            **os.environ,
            "PYTHONPATH": str(Path(__file__).parents[3] / "src"),
            "NOTIFY_SOCKET": str(tmp_path / "notify"),
        },
    )
    try:
        assert notify.recv(100) == b"READY=1"
        with _connect(str(sock)) as s:  # ready means answering: no wait for the socket
            s.sendall(encode("ldapmh ana@ldap-a.test"))
            assert _read_answer(s).startswith("TEMP directory unavailable: ldap://127.0.0.1:9")
    finally:
        notify.close()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert "serving ldapmh/ldapmra on" in err and "stopping" in err
    assert not sock.exists()


def test_command_without_ldap_domains_refuses_to_start(tmp_path: Path, capsys):
    from passerelle.cli import main

    config = tmp_path / "routing.toml"
    config.write_text("[routing]\nlocal_names = []\n[routing.mailertable]\n")
    assert main(["route", "socketmap", "--config", str(config)]) == 1
    assert "routing.ldap" in capsys.readouterr().err
