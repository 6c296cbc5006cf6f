"""The over file: the clients over the alert threshold that each run writes for the
console's connection guard page (passerelle.connwatch.over), written and read back."""

import json
from dataclasses import replace

import pytest
from maillog.smlog import NOW

from passerelle.config import ConfigError
from passerelle.connwatch.guard import Decision, parse_config, run_once
from passerelle.connwatch.over import (
    FILE_MAX,
    OVER_MAX,
    OverFileError,
    OverFileMissing,
    over_record,
    read_over,
    write_over,
)

from .test_connwatch_guard import V6, A, B, Env, W, _DownSink, _OtherGatewaysSink, write_log


def _over(env):
    return json.loads((env.tmp / "connwatch-over.json").read_text())


def _clients(rec):
    return [(c["ip"], c["count"], c["decision"]) for c in rec["clients"]]


def test_each_run_writes_the_clients_over_the_alert_threshold(tmp_path):
    env = Env(tmp_path)
    write_log(env.log, {A: 600, B: 3000, W: 3000, V6: 2600, "192.0.2.50": 40})
    env.run()
    rec = _over(env)
    assert _clients(rec) == [
        (W, 3000, "whitelisted"),
        (B, 3000, "block"),
        (V6, 2600, "block"),
        (A, 600, "alert"),
    ]
    assert (rec["at"], rec["window"], rec["direction"]) == (NOW, 3600, "inbound")
    assert (rec["alert_threshold"], rec["block_threshold"]) == (500, 2500)
    assert rec["counts"] == "local" and rec["total"] == 4
    assert read_over(env.cfg.over_file) == rec

    # an hour later B is still over: its block (extended) was already there
    write_log(env.log, {B: 2600}, now=NOW + 3600)
    env.run(NOW + 3600)
    assert _clients(_over(env)) == [(B, 2600, "already blocked")]
    # an earlier block of a client now only over the alert threshold
    write_log(env.log, {V6: 700}, now=NOW + 7200)
    env.run(NOW + 7200)
    assert _clients(_over(env)) == [(V6, 700, "already blocked")]


def test_nobody_over_writes_an_empty_list(tmp_path):
    env = Env(tmp_path)
    write_log(env.log, {A: 600})
    env.run()
    assert _over(env)["total"] == 1
    write_log(env.log, {A: 20}, now=NOW + 3600)
    env.run(NOW + 3600)
    rec = _over(env)
    assert rec["clients"] == [] and rec["total"] == 0 and rec["at"] == NOW + 3600


def test_dry_run_writes_no_over_file(tmp_path):
    env = Env(tmp_path)
    write_log(env.log, {B: 3000})
    out = run_once(env.cfg, NOW, env.deps, dry_run=True)
    assert _clients(out.over) == [(B, 3000, "block")]
    assert not (tmp_path / "connwatch-over.json").exists()


def test_blocks_not_in_force_are_not_called_blocks(tmp_path):
    env = Env(tmp_path, block=False)
    write_log(env.log, {B: 3000})
    env.run()
    assert _clients(_over(env)) == [(B, 3000, "not blocked")]
    # a state that cannot be read: no block is applied
    (tmp_path / "corrupt").mkdir()
    env = Env(tmp_path / "corrupt")
    write_log(env.log, {B: 3000})
    (tmp_path / "corrupt" / "state").mkdir()
    (tmp_path / "corrupt" / "state" / "connwatch.json").write_text("{not json")
    assert env.run().exit_code == 1
    assert _clients(_over(env)) == [(B, 3000, "not blocked")]


def test_counts_say_whether_they_are_the_fleet_sum(tmp_path):
    env = Env(tmp_path, sink="mariadb")
    write_log(env.log, {B: 600})
    env.deps.sink = _OtherGatewaysSink()
    env.run()
    rec = _over(env)
    assert rec["counts"] == "fleet" and _clients(rec) == [(B, 2600, "block")]
    env.deps.sink = _DownSink()  # database down: this host's counts
    env.run(NOW + 60)
    rec = _over(env)
    assert rec["counts"] == "local" and _clients(rec) == [(B, 600, "already blocked")]


def test_an_unwritable_over_file_is_an_error_of_the_run(tmp_path):
    env = Env(tmp_path)
    (tmp_path / "ro").write_text("a file, not a folder")
    env.cfg = replace(env.cfg, over_file=str(tmp_path / "ro" / "over.json"))
    write_log(env.log, {A: 600})
    out = env.run()
    assert out.exit_code == 1 and str(tmp_path / "ro" / "over.json") in out.errors[0]
    assert (tmp_path / "connwatch.status").exists()  # the status line is still written


def test_the_list_is_bounded_and_counts_the_rest(tmp_path):
    many = [
        Decision(f"2001:db8:ffff:ffff:ffff:ffff:ffff:{i:x}", 10**9 - i, "block")
        for i in range(OVER_MAX + 7)
    ]
    rec = over_record(
        many,
        {d.ip for d in many},
        {d.ip for d in many},
        at=NOW,
        window=3600,
        direction="inbound",
        alert_threshold=500,
        block_threshold=2500,
        counts="fleet",
    )
    assert rec["total"] == OVER_MAX + 7 and len(rec["clients"]) == OVER_MAX
    assert (
        rec["clients"][0]["count"] == 10**9 and rec["clients"][-1]["decision"] == "already blocked"
    )
    path = tmp_path / "over.json"
    write_over(path, rec)
    assert path.stat().st_size < FILE_MAX  # the longest list fits what a reader reads
    assert read_over(path) == rec


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"{not json", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[]", "not a version 1 over file"),
        (b'{"version": 2}', "not a version 1 over file"),
        (b"x" * (FILE_MAX + 1), f"larger than {FILE_MAX} bytes"),
    ],
)
def test_read_over_refuses_what_a_run_does_not_write(tmp_path, content, why):
    path = tmp_path / "over.json"
    path.write_bytes(content)
    with pytest.raises(OverFileError, match=why) as refused:
        read_over(path)
    assert not isinstance(refused.value, OverFileMissing)  # a fault, not "not yet"


def test_a_missing_over_file_is_its_own_error(tmp_path):
    """No run wrote it yet (the normal state after an install, until the next run): a
    subclass, so a reader can tell it from a broken file and an older one still catches it."""
    path = tmp_path / "over.json"
    with pytest.raises(OverFileMissing, match=f"^{path}: no run has written it yet$") as missing:
        read_over(path)
    assert isinstance(missing.value, OverFileError)
    (tmp_path / "dir").mkdir()
    with pytest.raises(OverFileError) as unreadable:  # there, but not a file
        read_over(tmp_path / "dir")
    assert not isinstance(unreadable.value, OverFileMissing)


@pytest.mark.parametrize(
    "change",
    [
        {"at": "yesterday"},
        {"total": True},
        {"counts": "guessed"},
        {"clients": {}},
        {"clients": [{"ip": "192.0.2.1", "count": 3, "decision": "banished"}]},
        {"clients": [{"ip": 7, "count": 3, "decision": "alert"}]},
        {"clients": [["192.0.2.1", 3, "alert"]]},
    ],
)
def test_read_over_checks_the_shape(tmp_path, change):
    rec = over_record(
        [],
        (),
        (),
        at=NOW,
        window=3600,
        direction="inbound",
        alert_threshold=500,
        block_threshold=2500,
        counts="local",
    )
    path = tmp_path / "over.json"
    write_over(path, rec)
    assert read_over(path) == rec
    path.write_text(json.dumps({**rec, **change}))
    with pytest.raises(OverFileError):
        read_over(path)


def test_over_file_config(tmp_path):
    cfg = parse_config({"connwatch": {"hostname": "gw1"}})
    assert cfg.over_file == "/var/lib/passerelle/connwatch-over.json"
    cfg = parse_config({"connwatch": {"hostname": "gw1", "status_file": "/srv/st/cw.status"}})
    assert cfg.over_file == "/srv/st/connwatch-over.json"
    cfg = parse_config({"connwatch": {"hostname": "gw1", "over_file": "/srv/o.json"}})
    assert cfg.over_file == "/srv/o.json"
    for same in ("/var/lib/passerelle/connwatch.status", "/var/lib/passerelle/connwatch.json"):
        with pytest.raises(ConfigError) as exc:
            parse_config({"connwatch": {"hostname": "gw1", "over_file": same}})
        assert exc.value.key == "connwatch.over_file"
