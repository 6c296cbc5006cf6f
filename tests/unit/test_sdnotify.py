"""passerelle.sdnotify: READY=1 reaches systemd's notification socket, or nothing happens."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from passerelle import sdnotify


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(2)
    yield sock, path
    sock.close()


def test_ready_is_sent_and_the_variable_dropped(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    env = {"NOTIFY_SOCKET": path, "PATH": "/usr/bin"}
    assert sdnotify.ready(env) is True
    assert sock.recv(100) == b"READY=1"
    assert env == {"PATH": "/usr/bin"}  # a command the daemon runs never notifies


def test_an_abstract_socket() -> None:
    name = f"passerelle-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(2)
        assert sdnotify.notify("STATUS=serving", {"NOTIFY_SOCKET": "@" + name}) is True
        assert sock.recv(100) == b"STATUS=serving"


def test_outside_systemd_nothing_happens() -> None:
    env: dict[str, str] = {}
    assert sdnotify.ready(env) is False
    assert sdnotify.notify("READY=1", {"NOTIFY_SOCKET": ""}) is False


@pytest.mark.parametrize("address", ["relative/notify", "{tmp}/no-such-socket"])
def test_a_bad_address_is_logged_not_raised(
    address: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    env = {"NOTIFY_SOCKET": address.format(tmp=tmp_path)}
    with caplog.at_level(logging.WARNING, logger="passerelle"):
        assert sdnotify.ready(env) is False
    assert "NOTIFY_SOCKET" not in env
    assert caplog.records and caplog.records[0].levelno == logging.WARNING
