import pytest

from passerelle.config import ConfigError
from passerelle.greylist.config import load_config, parse_config


def test_defaults():
    cfg = parse_config({})
    assert cfg.min_delay == 2400 and cfg.pending_ttl == 54000 and cfg.pass_ttl == 15 * 86400
    assert cfg.auto_whitelist_after == 5
    assert (cfg.ipv4_prefix, cfg.ipv6_prefix) == (24, 64)
    assert cfg.store_timeout == 2.0 and cfg.on_store_error == "accept"
    assert cfg.store_url is not None and cfg.store_url.scheme == "sqlite"
    assert cfg.store_url.path == "/var/lib/passerelle/greylist.sqlite"
    assert cfg.trusted_networks == ["127.0.0.0/8", "::1/128"]


def test_full_example(tmp_path):
    p = tmp_path / "g.toml"
    p.write_text(
        """
[greylist]
min_delay = "5m"
pending_ttl = "4h"
pass_ttl = "30d"
auto_whitelist_after = 0
ipv4_prefix = 32
ipv6_prefix = 128
store = "mysql://gw1:p%40ss@db.example.org:3307/greylist"
store_timeout = "1s"
on_store_error = "tempfail"
hostname = "gw1.example.org"
socket = "inet:8890@127.0.0.1"
[whitelist]
clients = ["192.0.2.1", "198.51.100.0/24", "mx.example.com", ".example.net"]
senders = ["@example.com"]
recipients = ["postmaster@example.org"]
trusted_networks = ["10.0.0.0/8"]
"""
    )
    cfg = load_config(p)
    assert cfg.min_delay == 300 and cfg.pass_ttl == 30 * 86400
    u = cfg.store_url
    assert (u.scheme, u.user, u.password, u.host, u.port, u.database) == (
        "mysql",
        "gw1",
        "p@ss",
        "db.example.org",
        3307,
        "greylist",
    )
    assert "p@ss" not in u.redacted()
    assert cfg.whitelist().clients.match(None, "a.example.net")


def test_unix_socket_url():
    cfg = parse_config({"greylist": {"store": "mysql://u:p@localhost/db?unix_socket=/run/m.sock"}})
    assert cfg.store_url.unix_socket == "/run/m.sock"


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"greylist": {"min_dealy": "40m"}}, "greylist.min_dealy"),
        ({"greylist": {"min_delay": "40 minutes"}}, "greylist.min_delay"),
        ({"greylist": {"min_delay": "0s"}}, "greylist.min_delay"),
        ({"greylist": {"pending_ttl": "30m"}}, "greylist.pending_ttl"),
        ({"greylist": {"ipv4_prefix": 33}}, "greylist.ipv4_prefix"),
        ({"greylist": {"ipv6_prefix": 16}}, "greylist.ipv6_prefix"),
        ({"greylist": {"auto_whitelist_after": -1}}, "greylist.auto_whitelist_after"),
        ({"greylist": {"on_store_error": "reject"}}, "greylist.on_store_error"),
        ({"greylist": {"store": "postgres://x"}}, "greylist.store"),
        ({"greylist": {"store": "mysql://u:p@host/"}}, "greylist.store"),
        ({"greylist": {"store": "mysql://u:p@host/db?foo=1"}}, "greylist.store"),
        ({"greylist": {"store_timeout": "0s"}}, "greylist.store_timeout"),
        ({"greylist": {"socket": "/run/x.sock"}}, "greylist.socket"),
        ({"greylist": {"hostname": "gw 1"}}, "greylist.hostname"),
        ({"whitelist": {"clients": ["10.0.0.0/40"]}}, "whitelist.clients[0]"),
        ({"whitelist": {"senders": ["ok@x.org", "@"]}}, "whitelist.senders[1]"),
        ({"whitelist": {"clients": "10.0.0.1"}}, "whitelist.clients"),
        ({"whitelist": {"nope": []}}, "whitelist.nope"),
        ({"greylsit": {}}, "greylsit"),
    ],
)
def test_errors_name_the_key(data, key):
    with pytest.raises(ConfigError) as ei:
        parse_config(data)
    assert ei.value.key == key


def test_load_config_names_file(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text('[greylist]\nmin_delay = "x"\n')
    with pytest.raises(ConfigError) as ei:
        load_config(p)
    assert str(p) in str(ei.value) and "greylist.min_delay" in str(ei.value)
