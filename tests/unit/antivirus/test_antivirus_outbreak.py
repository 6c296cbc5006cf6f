from __future__ import annotations

import io

from passerelle.antivirus.clamd import ScanResult, SignatureVersion
from passerelle.antivirus.outbreak import AutoTrigger, OutbreakStore, release_held
from passerelle.antivirus.quarantine import Quarantine


class Clock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_trigger_needs_min_messages_and_threshold():
    clock = Clock()
    t = AutoTrigger(window=600, threshold=0.2, min_messages=10, clock=clock)
    for _ in range(3):
        assert not t.record(True)  # 100% infected but too few messages
    for _ in range(6):
        assert not t.record(False)
    assert t.record(False) is True  # 3/10 = 30% > 20%


def test_trigger_below_threshold():
    t = AutoTrigger(window=600, threshold=0.2, min_messages=10, clock=Clock())
    results = [t.record(i % 10 == 0) for i in range(100)]
    assert not any(results)


def test_trigger_window_slides():
    clock = Clock()
    t = AutoTrigger(window=600, threshold=0.5, min_messages=4, clock=clock)
    for _ in range(3):
        t.record(True)
    clock.t += 601  # the infected ones leave the window
    for _ in range(3):
        assert not t.record(False)
    assert t.share() == (0, 3)
    assert not t.record(True)  # 1/4


def test_state_store_roundtrip_and_unreadable_means_on(tmp_path):
    s = OutbreakStore(tmp_path / "ob.json", clock=Clock(5.0))
    assert s.read().on is False
    s.set(True, by="ops", reason="wave")
    st = s.read()
    assert (st.on, st.by, st.reason, st.since) == (True, "ops", "wave", 5.0)
    s.set(False, by="ops")
    assert s.read().on is False
    (tmp_path / "ob.json").write_text("{broken")
    assert OutbreakStore(tmp_path / "ob.json").read().on is True


class FakeScanner:
    def __init__(self, version: int, infected: set[bytes] | None = None) -> None:
        self.v = version
        self.infected = infected or set()
        self.scanned: list[bytes] = []

    def version(self) -> SignatureVersion:
        return SignatureVersion("ClamAV 1.0", self.v, "today")

    def scan(self, data: bytes) -> ScanResult:
        self.scanned.append(data)
        if data in self.infected:
            return ScanResult("infected", signature="New.Worm")
        return ScanResult("clean")


class Runner:
    def __init__(self) -> None:
        self.calls = []

    def __call__(self, cmd, input, **kw):
        import subprocess

        self.calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 0, b"", b"")


def _held(q, body, reason="outbreak", sigver="1/today"):
    return q.store(
        io.BytesIO(body),
        sender="a@x",
        recipients=["b@y"],
        client_ip="",
        client_host="",
        reason=reason,
        detail="held",
        direction="inbound",
        size=len(body),
        signature_version=sigver,
    )


def test_release_held_waits_for_new_signatures_while_on(tmp_path):
    q = Quarantine(tmp_path, runner=Runner())
    item = _held(q, b"clean pdf")
    out = release_held(q, FakeScanner(1), outbreak_on=True)
    assert out.kept_waiting == [item.id] and out.released == []
    assert not q.get(item.id).released


def test_release_held_after_signature_update(tmp_path):
    runner = Runner()
    q = Quarantine(tmp_path, runner=runner)
    clean = _held(q, b"clean pdf")
    bad = _held(q, b"worm")
    other = _held(q, b"exe", reason="rule")
    out = release_held(q, FakeScanner(2, infected={b"worm"}), outbreak_on=True)
    assert out.released == [clean.id]
    assert out.kept_infected == [bad.id]
    assert q.get(clean.id).released
    assert (q.get(bad.id).reason, q.get(bad.id).detail) == ("signature", "New.Worm")
    assert not q.get(other.id).released
    assert len(runner.calls) == 1
    # Running again does nothing more: released once.
    again = release_held(q, FakeScanner(3, infected={b"worm"}), outbreak_on=False)
    assert again.released == [] and len(runner.calls) == 1


def test_release_held_when_off_even_with_same_signatures(tmp_path):
    q = Quarantine(tmp_path, runner=Runner())
    item = _held(q, b"clean")
    assert release_held(q, FakeScanner(1), outbreak_on=False).released == [item.id]


def test_release_held_clamd_down_changes_nothing(tmp_path):
    class Down(FakeScanner):
        def version(self):
            raise ConnectionRefusedError("down")

    q = Quarantine(tmp_path, runner=Runner())
    item = _held(q, b"clean")
    out = release_held(q, Down(1), outbreak_on=False)
    assert out.errors and not q.get(item.id).released
