"""The gateway's side of the console on SQLite, with a quarantine written by the milter's own
writer (``Quarantine.store``): indexing, and release/delete/rescan requests each done once."""

from __future__ import annotations

import io
import logging
import sqlite3
import subprocess
from pathlib import Path

import pytest

from passerelle.antivirus.clamd import ScanResult
from passerelle.antivirus.quarantine import Item, Quarantine
from passerelle.config import ConfigError
from passerelle.console.gateway import carry_out, index_quarantine
from passerelle.console.gateway_sync import load_config
from passerelle.console.quarantine_index import NotFound, QuarantineIndex
from passerelle.console.requests import RequestTable

GW = "gw1"
T0 = 1_764_633_600.0  # 2025-12-02T00:00:00Z

RAW = (
    b"From: Mallory <mallory@evil.example>\r\n"
    b"To: alice@example.org\r\n"
    b"Subject: =?utf-8?q?Facture_=C3=A9chue?=\r\n"
    b"Message-ID: <m1@evil.example>\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="b1"\r\n'
    b"\r\n"
    b"--b1\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n"
    b"--b1\r\nContent-Type: application/octet-stream\r\n"
    b'Content-Disposition: attachment; filename="invoice.exe"\r\n'
    b"Content-Transfer-Encoding: base64\r\n\r\nTVqQAAMAAAAEAAAA\r\n"
    b"--b1--\r\n"
)


class Runner:
    """Stands for sendmail in ``Quarantine.release`` (the release path): records each call."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, cmd, input, **kw):
        self.calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 0, b"", b"")


class Scanner:
    def __init__(self, result: ScanResult) -> None:
        self.result = result
        self.scanned: list[bytes] = []

    def __call__(self, data: bytes) -> ScanResult:
        self.scanned.append(data)
        return self.result


@pytest.fixture
def db():
    c = sqlite3.connect(":memory:", isolation_level=None)
    index, requests = QuarantineIndex(c), RequestTable(c)
    index.migrate()
    requests.migrate()
    yield index, requests
    c.close()


@pytest.fixture
def runner() -> Runner:
    return Runner()


@pytest.fixture
def quarantine(tmp_path: Path, runner: Runner) -> Quarantine:
    return Quarantine(tmp_path / "q", clock=lambda: T0, runner=runner)


def hold(q: Quarantine, reason: str = "signature", detail: str = "Eicar-Test-Signature", **kw):
    meta = {
        "sender": "mallory@evil.example",
        "recipients": ["alice@example.org", "bob@example.org"],
        "client_ip": "192.0.2.7",
        "client_host": "mx.evil.example",
        "reason": reason,
        "detail": detail,
        "direction": "inbound",
        "size": len(RAW),
        "queue_id": "5B2AQ1",
    }
    meta.update(kw)
    return q.store(io.BytesIO(RAW), **meta)


def release_path(q: Quarantine):
    return lambda item_id, by: q.release(item_id, by=by)


def never_scan(data: bytes) -> ScanResult:
    raise AssertionError("no rescan expected")


def run(db, q: Quarantine, reinject=None, rescan=never_scan, limit: int = 50):
    index, requests = db
    return carry_out(requests, q, index, GW, T0 + 60, reinject or release_path(q), rescan, limit)


# -- indexing ----------------------------------------------------------------------------


def test_index_new_items_with_headers_parts_and_reason(db, quarantine):
    index, _ = db
    virus = hold(quarantine)
    rule = hold(quarantine, reason="rule", detail="exe: attachment type")
    odd = hold(quarantine, reason="uninspectable", detail="too deep")
    counts = index_quarantine(quarantine, index, GW, T0)
    assert (counts.indexed, counts.updated, counts.unchanged, counts.skipped) == (3, 0, 0, 0)
    row = index.get(GW, virus.id)
    assert row.sender == "mallory@evil.example"
    assert row.recipients == ("alice@example.org", "bob@example.org")
    assert row.subject == "Facture échue"
    assert row.message_id == "<m1@evil.example>"
    assert (row.reason, row.rule, row.state) == ("virus", "Eicar-Test-Signature", "held")
    assert (row.size, row.held_at, row.queue_id) == (len(RAW), T0, "5B2AQ1")
    assert "Subject: =?utf-8?q?Facture_=C3=A9chue?=" in row.headers
    assert "see attached" not in row.headers  # the header block only
    assert ("invoice.exe", "application/octet-stream") in [(p.name, p.type) for p in row.parts]
    assert "text/plain" in [p.type for p in row.parts]
    assert index.get(GW, rule.id).reason == "rule"
    assert (index.get(GW, odd.id).reason, index.get(GW, odd.id).rule) == (
        "rule",
        "uninspectable: too deep",
    )


def test_index_second_pass_changes_nothing_then_sees_a_change(db, quarantine):
    index, _ = db
    item = hold(quarantine, reason="outbreak", detail="attachment held in outbreak mode")
    hold(quarantine)
    index_quarantine(quarantine, index, GW, T0)
    counts = index_quarantine(quarantine, index, GW, T0 + 1)
    assert (counts.indexed, counts.updated, counts.unchanged, counts.skipped) == (0, 0, 2, 0)
    quarantine.update_reason(item.id, "signature", "Win.Worm.X", by="outbreak release-held")
    counts = index_quarantine(quarantine, index, GW, T0 + 2)
    assert (counts.indexed, counts.updated, counts.unchanged) == (0, 1, 1)
    assert (index.get(GW, item.id).reason, index.get(GW, item.id).rule) == ("virus", "Win.Worm.X")


def test_index_skips_and_counts_malformed_entries(db, quarantine, caplog):
    index, _ = db
    good = hold(quarantine)
    no_rcpt = hold(quarantine, recipients=[])
    qdir = quarantine.dir
    (qdir / "20251202T000000-00000000beef.json").write_text("{broken")
    (qdir / "not-an-id.json").write_text("{}")
    with caplog.at_level(logging.WARNING, logger="passerelle.console.gateway"):
        counts = index_quarantine(quarantine, index, GW, T0)
    assert (counts.indexed, counts.skipped) == (1, 3)
    assert index.get(GW, good.id).state == "held"
    with pytest.raises(NotFound):
        index.get(GW, no_rcpt.id)
    skipped = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert len(skipped) == 3
    assert any("not-an-id.json" in m and "not a quarantine id" in m for m in skipped)


def test_index_of_a_missing_quarantine_is_empty(db, tmp_path):
    index, _ = db
    counts = index_quarantine(Quarantine(tmp_path / "none"), index, GW, T0)
    assert (counts.indexed, counts.skipped) == (0, 0)


def test_index_marks_deleted_what_left_the_quarantine_not_what_it_cannot_read(db, quarantine):
    index, _ = db
    purged, unreadable, kept = hold(quarantine), hold(quarantine), hold(quarantine)
    index_quarantine(quarantine, index, GW, T0)
    quarantine.delete(purged.id, by="purge")
    (quarantine.dir / f"{unreadable.id}.json").write_text("{broken")
    counts = index_quarantine(quarantine, index, GW, T0 + 1)
    assert (counts.vanished, counts.skipped, counts.unchanged) == (1, 1, 1)
    assert index.get(GW, purged.id).state == "deleted"
    assert index.get(GW, unreadable.id).state == "held"
    assert index.get(GW, kept.id).state == "held"
    assert index_quarantine(quarantine, index, GW, T0 + 2).vanished == 0


def test_index_leaves_another_gateways_rows_alone(db, quarantine, tmp_path):
    index, _ = db
    item = hold(quarantine)
    index_quarantine(quarantine, index, "gw2", T0)
    (tmp_path / "empty").mkdir()
    assert index_quarantine(Quarantine(tmp_path / "empty"), index, GW, T0 + 1).vanished == 0
    assert index.get("gw2", item.id).state == "held"


# -- requests ----------------------------------------------------------------------------


def test_release_is_done_once_to_the_original_recipients(db, quarantine, runner):
    index, requests = db
    item = hold(quarantine)
    index_quarantine(quarantine, index, GW, T0)
    rid = requests.submit("release", item.id, GW, "admin", T0 + 30)
    counts = run(db, quarantine)
    assert (counts.done, counts.failed) == (1, 0)
    assert len(runner.calls) == 1
    cmd = runner.calls[0]
    assert cmd[cmd.index("--") + 1 :] == ["alice@example.org", "bob@example.org"]
    assert cmd[cmd.index("-f") + 1] == "mallory@evil.example"
    req = requests.get(rid)
    assert (req.status, req.ok, req.result) == ("done", True, "ok: released to 2 recipient(s)")
    assert index.get(GW, item.id).state == "released"
    assert quarantine.get(item.id).released is True
    assert requests.target_state(item.id) == ("released", 0)
    # nothing left to claim: a second pass reinjects nothing
    assert (run(db, quarantine).done, run(db, quarantine).failed) == (0, 0)
    assert requests.claim(GW, T0 + 120) is None
    assert len(runner.calls) == 1


def test_release_claimed_again_after_a_crash_is_not_reinjected_twice(db, quarantine, runner):
    index, requests = db
    item = hold(quarantine)
    rid = requests.submit("release", item.id, GW, "admin", T0)
    requests.claim(GW, T0)  # a gateway that died after claiming, before completing...
    quarantine.release(item.id, by="crashed pass")  # ...but after re-injecting
    assert len(runner.calls) == 1
    index_, requests_ = index, RequestTable(requests.conn, claim_timeout=10)
    counts = carry_out(
        requests_, quarantine, index_, GW, T0 + 60, release_path(quarantine), never_scan
    )
    assert (counts.done, counts.failed) == (1, 0)
    assert len(runner.calls) == 1
    assert requests.get(rid).result == "ok: it was already released"
    assert index.get(GW, item.id).state == "released"  # indexed on the way


def test_delete_removes_the_item_and_marks_it_deleted(db, quarantine, runner):
    index, requests = db
    item = hold(quarantine)
    index_quarantine(quarantine, index, GW, T0)
    rid = requests.submit("delete", item.id, GW, "admin", T0)
    assert run(db, quarantine).done == 1
    assert not quarantine.message_path(item.id).exists()
    assert list(quarantine.dir.glob("*.json")) == []
    assert index.get(GW, item.id).state == "deleted"
    assert (requests.get(rid).status, requests.get(rid).result) == ("done", "ok: deleted")
    assert runner.calls == []


def test_rescan_clean_releases(db, quarantine, runner):
    index, requests = db
    item = hold(quarantine, reason="outbreak", detail="attachment held in outbreak mode")
    index_quarantine(quarantine, index, GW, T0)
    rid = requests.submit("rescan", item.id, GW, "admin", T0)
    scan = Scanner(ScanResult("clean"))
    assert run(db, quarantine, rescan=scan).done == 1
    assert scan.scanned == [RAW]
    assert len(runner.calls) == 1
    assert requests.get(rid).result == "ok: clean, released to 2 recipient(s)"
    assert index.get(GW, item.id).state == "released"
    assert requests.target_state(item.id) == ("released", 0)


def test_rescan_infected_stays_held_with_its_signature(db, quarantine, runner):
    index, requests = db
    item = hold(quarantine, reason="outbreak", detail="attachment held in outbreak mode")
    index_quarantine(quarantine, index, GW, T0)
    rid = requests.submit("rescan", item.id, GW, "admin", T0)
    assert run(db, quarantine, rescan=Scanner(ScanResult("infected", "Win.Worm.X"))).done == 1
    assert runner.calls == []
    req = requests.get(rid)
    assert (req.ok, req.result) == (True, "ok: infected (Win.Worm.X): stays held")
    row = index.get(GW, item.id)
    assert (row.state, row.reason, row.rule) == ("held", "virus", "Win.Worm.X")
    assert quarantine.get(item.id).released is False
    assert requests.target_state(item.id) == ("held", 0)


def test_rescan_that_fails_keeps_the_message_and_says_why(db, quarantine, runner):
    _, requests = db
    item = hold(quarantine, reason="outbreak", detail="held")
    rid = requests.submit("rescan", item.id, GW, "admin", T0)
    counts = run(db, quarantine, rescan=Scanner(ScanResult("error", detail="clamd down")))
    assert (counts.done, counts.failed) == (0, 1)
    assert requests.get(rid).result == "failed: rescan failed (error): clamd down: stays held"
    assert runner.calls == []
    assert quarantine.get(item.id).released is False


def test_request_for_a_message_this_gateway_lacks_fails_clearly(db, quarantine, runner):
    _, requests = db
    missing = "20251202T000000-0123456789ab"
    rid = requests.submit("release", missing, GW, "admin", T0)
    counts = run(db, quarantine)
    assert (counts.done, counts.failed) == (0, 1)
    req = requests.get(rid)
    assert (req.status, req.ok) == ("failed", False)
    assert req.result == f"failed: {missing} is not in this gateway's quarantine"
    assert runner.calls == []
    assert requests.target_state(missing) == ("held", 0)  # open for another request


def test_a_failing_request_does_not_stop_the_next(db, quarantine, runner):
    index, requests = db
    first, second, third = hold(quarantine), hold(quarantine), hold(quarantine)
    index_quarantine(quarantine, index, GW, T0)
    reinjected: list[str] = []

    def reinject(item_id: str, by: str) -> Item:
        if item_id == first.id:
            raise OSError("sendmail: queue full")
        reinjected.append(item_id)
        return quarantine.release(item_id, by=by)

    r1 = requests.submit("release", first.id, GW, "admin", T0)
    r2 = requests.submit("release", second.id, GW, "admin", T0)
    r3 = requests.submit("delete", third.id, GW, "admin", T0)
    counts = run(db, quarantine, reinject=reinject)
    assert (counts.done, counts.failed) == (2, 1)
    assert (requests.get(r1).status, requests.get(r1).result) == (
        "failed",
        "failed: OSError: sendmail: queue full",
    )
    assert index.get(GW, first.id).state == "held"
    assert requests.target_state(first.id) == ("held", 0)  # can be asked again
    assert reinjected == [second.id]
    assert requests.get(r2).status == requests.get(r3).status == "done"
    assert index.get(GW, third.id).state == "deleted"


def test_a_pass_is_bounded(db, quarantine):
    _, requests = db
    items = [hold(quarantine) for _ in range(3)]
    rids = [requests.submit("delete", i.id, GW, "admin", T0) for i in items]
    assert run(db, quarantine, limit=2).done == 2
    assert [requests.get(r).status for r in rids] == ["done", "done", "pending"]


def test_other_gateways_requests_are_left_alone(db, quarantine):
    _, requests = db
    item = hold(quarantine)
    rid = requests.submit("delete", item.id, "gw2", "admin", T0)
    assert run(db, quarantine).done == 0
    assert requests.get(rid).status == "pending"
    assert quarantine.get(item.id).id == item.id


# -- config ------------------------------------------------------------------------------


def write(tmp_path: Path, text: str) -> str:
    p = tmp_path / "gw.toml"
    p.write_text(text)
    return str(p)


def test_config_reads_the_database_url_and_the_gateway(tmp_path):
    cfg = load_config(
        write(
            tmp_path,
            '[gateway_sync]\ndatabase = "mysql://pc:s%40cret@db1/console"\n'
            'gateway = "gw1.example.org"\nquarantine_dir = "/var/q"\nlimit = 10\n',
        )
    )
    assert (cfg.database.scheme, cfg.database.password, cfg.database.host) == (
        "mysql",
        "s@cret",
        "db1",
    )
    assert (cfg.gateway, cfg.quarantine_dir, cfg.limit) == ("gw1.example.org", "/var/q", 10)


@pytest.mark.parametrize(
    ("body", "key"),
    [
        ('database = "postgres://x/y"\ngateway = "gw1"', "gateway_sync.database"),
        ('database = "sqlite:///x"\ngateway = "gw 1"', "gateway_sync.gateway"),
        ('gateway = "gw1"', "gateway_sync.database"),
        ('database = "sqlite:///x"\ngateway = "gw1"\nquarantine_dir = "q"', "quarantine_dir"),
        ('database = "sqlite:///x"\ngateway = "gw1"\nlimit = 0', "gateway_sync.limit"),
        ('database = "sqlite:///x"\ngateway = "gw1"\ntypo = 1', "typo"),
        ('database = "sqlite:///x"\ngateway = "gw1"\nruntime_rules = "r.json"', "runtime_rules"),
    ],
)
def test_bad_config_names_the_key(tmp_path, body, key):
    path = write(tmp_path, f"[gateway_sync]\n{body}\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert key in str(err.value)
    assert path in str(err.value)


def test_gateway_sync_command_does_one_pass(tmp_path, quarantine, capsys):
    from passerelle.cli import main

    item = hold(quarantine)
    (tmp_path / "antivirus.toml").write_text("[antivirus]\n")
    db_path = tmp_path / "console.sqlite"
    path = write(
        tmp_path,
        f'[gateway_sync]\ndatabase = "sqlite:///{db_path}"\ngateway = "{GW}"\n'
        f'quarantine_dir = "{quarantine.dir}"\nantivirus_config = "{tmp_path}/antivirus.toml"\n'
        f'runtime_rules = "{tmp_path}/rules/console-rules.json"\nruntime_rules_group = ""\n',
    )
    assert main(["console", "gateway-sync", "--config", path]) == 0
    assert "indexed 1 new" in capsys.readouterr().out
    # the runtime rules (none saved yet: an empty set) are in the milter's file
    assert (tmp_path / "rules/console-rules.json").read_text() == (
        '{"disabled": [], "rules": []}\n'
    )
    conn = sqlite3.connect(db_path, isolation_level=None)
    try:
        assert QuarantineIndex(conn).get(GW, item.id).state == "held"
    finally:
        conn.close()


def test_gateway_sync_command_writes_the_stored_rules_and_says_when_it_cannot(
    tmp_path, quarantine, capsys
):
    from passerelle.cli import main
    from passerelle.console.rules import add_rule, make_rule
    from passerelle.console.rules_store import RuleStore

    db_path = tmp_path / "console.sqlite"
    conn = sqlite3.connect(db_path, isolation_level=None)
    store = RuleStore(conn)
    store.migrate()
    runtime, version = store.load()
    rule = make_rule("block_iso", "quarantine", extensions=["iso"])
    store.save(add_rule(runtime, (), rule), version, "admin", T0)
    conn.close()
    (tmp_path / "antivirus.toml").write_text("[antivirus]\n")
    common = (
        f'[gateway_sync]\ndatabase = "sqlite:///{db_path}"\ngateway = "{GW}"\n'
        f'quarantine_dir = "{quarantine.dir}"\nantivirus_config = "{tmp_path}/antivirus.toml"\n'
        'runtime_rules_group = ""\n'
    )
    good = write(tmp_path, common + f'runtime_rules = "{tmp_path}/lib/rules.json"\n')
    assert main(["console", "gateway-sync", "--config", good]) == 0
    assert '"name": "block_iso"' in (tmp_path / "lib/rules.json").read_text()
    # a file where the folder should be: the pass goes on, and says the rules were not written
    (tmp_path / "notadir").write_text("")
    bad = str(tmp_path / "bad.toml")
    Path(bad).write_text(common + f'runtime_rules = "{tmp_path}/notadir/rules.json"\n')
    assert main(["console", "gateway-sync", "--config", bad]) == 1
    assert "runtime rules not written" in capsys.readouterr().out


def test_gateway_sync_command_reports_a_bad_config(tmp_path, capsys):
    from passerelle.cli import main

    path = write(tmp_path, '[gateway_sync]\ndatabase = "sqlite:///x"\n')
    assert main(["console", "gateway-sync", "--config", path]) == 1
    assert "gateway_sync.gateway: is required" in capsys.readouterr().err


def test_check_gateway_config_command(tmp_path, capsys):
    """``passerelle console check-gateway-config FILE``: Ansible's validate: of the role's file
    (it reads the file only: no database, no quarantine is touched)."""
    from passerelle.cli import main

    good = write(tmp_path, '[gateway_sync]\ndatabase = "mysql://u:p@db1/c"\ngateway = "gw1"\n')
    assert main(["console", "check-gateway-config", good]) == 0
    assert f"{good}: OK" in capsys.readouterr().out
    bad = str(tmp_path / "bad.toml")
    Path(bad).write_text('[gateway_sync]\ndatabase = "mysql://u:p@db1/c"\ngateway = "gw 1"\n')
    assert main(["console", "check-gateway-config", bad]) == 1
    err = capsys.readouterr().err
    assert bad in err and "gateway_sync.gateway" in err
    # The web console's own check refuses the gateway's file (a different table).
    assert main(["console", "check-config", good]) == 1


# -- outbreak mode ---------------------------------------------------------------------------


def test_outbreak_on_then_off_switch_the_milters_state_once_each(db, quarantine, tmp_path):
    from passerelle.antivirus.outbreak import HeldOutcome, OutbreakStore
    from passerelle.console.gateway import outbreak_switch

    index, requests = db
    store = OutbreakStore(tmp_path / "lib" / "outbreak.json", clock=lambda: T0)
    released: list[str] = []

    def release_held(by: str) -> HeldOutcome:
        released.append(by)
        return HeldOutcome(["a", "b"], [], ["c"], [])

    switch = outbreak_switch(store, release_held)
    on = requests.submit("outbreak_on", None, GW, "admin", T0)
    counts = carry_out(
        requests,
        quarantine,
        index,
        GW,
        T0 + 60,
        release_path(quarantine),
        never_scan,
        outbreak=switch,
    )
    assert (counts.done, counts.failed) == (1, 0)
    assert store.read().on is True
    assert store.read().by == f"console request #{on} by admin"
    req = requests.get(on)
    assert (req.status, req.ok, req.result) == ("done", True, "ok: outbreak mode on")
    assert released == []
    # a second claim finds nothing: the state is not switched again
    assert requests.claim(GW, T0 + 61) is None
    off = requests.submit("outbreak_off", None, GW, "admin", T0 + 120)
    counts = carry_out(
        requests,
        quarantine,
        index,
        GW,
        T0 + 180,
        release_path(quarantine),
        never_scan,
        outbreak=switch,
    )
    assert (counts.done, counts.failed) == (1, 0)
    assert store.read().on is False
    req = requests.get(off)
    assert (req.ok, req.result) == (
        True,
        "ok: outbreak mode off; held messages: 2 released, 0 kept infected, 1 waiting",
    )
    assert released == [f"console request #{off} by admin"]
    assert requests.claim(GW, T0 + 181) is None


def test_outbreak_state_that_cannot_be_written_is_a_failed_result(db, quarantine, tmp_path):
    from passerelle.antivirus.outbreak import OutbreakStore
    from passerelle.console.gateway import outbreak_switch

    index, requests = db
    (tmp_path / "notadir").write_text("a file where the state's folder should be")
    store = OutbreakStore(tmp_path / "notadir" / "outbreak.json")
    rid = requests.submit("outbreak_on", None, GW, "admin", T0)
    counts = carry_out(
        requests,
        quarantine,
        index,
        GW,
        T0 + 60,
        release_path(quarantine),
        never_scan,
        outbreak=outbreak_switch(store),
    )
    assert (counts.done, counts.failed) == (0, 1)
    req = requests.get(rid)
    assert (req.status, req.ok) == ("failed", False)
    assert req.result.startswith("failed: outbreak mode not switched on: cannot write the state")
    assert str(tmp_path / "notadir" / "outbreak.json") in req.result
    assert requests.claim(GW, T0 + 61) is None


def test_outbreak_requests_without_a_switch_fail_clearly(db, quarantine):
    _index, requests = db
    rid = requests.submit("outbreak_off", None, GW, "admin", T0)
    assert run(db, quarantine).failed == 1
    assert requests.get(rid).result == (
        "failed: outbreak_off requests are not carried out by this gateway"
    )
