"""passerelle.milterrun: the per-connection work the binding settles once (negotiation,
envelope decoding) gives what pymilter's own would."""

from __future__ import annotations

import Milter

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
