from __future__ import annotations

import io
import json
import os
import stat
import subprocess

import pytest

from passerelle.antivirus.quarantine import Quarantine, QuarantineError


class Clock:
    def __init__(self, t: float = 1_700_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class Runner:
    def __init__(self, rc: int = 0) -> None:
        self.calls: list[tuple[list[str], bytes]] = []
        self.rc = rc

    def __call__(self, cmd, input, **kw):
        self.calls.append((cmd, input))
        return subprocess.CompletedProcess(cmd, self.rc, b"", b"boom" if self.rc else b"")


META = dict(
    sender="alice@example.org",
    recipients=["bob@example.com", "carol@example.com"],
    client_ip="192.0.2.1",
    client_host="mx.example.net",
    reason="signature",
    detail="Eicar-Test-Signature",
    direction="inbound",
    size=42,
)
MSG = b"From: alice@example.org\r\nSubject: hi\r\n\r\nbody\r\n"


@pytest.fixture
def q(tmp_path):
    return Quarantine(
        tmp_path / "q", clock=Clock(), release_command=["/x/sendmail", "-oi"], runner=Runner()
    )


def test_store_writes_message_and_metadata(q):
    item = q.store(io.BytesIO(MSG), **META)
    assert q.message_path(item.id).read_bytes() == MSG
    data = json.loads((q.dir / f"{item.id}.json").read_text())
    for k, v in META.items():
        assert data[k] == v
    assert data["released"] is False
    assert data["time"] == 1_700_000_000.0
    assert data["history"][0]["action"] == "quarantined"
    assert [p for p in os.listdir(q.dir) if p.startswith(".")] == []  # no temporary file left
    assert [i.id for i in q.items()] == [item.id]


def test_store_syncs_files_and_folder_and_sets_the_mode_whatever_the_umask(q, monkeypatch):
    """Both files reach the disk with the folder's entries (an item reported held survives a
    crash), and are 0640 even under a stricter umask (the mode is set on the descriptor)."""
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append("dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    old = os.umask(0o077)
    try:
        item = q.store(io.BytesIO(MSG), **META)
    finally:
        os.umask(old)
    assert synced == ["file", "dir", "file", "dir"]
    for name in (f"{item.id}.eml", f"{item.id}.json"):
        assert stat.S_IMODE((q.dir / name).stat().st_mode) == 0o640


def test_release_only_to_original_recipients_once(q):
    item = q.store(io.BytesIO(MSG), **META)
    q.release(item.id, by="ops")
    [(cmd, data)] = q.runner.calls
    assert cmd == [
        "/x/sendmail",
        "-oi",
        "-f",
        "alice@example.org",
        "--",
        "bob@example.com",
        "carol@example.com",
    ]
    assert data == MSG.replace(b"\r\n", b"\n")
    with pytest.raises(QuarantineError, match="already released"):
        q.release(item.id, by="ops")
    assert len(q.runner.calls) == 1
    got = q.get(item.id)
    assert got.released
    assert got.recipients == META["recipients"]
    assert [h["action"] for h in got.history] == ["quarantined", "released"]
    assert got.history[1]["by"] == "ops"


def test_release_null_sender(q):
    item = q.store(io.BytesIO(MSG), **{**META, "sender": ""})
    q.release(item.id)
    assert q.runner.calls[0][0][2:4] == ["-f", "<>"]


def test_failed_release_can_be_retried_and_is_recorded(tmp_path):
    runner = Runner(rc=75)
    q = Quarantine(tmp_path, clock=Clock(), runner=runner)
    item = q.store(io.BytesIO(MSG), **META)
    with pytest.raises(QuarantineError, match="exited 75"):
        q.release(item.id)
    assert not q.get(item.id).released
    assert q.get(item.id).history[-1]["action"] == "release-failed"
    runner.rc = 0
    q.release(item.id)
    assert q.get(item.id).released


def test_delete_and_unknown_ids(q):
    item = q.store(io.BytesIO(MSG), **META)
    q.delete(item.id)
    assert list(q.items()) == []
    with pytest.raises(QuarantineError):
        q.get(item.id)
    with pytest.raises(QuarantineError, match="not a quarantine id"):
        q.get("../../etc/passwd")


def test_purge_older_than(tmp_path):
    clock = Clock()
    q = Quarantine(tmp_path, clock=clock, runner=Runner())
    old = q.store(io.BytesIO(MSG), **META)
    clock.t += 40 * 86400
    new = q.store(io.BytesIO(MSG), **META)
    gone = q.purge(30 * 86400)
    assert gone == [old.id]
    assert [i.id for i in q.items()] == [new.id]


def test_store_failure_leaves_nothing(tmp_path):
    q = Quarantine(tmp_path / "q", clock=Clock())
    (tmp_path / "q").mkdir()
    os.chmod(tmp_path / "q", 0o500)
    try:
        if os.access(tmp_path / "q", os.W_OK):  # running as root: make the write fail differently
            os.chmod(tmp_path / "q", 0o700)
            (tmp_path / "q").rmdir()
            (tmp_path / "q").write_text("not a directory")
        with pytest.raises(OSError):
            q.store(io.BytesIO(MSG), **META)
    finally:
        if (tmp_path / "q").is_dir():
            os.chmod(tmp_path / "q", 0o700)


def test_the_default_release_delivers_before_the_command_returns():
    """A release runs inside oneshot units (the outbreak release timer, the console's
    gateway-sync): sendmail's default background delivery leaves a child that systemd kills
    when the unit's main process ends (the message then waits for the next queue run). The
    default re-injection delivers interactively (-odi): nothing outlives the command."""
    from passerelle.antivirus.config import AntivirusConfig

    for command in (AntivirusConfig().release_command, Quarantine("/nonexistent").release_command):
        assert "-odi" in command, command
        assert "-Am" in command and "-oi" in command, command
