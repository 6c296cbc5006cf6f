import ipaddress
import json
import logging
import os
import socket
import stat
import time
from dataclasses import replace
from datetime import timezone

import pytest
from maillog.smlog import NOW, session

from passerelle.cli import main
from passerelle.config import ConfigError
from passerelle.connwatch.blocks import Block, load_state, map_key, render_map
from passerelle.connwatch.guard import (
    Config,
    Deps,
    decide,
    load_config,
    mta_listening,
    parse_config,
    plan_blocks,
    run_once,
)
from passerelle.connwatch.sink import LocalSink, SinkError
from passerelle.runner import run_command

A, B, W, V6 = "192.0.2.10", "198.51.100.7", "10.0.0.5", "2001:db8::bad"


def write_log(path, clients, now=NOW):
    """``clients``: {ip: sessions}, spread over the last hour, interleaved."""
    plan = [ip for ip, n in clients.items() for _ in range(n)]
    plan.sort(key=lambda ip: hash(ip) % 7)  # deterministic interleaving
    lines = []
    step = 3400 / max(1, len(plan))
    for i, ip in enumerate(plan):
        lines += session(now - 3500 + i * step, 1000 + i % 30000, ip, messages=1 + i % 2)
    path.write_text("\n".join(lines) + "\n")
    os.utime(path, (now, now))


def script(path, body):
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


class Env:
    def __init__(self, tmp_path, **overrides):
        self.tmp = tmp_path
        self.calls = tmp_path / "makemap.calls"
        self.reloads = tmp_path / "reload.calls"
        self.makemap = script(tmp_path / "makemap", f'echo "$@" >> {self.calls}\ncat > "$2.db"\n')
        self.reload = script(tmp_path / "reload", f"echo reload >> {self.reloads}\n")
        self.log = tmp_path / "maillog"
        self.mails = []
        self.cfg = replace(
            parse_config(
                {
                    "connwatch": {
                        "logs": [str(self.log)],
                        "hostname": "gw1",
                        "state": str(tmp_path / "state" / "connwatch.json"),
                        "map": str(tmp_path / "mail" / "connwatch"),
                        "makemap": self.makemap,
                        "reload_command": [self.reload],
                        "status_file": str(tmp_path / "connwatch.status"),
                        "admin_mail": ["postmaster@example.edu"],
                        "whitelist": ["127.0.0.0/8", "::1/128", "10.0.0.0/8"],
                    }
                }
            ),
            **overrides,
        )
        self.logger = logging.getLogger("passerelle.test.connwatch")
        self.deps = Deps(
            runner=run_command,
            mailer=self.mailer,
            mta_ready=lambda timeout: True,
            sink=LocalSink(),
            logger=self.logger,
            tz=timezone.utc,
        )

    def mailer(self, argv, message):
        self.mails.append((list(argv), message.decode()))
        return 0, ""

    def run(self, now=NOW):
        return run_once(self.cfg, now, self.deps)

    def makemap_calls(self):
        return self.calls.read_text().splitlines() if self.calls.exists() else []

    def reload_calls(self):
        return self.reloads.read_text().splitlines() if self.reloads.exists() else []

    def map_text(self):
        return (self.tmp / "mail" / "connwatch").read_text()


def test_issue_scenario_alert_block_whitelist_then_expiry(tmp_path, caplog):
    env = Env(tmp_path)
    write_log(env.log, {A: 600, B: 3000, W: 3000, V6: 2600, "192.0.2.50": 40, "::1": 10})
    caplog.set_level(logging.INFO, logger="passerelle.test.connwatch")

    out = env.run()
    assert out.exit_code == 0, out.errors
    assert out.counts[A] == 600 and out.counts[B] == 3000 and out.counts[W] == 3000
    assert {d.ip: d.action for d in out.decisions} == {
        B: "block",
        W: "whitelisted",
        V6: "block",
        A: "alert",
    }
    text = env.map_text()
    assert (
        'Connect:198.51.100.7\tERROR:"550 5.7.1 Too many connections from 198.51.100.7; '
        'blocked until 2026-11-28T11:00Z"' in text.splitlines()
    )
    assert "Connect:IPv6:2001:db8::bad\tERROR:" in text
    assert W not in text and A not in text
    # makemap once into a temporary name, renamed over the db; reload once
    assert env.makemap_calls() == [f"hash {tmp_path}/mail/connwatch.new"]
    assert (tmp_path / "mail" / "connwatch.db").read_text() == text
    assert not (tmp_path / "mail" / "connwatch.new.db").exists()
    assert env.reload_calls() == ["reload"]
    state = load_state(env.cfg.state)
    assert sorted(state) == [B, V6]
    assert state[B].expires == NOW + 86400 and state[B].count == 3000
    status = (tmp_path / "connwatch.status").read_text()
    assert status.startswith("CRITICAL - inbound gw1: blocked 198.51.100.7 (3000/1h)")
    assert "10.0.0.5 (3000/1h, whitelisted)" in status and status.count("\n") == 1
    assert len(env.mails) == 1
    argv, mail = env.mails[0]
    assert argv == ["/usr/sbin/sendmail", "-oi", "-t"]
    assert "To: postmaster@example.edu" in mail
    assert "BLOCKED until 2026-11-28T11:00:00Z" in mail and "whitelisted, not blocked" in mail
    logged = caplog.text
    assert "198.51.100.7 made 3000 connections in 1h (> 2500): blocked" in logged
    assert "192.0.2.10 made 600 connections in 1h (> 500)" in logged
    assert "10.0.0.5 made 3000 connections in 1h (> 500), whitelisted: never blocked" in logged

    # same hour again: nothing changes, nothing rebuilt, no reload
    out = env.run()
    assert out.plan.added == [] and len(out.plan.extended) == 2
    assert len(env.makemap_calls()) == 1 and env.reload_calls() == ["reload"]

    # a day later the log has nothing in the window: blocks expire, map rebuilt, reload
    later = NOW + 86400
    out = env.run(later)
    assert out.exit_code == 0
    assert sorted(b.ip for b, why in out.plan.removed if why == "expired") == [B, V6]
    assert load_state(env.cfg.state) == {}
    assert "Connect:" not in env.map_text()
    assert len(env.makemap_calls()) == 2 and env.reload_calls() == ["reload", "reload"]
    assert (tmp_path / "connwatch.status").read_text().startswith("OK - inbound gw1:")
    assert "unblocked (expired)" in env.mails[-1][1]


def test_blocked_client_still_hammering_is_extended(tmp_path):
    env = Env(tmp_path)
    write_log(env.log, {B: 3000})
    env.run()
    write_log(env.log, {B: 2600}, now=NOW + 3600)
    out = env.run(NOW + 3600)
    assert out.plan.extended[0].expires == NOW + 3600 + 86400
    assert out.plan.extended[0].since == NOW
    assert env.reload_calls() == ["reload"]  # same set: no reload
    assert len(env.makemap_calls()) == 2  # the expiry in the map message changed
    assert "blocked until 2026-11-28T12:00Z" in env.map_text()


def test_block_false_only_alerts(tmp_path):
    env = Env(tmp_path, block=False)
    write_log(env.log, {B: 3000})
    out = env.run()
    assert [d.action for d in out.decisions] == ["block"]
    assert load_state(env.cfg.state) == {}
    assert env.reload_calls() == []
    assert out.status.startswith("WARNING")


def test_block_of_a_newly_whitelisted_client_is_released(tmp_path):
    env = Env(tmp_path)
    write_log(env.log, {B: 3000})
    env.run()
    extra = ipaddress.ip_network("198.51.100.0/24")
    env.cfg = replace(env.cfg, whitelist=(*env.cfg.whitelist, extra))
    out = env.run()
    assert [(b.ip, why) for b, why in out.plan.removed] == [(B, "whitelisted")]
    assert "Connect:" not in env.map_text()
    assert env.reload_calls() == ["reload", "reload"]


def test_makemap_failure_is_reported_and_retried(tmp_path):
    env = Env(tmp_path)
    write_log(env.log, {B: 3000})
    good = env.makemap
    env.cfg = replace(env.cfg, makemap=script(tmp_path / "badmakemap", "echo boom >&2; exit 3\n"))
    out = env.run()
    assert out.exit_code == 1
    assert "failed (3): boom" in out.errors[0]
    assert out.status.startswith("UNKNOWN - ")
    assert not (tmp_path / "mail" / "connwatch").exists()
    assert not (tmp_path / "mail" / "connwatch.new").exists()
    assert env.reload_calls() == []
    env.cfg = replace(env.cfg, makemap=good)
    out = env.run()  # same block set, but the map is not up to date: built now, and reloaded
    assert out.exit_code == 0
    assert "Connect:198.51.100.7" in env.map_text()
    assert env.reload_calls() == ["reload"]


def test_reload_failure_is_retried_by_the_next_run(tmp_path):
    env = Env(tmp_path)
    write_log(env.log, {B: 3000})
    good = env.cfg.reload_command
    env.cfg = replace(env.cfg, reload_command=(script(tmp_path / "badreload", "exit 1\n"),))
    assert env.run().exit_code == 1
    env.cfg = replace(env.cfg, reload_command=good)
    assert env.run().exit_code == 0
    assert env.reload_calls() == ["reload"]
    assert env.run().exit_code == 0
    assert env.reload_calls() == ["reload"]


def test_corrupt_state_is_never_overwritten(tmp_path):
    env = Env(tmp_path)
    write_log(env.log, {B: 3000})
    state = tmp_path / "state" / "connwatch.json"
    state.parent.mkdir()
    state.write_text("{not json")
    out = env.run()
    assert out.exit_code == 1 and "not a connwatch state file" in out.errors[0]
    assert state.read_text() == "{not json"
    assert env.makemap_calls() == [] and env.reload_calls() == []


def test_dry_run_changes_nothing(tmp_path):
    env = Env(tmp_path)
    write_log(env.log, {B: 3000})
    out = run_once(env.cfg, NOW, env.deps, dry_run=True)
    assert [d.action for d in out.decisions] == ["block"]
    assert not (tmp_path / "state").exists() and env.makemap_calls() == [] and env.mails == []


# -- pure decisions ------------------------------------------------------------------------
def test_thresholds_are_strict():
    counts = {"192.0.2.1": 500, "192.0.2.2": 501, "192.0.2.3": 2500, "192.0.2.4": 2501}
    got = {d.ip: d.action for d in decide(counts, 500, 2500)}
    assert got == {"192.0.2.2": "alert", "192.0.2.3": "alert", "192.0.2.4": "block"}


def test_whitelist_networks_and_families():
    wl = [ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("2001:db8:1::/48")]
    counts = {"10.9.9.9": 9000, "2001:db8:1::5": 9000, "2001:db8:2::5": 9000, "11.0.0.1": 9000}
    got = {d.ip: d.action for d in decide(counts, 500, 2500, wl)}
    assert got == {
        "10.9.9.9": "whitelisted",
        "2001:db8:1::5": "whitelisted",
        "2001:db8:2::5": "block",
        "11.0.0.1": "block",
    }


def test_plan_expires_at_the_exact_expiry():
    cfg = Config(whitelist=())
    b = Block(B, "r", 3000, NOW - 86400, NOW, "inbound", "gw1")
    assert plan_blocks({B: b}, [], NOW - 1, cfg).blocks == {B: b}
    plan = plan_blocks({B: b}, [], NOW, cfg)
    assert plan.blocks == {} and plan.set_changed


def test_map_rendering():
    b4 = Block("198.51.100.7", "r", 3000, NOW, NOW + 86400)
    b6 = Block("2001:db8::1", "r", 3000, NOW, NOW + 3600)
    assert map_key("2001:db8::1") == "Connect:IPv6:2001:db8::1"
    lines = render_map({b6.ip: b6, b4.ip: b4}).splitlines()
    assert lines[0].startswith("#")
    assert lines[1:] == [
        'Connect:198.51.100.7\tERROR:"550 5.7.1 Too many connections from 198.51.100.7; '
        'blocked until 2026-11-28T11:00Z"',
        'Connect:IPv6:2001:db8::1\tERROR:"550 5.7.1 Too many connections from 2001:db8::1; '
        'blocked until 2026-11-27T12:00Z"',
    ]


# -- config --------------------------------------------------------------------------------
def test_config_defaults():
    cfg = parse_config({"connwatch": {"hostname": "gw1"}})
    assert cfg.window == 3600 and cfg.block_for == 86400
    assert (cfg.alert_threshold, cfg.block_threshold) == (500, 2500)
    assert cfg.map == "/etc/mail/connwatch" and cfg.direction == "inbound"
    assert cfg.reload_command == ("systemctl", "reload", "sendmail")
    assert [str(n) for n in cfg.whitelist] == ["127.0.0.0/8", "::1/128"]


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ({"windw": "1h"}, "connwatch.windw"),
        ({"window": "1 hour"}, "connwatch.window"),
        ({"whitelist": ["10.0.0.0/33"]}, "connwatch.whitelist"),
        ({"alert_threshold": 3000}, "connwatch.block_threshold"),
        ({"direction": "sideways"}, "connwatch.direction"),
        ({"reload_command": []}, "connwatch.reload_command"),
        ({"admin_mail": ["nobody"]}, "connwatch.admin_mail"),
        ({"sink": "redis"}, "connwatch.sink"),
        ({"sink": "mariadb"}, "connwatch.sink_url"),
        ({"sink": "mariadb", "sink_url": "sqlite:////tmp/x"}, "connwatch.sink_url"),
        ({"sink": "mariadb", "sink_url": "mysql://host/db"}, "connwatch.sink_url"),
        ({"sink_timeout": "0s"}, "connwatch.sink_timeout"),
        ({"jobs": 0}, "connwatch.jobs"),
    ],
)
def test_config_errors_name_the_key(section, key):
    with pytest.raises(ConfigError) as exc:
        parse_config({"connwatch": section}, "x.toml")
    assert exc.value.key == key
    assert str(exc.value).startswith(f"x.toml: {key}: ")


def test_config_shared_sink_and_jobs():
    cfg = parse_config(
        {
            "connwatch": {
                "hostname": "gw1",
                "sink": "mariadb",
                "sink_url": "mysql://connwatch:pw@db1/greylist",
                "sink_timeout": "3s",
                "jobs": 2,
            }
        }
    )
    assert (cfg.sink, cfg.sink_timeout, cfg.jobs) == ("mariadb", 3, 2)


def test_check_config_cli(tmp_path, capsys):
    good = tmp_path / "good.toml"
    good.write_text('[connwatch]\nlogs = ["/var/log/mail.log"]\nwindow = "1h"\nhostname = "gw1"\n')
    assert main(["connwatch", "check-config", str(good)]) == 0
    assert capsys.readouterr().out == f"{good}: OK\n"
    bad = tmp_path / "bad.toml"
    bad.write_text("[connwatch]\nblock_for = true\n")
    assert main(["connwatch", "check-config", str(bad)]) == 1
    assert "connwatch.block_for" in capsys.readouterr().err
    assert main(["connwatch", "check-config", str(tmp_path / "missing.toml")]) == 1
    assert "file not found" in capsys.readouterr().err


# -- operators' commands -------------------------------------------------------------------
def _config_file(env):
    c = env.cfg
    p = env.tmp / "connwatch.toml"
    p.write_text(
        "[connwatch]\n"
        f'logs = ["{env.log}"]\nhostname = "gw1"\nstate = "{c.state}"\nmap = "{c.map}"\n'
        f'makemap = "{c.makemap}"\nreload_command = ["{c.reload_command[0]}"]\n'
        f'status_file = "{c.status_file}"\n'
    )
    return str(p)


def test_blocks_and_unblock_commands(tmp_path, capsys):
    env = Env(tmp_path)
    write_log(env.log, {B: 3000, V6: 2600})
    env.run()
    conf = _config_file(env)
    capsys.readouterr()

    assert main(["connwatch", "blocks", "-c", conf]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[:4] == ["IP", "COUNT", "SINCE", "EXPIRES"]
    assert "198.51.100.7" in out and "2026-11-28T11:00:00Z" in out

    assert main(["connwatch", "blocks", "--format", "json", "-c", conf]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert {b["ip"] for b in listed} == {B, V6}
    assert {"ip", "reason", "count", "since", "expires"} <= set(listed[0])

    assert main(["connwatch", "unblock", "IPv6:2001:db8::bad", "-c", conf]) == 0
    assert "2001:db8::bad unblocked" in capsys.readouterr().out
    assert "IPv6:2001:db8::bad" not in env.map_text() and "Connect:198.51.100.7" in env.map_text()
    assert len(env.makemap_calls()) == 2 and env.reload_calls() == ["reload", "reload"]
    assert sorted(load_state(env.cfg.state)) == [B]

    assert main(["connwatch", "unblock", "192.0.2.99", "-c", conf]) == 1
    assert "not blocked" in capsys.readouterr().err
    assert main(["connwatch", "unblock", "not-an-ip", "-c", conf]) == 2
    assert len(env.makemap_calls()) == 2


def test_run_command_line_with_now(tmp_path, capsys):
    env = Env(tmp_path)
    write_log(env.log, {A: 600})
    conf = _config_file(env)
    # traditional timestamps are local time: replay with the TZ of the test log (UTC)
    os.environ["TZ"] = "UTC"
    time.tzset()
    try:
        rc = main(["connwatch", "run", "-c", conf, "--now", "2026-11-27T11:00:00+00:00"])
        out = capsys.readouterr().out
        # same answer from two processes (the log is small: pieces of 16 MB, one piece)
        rc2 = main(
            ["connwatch", "run", "-c", conf, "--now", "2026-11-27T11:00:00+00:00", "--jobs", "2"]
        )
        out2 = capsys.readouterr().out
        assert main(["connwatch", "run", "-c", conf, "--jobs", "0"]) == 2
        assert "--jobs must be >= 1" in capsys.readouterr().err
    finally:
        os.environ.pop("TZ")
        time.tzset()
    assert rc == rc2 == 0
    assert out.startswith("WARNING - inbound gw1: over 500: 192.0.2.10 (600/1h)")
    assert out2 == out
    assert load_config(conf).logs == (str(env.log),)


# -- shared counts -------------------------------------------------------------------------
class _DownSink:
    def publish(self, host, direction, window_end, counts):
        raise SinkError("mysql://gw1:***@db1:3306/greylist: publish: timed out")

    def totals(self, direction, window_end, window, exclude_host=None):
        raise AssertionError("not reached")


class _OtherGatewaysSink(LocalSink):
    """Another gateway already published 2000 sessions of B for the window."""

    def totals(self, direction, window_end, window, exclude_host=None):
        mine = {} if exclude_host else super().totals(direction, window_end, window)
        out = {B: 2000}
        for ip, n in mine.items():
            out[ip] = out.get(ip, 0) + n
        return out


def test_decisions_use_the_sum_over_gateways(tmp_path):
    env = Env(tmp_path)
    write_log(env.log, {B: 600})  # alone: only an alert here
    env.deps.sink = _OtherGatewaysSink()
    out = env.run()
    assert out.counts[B] == 2600
    assert [(d.ip, d.action) for d in out.decisions] == [(B, "block")]
    assert B in load_state(env.cfg.state)
    # a dry run adds this host's unpublished counts to the other gateways'
    dry = run_once(env.cfg, NOW, env.deps, dry_run=True)
    assert dry.counts[B] == 2600


def test_database_down_falls_back_to_local_counts_and_says_so(tmp_path):
    env = Env(tmp_path)
    write_log(env.log, {B: 3000, A: 600})
    env.deps.sink = _DownSink()
    out = env.run()
    assert out.exit_code == 0
    assert out.counts[B] == 3000 and B in load_state(env.cfg.state)
    assert out.notes and "local counts used" in out.status
    status = (tmp_path / "connwatch.status").read_text()
    assert status.startswith("CRITICAL") and "shared counts unavailable" in status


def test_database_down_alone_is_a_warning(tmp_path):
    env = Env(tmp_path)
    write_log(env.log, {"192.0.2.50": 3})
    env.deps.sink = _DownSink()
    out = env.run()
    assert out.status.startswith("WARNING - inbound gw1: 1 clients, busiest 192.0.2.50")
    assert "shared counts unavailable, local counts used (mysql://gw1:***@" in out.status


def test_after_a_reload_the_admins_mail_waits_for_sendmail_to_listen_again(tmp_path):
    # sendmail execs itself again on the reload's SIGHUP and does not listen for a moment: a
    # mail submitted then waited 20-30 minutes in the submission queue (seen on the lab).
    env = Env(tmp_path)
    events = []
    env.deps.mta_ready = lambda timeout: events.append(("ready", timeout)) or True
    env.deps.mailer = lambda argv, msg: events.append(("mail", argv[0])) or (0, "")
    write_log(env.log, {B: 3000})
    assert env.run().reloaded
    assert events == [("ready", 30.0), ("mail", "/usr/sbin/sendmail")]
    # No reload (an alert only): no wait.
    events.clear()
    write_log(env.log, {B: 3000, A: 600})
    out = env.run(NOW + 60)
    assert not out.reloaded and out.decisions
    assert events == [("mail", "/usr/sbin/sendmail")]


def test_a_sendmail_that_never_listens_again_still_gets_the_mail_after_the_wait(tmp_path, caplog):
    env = Env(tmp_path)
    sent = []
    env.deps.mta_ready = lambda timeout: False
    env.deps.mailer = lambda argv, msg: sent.append(msg) or (0, "")
    write_log(env.log, {B: 3000})
    caplog.set_level(logging.WARNING, logger="passerelle.test.connwatch")
    assert env.run().reloaded
    assert len(sent) == 1  # queued by the submission program, not lost
    assert "did not accept connections within 30 s" in caplog.text


def test_mta_listening_sees_a_listening_port_and_gives_up_on_a_closed_one():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    assert mta_listening(5, ("127.0.0.1", port))
    srv.close()
    now = [0.0]
    slept = []

    def sleep(s):
        slept.append(s)
        now[0] += s

    assert not mta_listening(2, ("127.0.0.1", port), clock=lambda: now[0], sleep=sleep)
    assert slept and sum(slept) <= 2
