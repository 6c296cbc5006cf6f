"""The connection guard's lock file lives in /var/lib/passerelle, a folder the ``passerelle``
user owns, and root takes it: a file planted there must never make root create, open or lock
anything else (issue 14, item 9)."""

from __future__ import annotations

import os
import signal
import stat

import pytest

from passerelle.connwatch.blocks import BlockError, state_lock


@pytest.fixture
def no_hang():
    """Opening a planted FIFO for writing blocks until a reader comes: fail instead."""

    def boom(*_):
        raise TimeoutError("the lock open blocked")

    old = signal.signal(signal.SIGALRM, boom)
    signal.alarm(5)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def take(state) -> None:
    with state_lock(state):
        pass


def test_lock_is_a_private_regular_file_and_taken_again(tmp_path):
    state = tmp_path / "connwatch.json"
    take(state)
    take(state)
    st = os.lstat(f"{state}.lock")
    assert stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid()
    assert stat.S_IMODE(st.st_mode) & 0o077 == 0


def test_symlink_to_an_existing_file_is_refused(tmp_path):
    victim = tmp_path / "shadow"
    victim.write_text("root:secret\n")
    victim.chmod(0o600)
    state = tmp_path / "connwatch.json"
    os.symlink(victim, f"{state}.lock")
    with pytest.raises(BlockError, match="symbolic link"):
        take(state)
    assert victim.read_text() == "root:secret\n"


def test_dangling_symlink_creates_nothing(tmp_path):
    target = tmp_path / "etc" / "cron.d-passerelle"
    target.parent.mkdir()
    state = tmp_path / "connwatch.json"
    os.symlink(target, f"{state}.lock")
    with pytest.raises(BlockError, match="symbolic link"):
        take(state)
    assert not target.exists()


def test_hard_link_to_a_root_file_is_refused(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("x")
    state = tmp_path / "connwatch.json"
    os.link(victim, f"{state}.lock")
    with pytest.raises(BlockError, match="link"):
        take(state)


def test_file_of_another_user_is_refused(tmp_path):
    state = tmp_path / "connwatch.json"
    lock = tmp_path / "connwatch.json.lock"
    lock.write_text("")
    os.chown(lock, 65534, 65534)
    with pytest.raises(BlockError, match="owned by uid 65534"):
        take(state)


def test_fifo_is_refused_without_blocking(tmp_path, no_hang):
    state = tmp_path / "connwatch.json"
    os.mkfifo(f"{state}.lock")
    with pytest.raises(BlockError, match="not a regular file"):
        take(state)


def test_directory_is_refused(tmp_path):
    state = tmp_path / "connwatch.json"
    os.mkdir(f"{state}.lock")
    with pytest.raises(BlockError, match="not a regular file"):
        take(state)
