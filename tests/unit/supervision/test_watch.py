"""Process watch: restarts recorded, down units started after the grace, state file."""

import json

import pytest

from passerelle.config import ConfigError
from passerelle.supervision import watch
from passerelle.supervision.watch import UnitStatus, WatchState, plan

T = 1_800_000_000.0


def st(unit, active="active", nrestarts=0, load="loaded", sub="running", tasks=None):
    return UnitStatus(unit, load, active, sub, nrestarts, tasks)


def test_systemd_restarts_become_events():
    prev = WatchState(nrestarts={"spamd.service": 1})
    p = plan(prev, [st("spamd.service", nrestarts=3)], T, 60, 86400)
    assert [e["kind"] for e in p.new_events] == ["systemd-restart", "systemd-restart"]
    assert p.state.nrestarts == {"spamd.service": 3}
    assert p.start == ()


def test_first_run_records_counter_without_events():
    p = plan(WatchState(), [st("spamd.service", nrestarts=5)], T, 60, 86400)
    assert p.new_events == () and p.state.nrestarts["spamd.service"] == 5


def test_down_unit_started_only_after_grace():
    units = [st("spamd.service", active="inactive", sub="dead")]
    p1 = plan(WatchState(), units, T, 60, 86400)
    assert p1.start == () and p1.waiting == ("spamd.service",)
    p2 = plan(p1.state, units, T + 30, 60, 86400)
    assert p2.start == () and p2.state.down["spamd.service"] == T
    p3 = plan(p2.state, units, T + 61, 60, 86400)
    assert p3.start == ("spamd.service",)
    assert p3.new_events[0]["kind"] == "watch-start"
    assert "spamd.service" not in p3.state.down


def test_unit_back_up_resets_down_and_failed_counts():
    p1 = plan(WatchState(), [st("x.service", active="failed")], T, 60, 86400)
    p2 = plan(p1.state, [st("x.service")], T + 30, 60, 86400)
    assert p2.state.down == {}
    p3 = plan(p2.state, [st("x.service", active="failed")], T + 90, 60, 86400)
    assert p3.start == ()  # down again: a new grace starts


def test_masked_or_missing_units_are_left_alone():
    units = [st("a.service", active="inactive", load="masked"), st("b.service", load="not-found")]
    p = plan(WatchState(down={"a.service": T - 999}), units, T, 60, 86400)
    assert p.start == () and p.state.down == {}


def test_old_events_dropped():
    prev = WatchState(events=[{"unit": "a", "time": T - 90000}, {"unit": "a", "time": T - 10}])
    assert len(plan(prev, [], T, 60, 86400).state.events) == 1


def test_parse_show():
    s = watch.parse_show(
        "spamd.service", "LoadState=loaded\nActiveState=failed\nSubState=failed\nNRestarts=2\n"
    )
    assert s.down and s.nrestarts == 2


def test_config_errors_name_the_key(tmp_path):
    f = tmp_path / "w.toml"
    f.write_text("[watch]\nunits = []\n")
    with pytest.raises(ConfigError, match=r"watch\.units"):
        watch.load_config(f)
    f.write_text('[watch]\nunits = ["spamd"]\ngrace = "soon"\n')
    with pytest.raises(ConfigError, match=r"watch\.grace"):
        watch.load_config(f)
    f.write_text('[watch]\nunits = ["spamd", "a.timer"]\nstate = "/x"\n')
    assert watch.load_config(f).units == ("spamd.service", "a.timer")


def test_run_once_starts_and_writes_state(tmp_path):
    cfg = watch.WatchConfig(
        units=("spamd.service", "sendmail.service"), state=str(tmp_path / "s.json"), grace=60
    )
    calls = []
    down = {"spamd.service"}

    def runner(argv, stdin):
        calls.append(list(argv))
        if argv[1] == "show":
            a = "inactive" if argv[-1] in down else "active"
            return 0, f"LoadState=loaded\nActiveState={a}\nSubState=dead\nNRestarts=0\n"
        if argv[1] == "start":
            down.discard(argv[-1])
        return 0, ""

    r1 = watch.run_once(cfg, T, runner)
    assert r1.started == [] and r1.waiting == ["spamd.service"]
    r2 = watch.run_once(cfg, T + 60, runner)
    assert r2.started == ["spamd.service"]
    assert ["/usr/bin/systemctl", "start", "spamd.service"] in calls
    doc = json.loads((tmp_path / "s.json").read_text())
    assert doc["events"][0]["unit"] == "spamd.service" and doc["down"] == {}


def test_run_once_failed_start_retries_later(tmp_path):
    cfg = watch.WatchConfig(units=("x.service",), state=str(tmp_path / "s.json"), grace=60)

    def runner(argv, stdin):
        if argv[1] == "show":
            return 0, "LoadState=loaded\nActiveState=failed\nSubState=failed\nNRestarts=0\n"
        return (1, "start-limit-hit") if argv[1] == "start" else (0, "")

    watch.run_once(cfg, T, runner)
    r = watch.run_once(cfg, T + 60, runner)
    assert r.failed == ["x.service"]
    assert json.loads((tmp_path / "s.json").read_text())["down"] == {"x.service": T + 60}


def test_daemon_unit_active_but_exited_is_down():
    # A unit generated from an init script (RemainAfterExit) stays "active (exited)" when its
    # daemon is killed: nothing runs, so the watch must see it down.
    units = [st("slapd.service", active="active", sub="exited", tasks=0)]
    p1 = plan(WatchState(), units, T, 60, 86400)
    assert p1.waiting == ("slapd.service",)
    p2 = plan(p1.state, units, T + 60, 60, 86400)
    assert p2.start == ("slapd.service",)
    # The same state with a process left in the unit (RemainAfterExit=yes with its daemon
    # running), or without tasks accounting, is not down: nothing is known to be dead.
    for tasks in (1, None):
        alive = [st("slapd.service", active="active", sub="exited", tasks=tasks)]
        assert plan(WatchState(), alive, T, 60, 86400).waiting == ()


def test_run_once_restarts_an_active_but_exited_unit(tmp_path):
    # "systemctl start" does nothing on an active unit: it must be restarted.
    cfg = watch.WatchConfig(units=("slapd.service",), state=str(tmp_path / "s.json"), grace=60)
    calls = []
    sub = {"slapd.service": "exited"}

    def runner(argv, stdin):
        calls.append(list(argv))
        if argv[1] == "show":
            n = 0 if sub[argv[-1]] == "exited" else 2
            return 0, (
                f"LoadState=loaded\nActiveState=active\nSubState={sub[argv[-1]]}\n"
                f"TasksCurrent={n}\n"
            )
        if argv[1] == "restart":
            sub[argv[-1]] = "running"
        return 0, ""

    watch.run_once(cfg, T, runner)
    r = watch.run_once(cfg, T + 60, runner)
    assert r.started == ["slapd.service"]
    assert ["/usr/bin/systemctl", "restart", "slapd.service"] in calls
    assert ["/usr/bin/systemctl", "start", "slapd.service"] not in calls
    assert watch.run_once(cfg, T + 120, runner).waiting == []


def test_run_once_counts_processes_without_tasks_accounting(tmp_path):
    # In containers (cgroup v1/hybrid) TasksCurrent is "[not set]": the cgroup is read.
    cfg = watch.WatchConfig(units=("slapd.service",), state=str(tmp_path / "s.json"), grace=60)
    show = (
        "LoadState=loaded\nActiveState=active\nSubState=exited\nTasksCurrent=[not set]\n"
        "ControlGroup=/system.slice/slapd.service\n"
    )
    procs = {"/system.slice/slapd.service": 0}
    r = watch.run_once(cfg, T, lambda a, s: (0, show), count_procs=procs.get)
    assert r.waiting == ["slapd.service"]
    procs["/system.slice/slapd.service"] = 3
    (tmp_path / "s.json").unlink()
    r = watch.run_once(cfg, T, lambda a, s: (0, show), count_procs=procs.get)
    assert r.waiting == []


def test_count_cgroup_procs(tmp_path):
    (tmp_path / "unified" / "system.slice" / "x.service").mkdir(parents=True)
    (tmp_path / "unified" / "system.slice" / "x.service" / "cgroup.procs").write_text("12\n13\n")
    roots = (str(tmp_path), str(tmp_path / "unified"))
    assert watch.count_cgroup_procs("/system.slice/x.service", roots) == 2
    assert watch.count_cgroup_procs("/system.slice/y.service", roots) is None
    assert watch.count_cgroup_procs("/../etc", roots) is None
