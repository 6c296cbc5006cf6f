"""Which transport serves the greylist milter: the one-thread loop with the SQLite store,
libmilter with MariaDB (``greylist.daemon.serve``; docs/benchmarks.md says why)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from passerelle.greylist import daemon
from passerelle.greylist.config import parse_config


def _served_by(monkeypatch: pytest.MonkeyPatch, store: str, tmp_path: Path) -> list[str]:
    seen: list[str] = []

    def loop_serve(self: Any, *args: Any, **kw: Any) -> None:
        seen.append(f"loop {self.spec}")

    def libmilter(name: str, binding: Any, socket: str, timeout: int = 600) -> None:
        seen.append(f"libmilter {socket}")

    monkeypatch.setattr(daemon.MilterLoop, "serve", loop_serve)
    monkeypatch.setattr(daemon, "run_milter", libmilter)
    monkeypatch.setattr(daemon, "setup_logging", lambda *a, **k: None)
    cfg = parse_config(
        {
            "greylist": {
                "store": store,
                "socket": f"unix:{tmp_path}/g.sock",
                "hostname": "t",
                "store_timeout": "1s",
            }
        }
    )
    daemon.serve(cfg)
    return seen


def test_the_sqlite_store_is_served_by_the_loop(monkeypatch, tmp_path):
    store = f"sqlite:///{tmp_path}/g.sqlite"
    assert _served_by(monkeypatch, store, tmp_path) == [f"loop unix:{tmp_path}/g.sock"]


def test_the_mariadb_store_is_served_by_libmilter(monkeypatch, tmp_path):
    # Nothing listens there: the store is unavailable at start, the milter serves anyway.
    store = f"mysql://u:p@localhost/greylist?unix_socket={tmp_path}/none.sock"
    assert _served_by(monkeypatch, store, tmp_path) == [f"libmilter unix:{tmp_path}/g.sock"]
