"""passerelle.milterrun: the per-connection work the binding settles once (negotiation,
envelope decoding) gives what pymilter's own would."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import Milter

import passerelle
from passerelle.greylist.daemon import GreylistMilter
from passerelle.milterrun import bind
from passerelle.spam.milter import SpamMilter


class _Ctx:
    def __init__(self) -> None:
        self.priv = None

    def setpriv(self, p: object) -> None:
        self.priv = p


OFFERS = [
    [Milter.CURR_ACTS, 0x1FFFFF, 0, 0],
    [Milter.ADDHDRS, Milter.P_NR_RCPT | Milter.P_NOHELO | Milter.P_NOBODY, 5, 6],
    [0, 0, 0, 0],
]


def _negotiate(m: Milter.Base, offered: list[int], how: object) -> tuple[object, ...]:
    m._setctx(_Ctx())
    opts = list(offered)
    rc = how(m, opts)  # type: ignore[operator]
    return rc, opts, m._protocol, m._actions


def test_negotiation_is_pymilters():
    for cls in (GreylistMilter, SpamMilter):
        bound = bind(cls, None, "t").milter_class
        assert bound.negotiate is not Milter.Base.negotiate  # worked out once per class
        for offered in OFFERS:
            fast = _negotiate(bound.__new__(bound), offered, bound.negotiate)
            slow = _negotiate(bound.__new__(bound), offered, Milter.Base.negotiate)
            assert fast == slow


def test_bad_options_change_nothing():
    bound = bind(GreylistMilter, None, "t").milter_class
    m = bound.__new__(bound)
    m._setctx(_Ctx())
    assert m.negotiate([1, 2]) == Milter.ALL_OPTS


def test_a_class_with_symlist_keeps_pymilters_negotiation():
    class WithMacros(Milter.Base):
        ACTIONS = 0

        def __init__(self, ctx: object) -> None:
            pass

        @Milter.symlist("{auth_authen}")
        def envfrom(self, f: str, *s: str) -> int:
            return Milter.CONTINUE

    assert bind(WithMacros, None, "t").milter_class.negotiate is Milter.Base.negotiate


class _Recorder(Milter.Base):
    ACTIONS = 0

    def __init__(self, ctx: object) -> None:
        self.seen: list[tuple[str, tuple[object, ...]]] = []

    @Milter.noreply
    def envfrom(self, f: str, *params: str) -> int:
        self.seen.append(("envfrom", (f, *params)))
        return Milter.CONTINUE

    def envrcpt(self, to: str, *params: str) -> int:
        self.seen.append(("envrcpt", (to, *params)))
        return Milter.CONTINUE


def test_envelope_decoding_is_pymilters():
    raw = [b"<a\xff@b.example>", b"SIZE=10", b"BODY=8BITMIME\xe9"]
    bound = bind(_Recorder, None, "t").milter_class
    assert bound.envrcpt_bytes is not Milter.Base.envrcpt_bytes
    fast, slow = bound(None), bound(None)
    fast._protocol = slow._protocol = 0
    for args in (raw[:1], raw):
        fast.envfrom_bytes(*args)
        Milter.Base.envfrom_bytes(slow, *args)
        fast.envrcpt_bytes(*args)
        Milter.Base.envrcpt_bytes(slow, *args)
    assert fast.seen == slow.seen
    assert fast.seen[0] == ("envfrom", ("<a\udcff@b.example>",))


def test_a_bytes_strategy_keeps_pymilters_decoding():
    class Raw(_Recorder):
        @Milter.decode("bytes")
        def envrcpt(self, to: bytes, *params: bytes) -> int:  # type: ignore[override]
            self.seen.append(("envrcpt", (to, *params)))
            return Milter.CONTINUE

    bound = bind(Raw, None, "t").milter_class
    assert bound.envrcpt_bytes is Milter.Base.envrcpt_bytes
    m = bound(None)
    m.envrcpt_bytes(b"<x\xff@y>")
    assert m.seen == [("envrcpt", (b"<x\xff@y>",))]


# run_milter in a process of its own (libmilter opens its socket once per process): main, where
# libmilter would serve, is replaced by a probe of the socket and of the notification state.
_RUN = r"""
import os, socket, sys
import milter
from passerelle.greylist.daemon import GreylistMilter
from passerelle.milterrun import bind, run_milter

spec = sys.argv[1]

def main():
    probe = socket.socket(socket.AF_UNIX)
    probe.connect(spec.split(":", 1)[1])
    probe.close()
    print("listening", "notified" if "NOTIFY_SOCKET" not in os.environ else "not notified")

milter.main = main
run_milter("t", bind(GreylistMilter, None, "t"), spec, 5)
"""


def _run_milter_process(spec: str, notify: str) -> tuple[subprocess.CompletedProcess[str], bytes]:
    env = dict(
        os.environ, NOTIFY_SOCKET=notify, PYTHONPATH=str(Path(passerelle.__file__).parents[1])
    )
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(notify)
        done = subprocess.run(
            [sys.executable, "-c", _RUN, spec], env=env, capture_output=True, text=True, timeout=60
        )
        listener.setblocking(False)
        try:
            received = listener.recv(100)
        except BlockingIOError:
            received = b""
    return done, received


def test_systemd_is_told_ready_once_the_socket_listens(tmp_path: Path) -> None:
    done, received = _run_milter_process(f"unix:{tmp_path}/m.sock", str(tmp_path / "notify"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["listening", "notified"]  # before libmilter serves
    assert received == b"READY=1"


def test_no_ready_when_the_socket_cannot_be_opened(tmp_path: Path) -> None:
    too_long = tmp_path / ("x" * 120) / "m.sock"  # past a unix socket address's 108 bytes
    done, received = _run_milter_process(f"unix:{too_long}", str(tmp_path / "notify"))
    assert done.returncode != 0
    assert "listening" not in done.stdout
    assert received == b""
