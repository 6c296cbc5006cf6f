"""The console's config file, its CLI wiring and its HTTP server (a real socket, 127.0.0.1)."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import passerelle
from passerelle import cli
from passerelle.config import ConfigError
from passerelle.console.auth import hash_password
from passerelle.console.server import build_app, load_config, make_http_server, parse_listen


@pytest.fixture
def files(tmp_path):
    secret = tmp_path / "console.secret"
    secret.write_bytes(b"k" * 40 + b"\n")
    secret.chmod(0o640)
    accounts = tmp_path / "accounts.toml"
    h = hash_password("pw", 10_000)
    accounts.write_text(f'[[account]]\nname = "alice"\nrole = "admin"\npassword_hash = "{h}"\n')
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps([{"name": "exe", "extensions": ["exe"], "action": "quarantine"}]))
    return tmp_path


def write_config(files, **over) -> str:
    values = {
        "database": f"sqlite:///{files / 'console.sqlite'}",
        "accounts_file": str(files / "accounts.toml"),
        "secret_file": str(files / "console.secret"),
        "rules_file": str(files / "rules.json"),
        "listen": "127.0.0.1:8025",
    }
    values.update(over)
    body = "[console]\n" + "".join(
        f"{k} = {json.dumps(v)}\n" for k, v in values.items() if v is not None
    )
    path = files / "console.toml"
    path.write_text(body)
    return str(path)


def test_good_config_loads(files):
    cfg = load_config(write_config(files))
    assert (cfg.host, cfg.port, cfg.url_prefix, cfg.session_lifetime) == (
        "127.0.0.1",
        8025,
        "",
        28800,
    )
    assert cfg.accounts.role_of("alice") == "admin"
    assert [r.name for r in cfg.inventory] == ["exe"]
    assert cfg.secret == b"k" * 40


@pytest.mark.parametrize(
    ("over", "message"),
    [
        ({"database": "postgres://x"}, "console.database"),
        ({"listen": "localhost:8025"}, "console.listen: the host must be an IP"),
        ({"listen": "127.0.0.1:99999"}, "between 1 and 65535"),
        ({"colour": "blue"}, "console.colour: unknown setting"),
        ({"secret_file": "/nonexistent/secret"}, "console.secret_file: cannot read"),
        ({"accounts_file": None}, "console.accounts_file: is required"),
        ({"trusted_proxies": ["apache"]}, "not an IP address"),
        ({"url_prefix": "console"}, "console.url_prefix"),
        ({"session_lifetime": "forever"}, "console.session_lifetime"),
    ],
)
def test_bad_config_names_file_and_key(files, over, message):
    path = write_config(files, **over)
    with pytest.raises(ConfigError, match=message) as exc:
        load_config(path)
    assert path in str(exc.value)


def test_secret_readable_by_everyone_is_refused(files):
    (files / "console.secret").chmod(0o644)
    with pytest.raises(ConfigError, match="readable by everyone"):
        load_config(write_config(files))


def test_short_secret_is_refused(files):
    (files / "console.secret").write_bytes(b"short")
    with pytest.raises(ConfigError, match="at least 32 bytes"):
        load_config(write_config(files))


def test_bad_accounts_and_rules_files(files):
    (files / "accounts.toml").write_text('[[account]]\nname = "a"\nrole = "root"\n')
    with pytest.raises(ConfigError, match="role must be one of"):
        load_config(write_config(files))
    (files / "accounts.toml").write_text("")
    (files / "rules.json").write_text('[{"name": "x", "action": "quarantine"}]')
    with pytest.raises(ConfigError, match="rules_file"):
        load_config(write_config(files))


def test_parse_listen_ipv6():
    assert parse_listen("[::1]:8025") == ("::1", 8025)


def test_check_config_through_the_passerelle_command(files, capsys):
    path = write_config(files)
    assert cli.main(["console", "check-config", path]) == 0
    assert capsys.readouterr().out.strip() == f"{path}: OK"
    bad = write_config(files, listen="nowhere")
    assert cli.main(["console", "check-config", bad]) == 1
    assert "console.listen" in capsys.readouterr().err


def test_serve_answers_over_http(files):
    cfg = load_config(write_config(files))
    httpd = make_http_server(build_app(cfg), cfg.host, 0)
    assert httpd.server_address[0] == "127.0.0.1"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", httpd.server_address[1], timeout=10)
        conn.request("GET", "/login")
        r = conn.getresponse()
        body = r.read().decode()
        assert r.status == 200 and 'name="password"' in body
        assert "HttpOnly" in r.getheader("Set-Cookie")
        conn.request("GET", "/static/console.css")
        r = conn.getresponse()
        assert r.status == 200 and b"Passerelle console" in r.read()
        conn.close()
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_every_console_asset_is_package_data():
    from fnmatch import fnmatch
    from pathlib import Path

    from passerelle.config import tomllib

    root = Path(__file__).resolve().parents[3]
    with (root / "pyproject.toml").open("rb") as fh:
        patterns = tomllib.load(fh)["tool"]["setuptools"]["package-data"]["passerelle.console"]
    package = root / "src" / "passerelle" / "console"
    assets = [
        p.relative_to(package).as_posix()
        for p in package.rglob("*")
        if p.is_file() and p.suffix not in (".py", ".pyc")
    ]
    assert any(a.startswith("templates/") for a in assets)
    assert "static/console.css" in assets
    missing = [a for a in assets if not any(fnmatch(a, pat) for pat in patterns)]
    assert missing == [], f"not shipped in the package: {missing}"


def test_serve_command_tells_systemd_once_it_answers(files, tmp_path):
    """``passerelle console serve`` under a Type=notify unit: READY=1 once it listens."""
    with socket.socket() as probe:  # a free port on loopback for the console
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = write_config(files, listen=f"127.0.0.1:{port}")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.settimeout(30)
    env = {
        **os.environ,
        "PYTHONPATH": str(Path(passerelle.__file__).parents[1]),
        "NOTIFY_SOCKET": str(tmp_path / "notify"),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "passerelle.cli", "console", "serve", "--config", config],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert notify.recv(100) == b"READY=1"
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)  # no wait: it answers
        conn.request("GET", "/login")
        assert conn.getresponse().status == 200
        conn.close()
    finally:
        notify.close()
        proc.terminate()
        proc.communicate(timeout=10)
