"""The gateway's status snapshot (``console.gateway_status``): collected with injected probes
(no real systemctl), a probe that fails is "unknown" with its reason and the others go on,
stored one row per gateway (upserted) on SQLite and MariaDB, stale after 3 timer periods."""

from __future__ import annotations

import io
import json
import os
import sqlite3
from pathlib import Path

import pytest
import yaml

from passerelle.antivirus.outbreak import OutbreakStore
from passerelle.antivirus.quarantine import Quarantine
from passerelle.console.gateway_status import (
    FACTS,
    STALE_AFTER,
    SYNC_PERIOD,
    Fact,
    GatewayStatus,
    GatewayStatusTable,
    collect,
    gateway_probes,
    status_from_json,
    status_to_json,
)

ROOT = Path(__file__).resolve().parents[3]
T0 = 1_764_633_600.0


SHOW = (
    "Id=sendmail.service\nLoadState=loaded\nActiveState=active\nSubState=running\n\n"
    "Id=passerelle-spam.service\nLoadState=loaded\nActiveState=failed\nSubState=failed\n\n"
    "Id=mariadb.service\nLoadState=not-found\nActiveState=inactive\nSubState=dead\n\n"
    "Id=passerelle-connwatch.timer\nLoadState=loaded\nActiveState=active\nSubState=waiting\n"
)


class Systemctl:
    """Stands for ``systemctl show``: records the command, answers ``out``."""

    def __init__(self, rc: int = 0, out: str = SHOW) -> None:
        self.rc, self.out = rc, out
        self.calls: list[list[str]] = []

    def __call__(self, argv):
        self.calls.append(list(argv))
        return self.rc, self.out


def ops_toml(tmp_path: Path, **paths: object) -> str:
    queues = paths.get("queues", [str(tmp_path / "mqueue"), str(tmp_path / "mqueue-client")])
    text = (
        "[ops]\n"
        'hostname = "gw1"\n'
        f"queue_dirs = {json.dumps(queues)}\n"
        'units = ["sendmail", "passerelle-spam", "mariadb"]\n'
        f'signature_dir = "{paths.get("signatures", tmp_path / "clamav")}"\n'
    )
    path = tmp_path / "ops.toml"
    path.write_text(text)
    return str(path)


def hold(q: Quarantine, reason: str) -> str:
    item = q.store(
        io.BytesIO(b"Subject: x\r\n\r\nbody\r\n"),
        sender="m@evil.example",
        recipients=["alice@example.org"],
        client_ip="192.0.2.7",
        client_host="mx.evil.example",
        reason=reason,
        detail="outbreak mode" if reason == "outbreak" else "Eicar",
        direction="inbound",
        size=20,
    )
    return item.id


# -- collection ----------------------------------------------------------------------------


def test_a_failing_probe_is_unknown_with_its_reason_and_the_others_go_on():
    def broken():
        raise OSError(13, "Permission denied")

    s = collect("gw1", T0, {"queues": broken, "outbreak_held": lambda: 3})
    assert s.gateway == "gw1" and s.reported_at == T0
    assert s.fact("outbreak_held") == Fact(3)
    assert not s.fact("queues").known
    assert "Permission denied" in s.fact("queues").unknown
    # a fact no probe reported is unknown too, never missing
    assert s.fact("daemons").unknown == "not reported"


def test_probes_reuse_status_and_read_queues_signatures_and_outbreak(tmp_path):
    (tmp_path / "mqueue").mkdir()
    for name in ("qfA1", "qfA2", "dfA1"):
        (tmp_path / "mqueue" / name).write_text("")
    (tmp_path / "clamav").mkdir()
    (tmp_path / "clamav" / "daily.cld").write_text("")
    os.utime(tmp_path / "clamav" / "daily.cld", (T0 - 3600, T0 - 3600))
    store = OutbreakStore(tmp_path / "outbreak.json", clock=lambda: T0 - 60)
    store.set(True, by="console request #3 by admin", reason="console")
    q = Quarantine(tmp_path / "q", clock=lambda: T0)
    hold(q, "outbreak")
    hold(q, "outbreak")
    hold(q, "signature")
    systemctl = Systemctl()

    s = collect("gw1", T0, gateway_probes(ops_toml(tmp_path), store, q, runner=systemctl))

    # the units of ops.toml (as passerelle status shows them) and the connection guard's timer
    (argv,) = systemctl.calls
    assert argv[:2] == ["systemctl", "show"]
    assert argv[-4:] == ["sendmail", "passerelle-spam", "mariadb", "passerelle-connwatch.timer"]
    assert s.fact("daemons").value == [
        {"unit": "sendmail", "active": "active", "sub": "running"},
        {"unit": "passerelle-spam", "active": "failed", "sub": "failed"},
        {"unit": "passerelle-connwatch.timer", "active": "active", "sub": "waiting"},
    ]
    # a queue folder that does not exist on this host is left out, as passerelle status does
    assert s.fact("queues").value == {str(tmp_path / "mqueue"): 2}
    assert s.fact("signatures").value == {"file": "daily.cld", "updated": T0 - 3600}
    outbreak = s.fact("outbreak").value
    assert outbreak["on"] is True and outbreak["since"] == T0 - 60
    assert outbreak["by"] == "console request #3 by admin"
    assert s.fact("outbreak_held").value == 2
    assert set(s.facts) == set(FACTS)


def test_what_cannot_be_probed_is_unknown_with_why(tmp_path):
    store = OutbreakStore(tmp_path / "outbreak.json")
    q = Quarantine(tmp_path / "q")
    ops = ops_toml(tmp_path, queues=[str(tmp_path / "none")], signatures=tmp_path / "empty")
    s = collect("gw1", T0, gateway_probes(ops, store, q, runner=Systemctl(1, "Access denied")))
    assert "systemctl show failed (1): Access denied" in s.fact("daemons").unknown
    assert "no queue folder" in s.fact("queues").unknown
    assert "no signature file" in s.fact("signatures").unknown
    # no state file: outbreak mode is off; nothing held
    assert s.fact("outbreak").value["on"] is False
    assert s.fact("outbreak_held").value == 0


def test_an_unreadable_ops_config_makes_its_facts_unknown_not_the_pass_fail(tmp_path):
    store = OutbreakStore(tmp_path / "outbreak.json")
    systemctl = Systemctl()
    s = collect(
        "gw1",
        T0,
        gateway_probes(
            str(tmp_path / "missing.toml"), store, Quarantine(tmp_path / "q"), systemctl
        ),
    )
    for name in ("daemons", "queues", "signatures"):
        assert "missing.toml" in s.fact(name).unknown and "file not found" in s.fact(name).unknown
    assert systemctl.calls == []
    assert s.fact("outbreak").known and s.fact("outbreak_held").known


# -- staleness and the stored form -----------------------------------------------------------


def test_stale_after_three_timer_periods():
    s = GatewayStatus("gw1", T0, {})
    assert STALE_AFTER == 3 * SYNC_PERIOD
    assert s.age(T0 + 10) == 10
    assert not s.stale(T0 + STALE_AFTER)
    assert s.stale(T0 + STALE_AFTER + 1)
    assert s.age(T0 - 30) == 0  # a gateway's clock ahead of ours: not negative


def test_the_timer_period_is_the_roles():
    """SYNC_PERIOD is the period of the role's passerelle-console-sync.timer."""
    defaults = yaml.safe_load((ROOT / "roles/console/defaults/main.yml").read_text())
    periods = {"minutely": 60.0, "*:*:0/30": 30.0, "*-*-* *:*:00/30": 30.0}
    assert periods[defaults["console_gateway_on_calendar"]] == SYNC_PERIOD


def test_stored_form_round_trips_and_a_bad_one_is_unknown():
    s = collect("gw1", T0, {"outbreak_held": lambda: 1, "queues": lambda: 1 / 0})
    again = status_from_json("gw1", T0, status_to_json(s))
    assert again == s
    bad = status_from_json("gw1", T0, "{not json")
    assert all("unreadable" in bad.fact(n).unknown for n in FACTS)
    # a fact this code does not know is dropped; an unknown reason is bounded
    doc = json.dumps({"x": {"value": 1}, "queues": {"unknown": "e" * 5000}})
    odd = status_from_json("gw1", T0, doc)
    assert "x" not in odd.facts and len(odd.fact("queues").unknown) <= 300


# -- the table, on each dialect ---------------------------------------------------------------


def test_gateway_status_table(conn):
    t = GatewayStatusTable(conn)
    assert t.migrate() == (0, 1)
    assert t.migrate() == (1, 1)
    assert t.all() == [] and t.gateways() == []
    first = collect("gw2", T0, {"outbreak_held": lambda: 0, "queues": lambda: {"/q": 1}})
    t.upsert(first)
    t.upsert(collect("gw1", T0, {"outbreak_held": lambda: 5}))
    later = collect("gw2", T0 + 60, {"outbreak_held": lambda: 2, "queues": lambda: 1 / 0})
    t.upsert(later)  # one row per gateway: replaced
    t.upsert(later)  # the same report again: still one row, unchanged
    assert t.gateways() == ["gw1", "gw2"]
    got = t.all()
    assert [s.gateway for s in got] == ["gw1", "gw2"]
    assert got[1] == later and got[1].fact("queues").unknown.startswith("ZeroDivisionError")
    assert t.get("gw1").fact("outbreak_held").value == 5
    assert t.get("gw3") is None


def test_a_malformed_gateway_name_is_refused():
    with pytest.raises(ValueError):
        collect("gw 1; DROP", T0, {})
    c = sqlite3.connect(":memory:", isolation_level=None)
    try:
        t = GatewayStatusTable(c)
        t.migrate()
        with pytest.raises(ValueError):
            t.upsert(GatewayStatus("gw 1; DROP", T0, {}))
    finally:
        c.close()


# -- the gateway-sync pass ----------------------------------------------------------------------


def sync_config(tmp_path: Path, ops: str) -> str:
    (tmp_path / "antivirus.toml").write_text(
        f'[antivirus]\noutbreak_state = "{tmp_path}/outbreak.json"\n'
    )
    path = tmp_path / "gateway.toml"
    path.write_text(
        f'[gateway_sync]\ndatabase = "sqlite:///{tmp_path}/console.sqlite"\ngateway = "gw1"\n'
        f'quarantine_dir = "{tmp_path}/q"\nantivirus_config = "{tmp_path}/antivirus.toml"\n'
        f'runtime_rules = "{tmp_path}/rules.json"\nruntime_rules_group = ""\n'
        f'ops_config = "{ops}"\n'
    )
    return str(path)


def stored(tmp_path: Path) -> GatewayStatus | None:
    c = sqlite3.connect(str(tmp_path / "console.sqlite"), isolation_level=None)
    try:
        return GatewayStatusTable(c).get("gw1")
    finally:
        c.close()


def test_a_gateway_sync_pass_publishes_this_gateways_status(tmp_path, capsys):
    from passerelle.cli import main

    (tmp_path / "mqueue").mkdir()
    (tmp_path / "mqueue" / "qfX").write_text("")
    ops = ops_toml(tmp_path)
    # no unit: no systemctl is run by the test
    Path(ops).write_text(
        Path(ops)
        .read_text()
        .replace('units = ["sendmail", "passerelle-spam", "mariadb"]', "units = []")
    )
    assert main(["console", "gateway-sync", "--config", sync_config(tmp_path, ops)]) == 0
    assert "status not published" not in capsys.readouterr().out
    s = stored(tmp_path)
    assert s is not None and s.fact("queues").value == {str(tmp_path / "mqueue"): 1}
    assert s.fact("outbreak").value["on"] is False and s.fact("outbreak_held").value == 0
    assert "no signature file" in s.fact("signatures").unknown


def test_a_status_that_cannot_be_stored_is_said_and_the_pass_went_on(tmp_path, capsys, monkeypatch):
    from passerelle.cli import main

    def refused(self, status):
        raise OSError("the database refused it")

    monkeypatch.setattr(GatewayStatusTable, "upsert", refused)
    path = sync_config(tmp_path, str(tmp_path / "missing-ops.toml"))
    assert main(["console", "gateway-sync", "--config", path]) == 1
    out = capsys.readouterr().out
    assert "status not published" in out and "requests 0 done" in out
    assert (tmp_path / "rules.json").exists()  # the runtime rules were still written


def test_gateway_sync_ops_config_must_be_absolute(tmp_path):
    from passerelle.config import ConfigError
    from passerelle.console.gateway_sync import load_config

    with pytest.raises(ConfigError, match=r"gateway_sync\.ops_config"):
        load_config(sync_config(tmp_path, "ops.toml"))
    assert load_config(sync_config(tmp_path, "/etc/x/ops.toml")).ops_config == "/etc/x/ops.toml"
