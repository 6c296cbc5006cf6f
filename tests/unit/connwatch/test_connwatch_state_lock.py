"""The connection guard's lock file lives in /var/lib/passerelle, a folder the ``passerelle``
user owns, and root takes it: a file planted there must never make root create, open or lock
anything else (issue 14, item 9)."""

from __future__ import annotations

import os
import signal
import stat

import pytest

from passerelle.connwatch.blocks import BlockError, load_state, state_lock


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


# -- the state file and the reload marker, in the same folder --------------------------------
def test_state_file_symlink_is_refused(tmp_path):
    victim = tmp_path / "elsewhere.json"
    victim.write_text('{"version": 1, "blocks": []}\n')
    state = tmp_path / "connwatch.json"
    os.symlink(victim, state)
    with pytest.raises(BlockError, match="symbolic link"):
        load_state(state)


def test_state_file_of_another_user_is_refused(tmp_path):
    """The passerelle user may rename a file of its own over the state: its blocks (or its
    empty list, unblocking everybody) are not taken."""
    state = tmp_path / "connwatch.json"
    state.write_text('{"version": 1, "blocks": []}\n')
    os.chown(state, 65534, 65534)
    with pytest.raises(BlockError, match="owned by uid 65534"):
        load_state(state)


def test_state_fifo_is_refused_without_blocking(tmp_path, no_hang):
    state = tmp_path / "connwatch.json"
    os.mkfifo(state)
    with pytest.raises(BlockError, match="not a regular file"):
        load_state(state)


def test_planted_reload_marker_creates_nothing_and_sendmail_is_reloaded(tmp_path):
    from .test_connwatch_guard import B, Env, write_log

    env = Env(tmp_path)
    write_log(env.log, {B: 3000})
    victim = tmp_path / "etc-nologin"
    (tmp_path / "state").mkdir()
    os.symlink(victim, f"{env.cfg.state}.reload-pending")
    out = env.run()
    assert out.exit_code == 0, out.errors
    assert not victim.exists()
    assert env.reload_calls() == ["reload"]
    assert not os.path.lexists(f"{env.cfg.state}.reload-pending")


def test_atomic_write_never_chmods_a_planted_link(tmp_path):
    """The folder's owner swaps the temporary file for a symlink while root writes it: the
    mode is set on the file root opened, never on the link's target."""
    from passerelle.atomicfile import atomic_write

    victim = tmp_path / "shadow"
    victim.write_text("secret")
    victim.chmod(0o600)
    target = tmp_path / "connwatch.json"

    def swap(fh):
        fh.write(b"{}")
        (tmp,) = tmp_path.glob(".connwatch.json.*")
        tmp.unlink()
        os.symlink(victim, tmp)

    atomic_write(target, swap, 0o644)
    assert stat.S_IMODE(victim.stat().st_mode) == 0o600
