"""Issue 14, item 9c: the schema user's URL (with its password) is read from stdin or a
0600 file, never needed on the command line (where `ps` shows it)."""

from __future__ import annotations

import argparse
import io
import types

import pytest

from passerelle.connwatch import cli

URL = "mysql://connwatch_migrate:s3cret@db1:3306/passerelle"


@pytest.fixture
def fake(monkeypatch):
    seen: list[str] = []

    class Sink:
        def __init__(self, url: str, timeout: float) -> None:
            seen.append(url)

        def migrate(self):
            return 1, 1

        def close(self) -> None:
            pass

    cfg = types.SimpleNamespace(sink_url="mysql://reader:x@db1/passerelle", sink_timeout=5)
    monkeypatch.setattr(cli, "load_config", lambda path: cfg)
    monkeypatch.setattr(cli, "MariaDBSink", Sink)
    return seen


def _args(**kw):
    return argparse.Namespace(config="/dev/null", url=None, url_file=None, **kw)


def test_url_from_stdin(fake, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO(URL + "\n"))
    args = _args()
    args.url_file = "-"
    assert cli.cmd_migrate(args) == 0
    assert fake == [URL]


def test_url_from_file(fake, tmp_path):
    f = tmp_path / "url"
    f.write_text(URL + "\n")
    f.chmod(0o600)
    args = _args()
    args.url_file = str(f)
    assert cli.cmd_migrate(args) == 0
    assert fake == [URL]


def test_old_flag_and_default_still_work(fake):
    args = _args()
    args.url = URL
    assert cli.cmd_migrate(args) == 0
    assert cli.cmd_migrate(_args()) == 0
    assert fake == [URL, "mysql://reader:x@db1/passerelle"]
