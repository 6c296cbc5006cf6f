"""Issue 14, item 9: root (the release timer, an operator) never follows what the milter's
user planted in the quarantine: symlinks, hard links and other users' files are refused and
logged, never read back or mailed."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess

import pytest

from passerelle.antivirus.clamd import ScanResult, SignatureVersion
from passerelle.antivirus.outbreak import release_held
from passerelle.antivirus.quarantine import Quarantine, QuarantineError

SECRET = b"root:$6$notreally$hash:19000:0:99999:7:::\n"
META = dict(
    sender="mallory@example.org",
    recipients=["mallory@evil.example"],
    client_ip="192.0.2.66",
    client_host="evil.example",
    reason="outbreak",
    detail="attachment",
    direction="inbound",
    size=10,
)


class Runner:
    def __init__(self) -> None:
        self.inputs: list[bytes] = []

    def __call__(self, cmd, input, **kw):
        self.inputs.append(input)
        return subprocess.CompletedProcess(cmd, 0, b"", b"")


class Scanner:
    def version(self) -> SignatureVersion:
        return SignatureVersion(engine="1.0", version=2, date="")

    def scan(self, data: bytes) -> ScanResult:
        return ScanResult(status="clean")


@pytest.fixture
def shadow(tmp_path):
    p = tmp_path / "shadow"
    p.write_bytes(SECRET)
    os.chmod(p, 0o600)
    return p


@pytest.fixture
def setup(tmp_path):
    runner = Runner()
    q = Quarantine(tmp_path / "q", runner=runner)
    item = q.store(io.BytesIO(b"Subject: held\r\n\r\nbody\r\n"), **META)
    return q, item, runner


def _plant_symlink(path, target) -> None:
    path.unlink()
    path.symlink_to(target)


def test_release_refuses_a_symlinked_message(setup, shadow, caplog):
    q, item, runner = setup
    _plant_symlink(q.message_path(item.id), shadow)
    with caplog.at_level(logging.ERROR), pytest.raises(QuarantineError):
        q.release(item.id, by="test")
    assert runner.inputs == []  # nothing mailed
    assert "symbolic link" in caplog.text
    assert not q.get(item.id).released


def test_release_refuses_a_message_owned_by_someone_else(setup):
    if os.geteuid() != 0:
        pytest.skip("needs root to chown")
    q, item, runner = setup
    os.chown(q.message_path(item.id), 54321, 54321)
    with pytest.raises(QuarantineError):
        q.release(item.id, by="test")
    assert runner.inputs == []


def test_release_refuses_a_hard_link(setup, tmp_path):
    q, item, runner = setup
    eml = q.message_path(item.id)
    other = tmp_path / "elsewhere"
    os.link(eml, other)  # two links: the file is also somewhere root may care about
    with pytest.raises(QuarantineError):
        q.release(item.id, by="test")
    assert runner.inputs == []


def test_release_held_refuses_a_symlinked_message(setup, shadow):
    q, item, runner = setup
    _plant_symlink(q.message_path(item.id), shadow)
    out = release_held(q, Scanner(), outbreak_on=False)
    assert out.released == []
    assert out.errors and item.id in out.errors[0]
    assert runner.inputs == []


def test_listing_skips_symlinked_metadata(setup, tmp_path):
    q, item, _ = setup
    fake = tmp_path / "fake.json"
    fake.write_text(json.dumps({**META, "id": "20990101T000000-aaaaaaaaaaaa", "time": 1.0}))
    (q.dir / "20990101T000000-aaaaaaaaaaaa.json").symlink_to(fake)
    assert [i.id for i in q.items()] == [item.id]


def test_lock_file_symlink_is_not_followed(setup, tmp_path):
    q, item, runner = setup
    target = tmp_path / "created-by-root"
    (q.dir / ".lock").unlink(missing_ok=True)
    (q.dir / ".lock").symlink_to(target)
    with pytest.raises(QuarantineError):
        q.release(item.id, by="test")
    assert not target.exists()
    assert runner.inputs == []


def test_symlinked_quarantine_directory_is_refused(tmp_path, shadow):
    real = tmp_path / "real"
    q = Quarantine(real, runner=Runner())
    item = q.store(io.BytesIO(b"x"), **META)
    link = tmp_path / "link"
    link.symlink_to(real)
    with pytest.raises(QuarantineError):
        Quarantine(link, runner=Runner()).release(item.id)


def test_legitimate_release_still_works(setup):
    q, item, runner = setup
    q.release(item.id, by="test")
    assert runner.inputs == [b"Subject: held\n\nbody\n"]
