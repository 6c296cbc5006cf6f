"""The greylist and connection-guard requests: their targets, carried out once by the
gateway's side (a real SQLite greylist store, the guard's own state file and unblock), and
what the gateway publishes for the pages."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from passerelle.connwatch.blocks import Block, load_state, save_state
from passerelle.connwatch.guard import Config as GuardConfig
from passerelle.connwatch.guard import Decision, Deps
from passerelle.connwatch.over import FILE_MAX, over_record, write_over
from passerelle.console.connguard_side import connguard_body, publish_connguard, unblock_request
from passerelle.console.gateway import carry_out
from passerelle.console.greylist_side import greylist_body, publish_greylist, suggestions
from passerelle.console.published import PublishedState
from passerelle.console.quarantine_index import QuarantineIndex
from passerelle.console.requests import KINDS, RequestError, RequestTable
from passerelle.console.targets import split_whitelist_target, unblock_target, whitelist_target
from passerelle.greylist.store import open_store
from passerelle.greylist.whitelist import Whitelist

T0 = 1_764_633_600.0


@pytest.fixture
def conn(tmp_path):
    c = sqlite3.connect(str(tmp_path / "console.db"), isolation_level=None)
    for t in (RequestTable(c), QuarantineIndex(c), PublishedState(c)):
        t.migrate()
    yield c
    c.close()


@pytest.fixture
def store(tmp_path):
    s = open_store(f"sqlite:///{tmp_path / 'greylist.sqlite'}", 10.0)
    s.migrate()
    yield s
    s.close()


# -- targets -------------------------------------------------------------------------------


def test_the_new_kinds_fit_the_kind_column():
    assert {"whitelist_add", "whitelist_remove", "unblock"} <= set(KINDS)
    assert max(len(k) for k in KINDS) <= 16  # console_requests.kind VARCHAR(16)


@pytest.mark.parametrize(
    "kind, entry, target",
    [
        ("client", " 192.0.2.7 ", "client:192.0.2.7"),
        ("client", "192.0.2.0/24", "client:192.0.2.0/24"),
        ("client", "mx.example.org", "client:mx.example.org"),
        ("sender", "@example.org", "sender:@example.org"),
        ("recipient", "postmaster@example.org", "recipient:postmaster@example.org"),
    ],
)
def test_whitelist_targets(kind, entry, target):
    assert whitelist_target(kind, entry, True) == target
    assert split_whitelist_target(target, True) == (kind, entry.strip())


@pytest.mark.parametrize(
    "kind, entry, message",
    [
        ("trusted", "192.0.2.7", "unknown kind of whitelist entry"),
        ("bogus", "192.0.2.7", "unknown kind of whitelist entry"),
        ("client", "", "empty"),
        ("client", "not an address!", "bad client entry"),
        ("client", "192.0.2.0/33", "bad client entry"),
        ("sender", "a@", "bad sender entry"),
        ("client", "exämple.org", "not plain ASCII"),
        ("sender", "x" * 60 + "@example.org", "longer than"),
    ],
)
def test_bad_whitelist_targets_are_refused_with_a_message(kind, entry, message):
    with pytest.raises(ValueError, match=message):
        whitelist_target(kind, entry, True)


def test_request_table_checks_the_new_targets(conn):
    t = RequestTable(conn)
    rid = t.submit("whitelist_add", "client:192.0.2.7", None, "alice", T0)
    assert t.get(rid).target == "client:192.0.2.7" and t.get(rid).gateway is None
    assert t.get(t.submit("unblock", "IPv6:2001:DB8::1", "gw1", "alice", T0)).target == (
        "2001:db8::1"
    )
    for kind, target, message in [
        ("whitelist_add", "client:bad!name", "bad client entry"),
        ("whitelist_add", "client 192.0.2.7", "KIND:ENTRY"),
        ("whitelist_remove", "nokind:x", "unknown kind"),
        ("unblock", "192.0.2.300", "not an IP address"),
        ("unblock", "", "not an IP address"),
    ]:
        with pytest.raises(RequestError, match=message):
            t.submit(kind, target, None, "alice", T0)
    assert len(t.list()) == 2


def test_unblock_target():
    assert unblock_target(" 192.0.2.7") == "192.0.2.7"
    with pytest.raises(ValueError):
        unblock_target("example.org")


# -- carried out once ------------------------------------------------------------------------


def _handlers(store, conn, cfg=None, deps=None):
    from passerelle.console.greylist_side import whitelist_change

    out = {
        "whitelist_add": lambda req, by: whitelist_change(store, PublishedState(conn), req, T0),
        "whitelist_remove": lambda req, by: whitelist_change(store, PublishedState(conn), req, T0),
    }
    if cfg is not None:
        out["unblock"] = lambda req, by: unblock_request(cfg, req, deps)
    return out


def _carry(conn, store, gateway="gw1", **kw):
    return carry_out(
        RequestTable(conn),
        None,  # no quarantine request in these tests
        QuarantineIndex(conn),
        gateway,
        T0 + 1,
        lambda *a: None,
        lambda *a: None,
        handlers=_handlers(store, conn, **kw),
    )


def test_whitelist_add_and_remove_done_once_with_a_result(conn, store):
    t = RequestTable(conn)
    PublishedState(conn).set_note("client:192.0.2.7", "partner\nMX", T0)
    add = t.submit("whitelist_add", "client:192.0.2.7", None, "alice", T0)
    counts = _carry(conn, store, "gw1")
    assert (counts.done, counts.failed) == (1, 0)
    assert _carry(conn, store, "gw2").done == 0  # claimed once: the other gateway finds none
    r = t.get(add)
    assert r.status == "done" and r.ok and r.claimed_by == "gw1"
    assert r.result == "ok: client 192.0.2.7 added to the whitelist"
    assert store.whitelist_list() == [("client", "192.0.2.7", "partner MX", T0)]

    rm = t.submit("whitelist_remove", "client:192.0.2.7", None, "alice", T0)
    again = t.submit("whitelist_remove", "client:192.0.2.7", None, "alice", T0)
    counts = _carry(conn, store, "gw2")
    assert (counts.done, counts.failed) == (1, 1)
    assert t.get(rm).result == "ok: client 192.0.2.7 removed from the whitelist"
    assert t.get(again).status == "failed"
    assert t.get(again).result == "failed: client 192.0.2.7 is not in the whitelist"
    assert store.whitelist_list() == []


def test_a_gateway_without_the_greylist_part_fails_the_request_and_says_why(conn, store):
    t = RequestTable(conn)
    rid = t.submit("whitelist_add", "client:192.0.2.7", None, "alice", T0)
    carry_out(t, None, QuarantineIndex(conn), "gw1", T0, lambda *a: None, lambda *a: None)
    assert t.get(rid).result == "failed: whitelist_add requests are not carried out by gateway-sync"


class Runner:
    """Stands for makemap and systemctl: makemap's output file is made, calls recorded."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, cmd, source):
        self.calls.append(list(cmd))
        if "makemap" in cmd[0]:
            Path(str(cmd[2]) + ".db").write_bytes(b"db")
        return 0, ""


def _guard(tmp_path) -> GuardConfig:
    state = tmp_path / "state" / "connwatch.json"
    state.parent.mkdir()
    cfg = GuardConfig(
        state=str(state),
        map=str(tmp_path / "connwatch"),
        status_file=str(tmp_path / "connwatch.status"),
        over_file=str(tmp_path / "connwatch-over.json"),
        hostname="gw1",
    )
    save_state(
        cfg.state,
        {
            "198.51.100.7": Block("198.51.100.7", "3000/1h", 3000, T0 - 60, T0 + 86400),
            "2001:db8::bad": Block("2001:db8::bad", "2600/1h", 2600, T0 - 30, T0 + 3600),
        },
    )
    Path(cfg.status_file).write_text(
        "CRITICAL - inbound gw1: blocked 198.51.100.7 (3000/1h) | clients=2\n"
    )
    return cfg


def test_unblock_done_once_by_the_gateway_holding_the_block(conn, store, tmp_path):
    cfg, runner = _guard(tmp_path), Runner()
    t = RequestTable(conn)
    rid = t.submit("unblock", "198.51.100.7", "gw1", "alice", T0)
    other = t.submit("unblock", "192.0.2.99", "gw1", "alice", T0)
    assert _carry(conn, store, "gw2", cfg=cfg, deps=Deps(runner=runner)).done == 0
    counts = _carry(conn, store, "gw1", cfg=cfg, deps=Deps(runner=runner))
    assert (counts.done, counts.failed) == (1, 1)
    assert t.get(rid).result == "ok: 198.51.100.7 unblocked"
    assert t.get(other).result == "failed: 192.0.2.99 is not blocked on this gateway"
    assert sorted(load_state(cfg.state)) == ["2001:db8::bad"]
    assert [c[-1] for c in runner.calls] == [str(tmp_path / "connwatch.new"), "sendmail"]


# -- publication -----------------------------------------------------------------------------


def test_greylist_body_reuses_the_report_and_suggests(store):
    store.whitelist_add("client", "192.0.2.7", "partner", T0)
    body = greylist_body(store, Whitelist, 1200, T0, None)
    assert body["whitelist"] == [
        {"kind": "client", "entry": "192.0.2.7", "comment": "partner", "created": T0}
    ]
    assert set(body["report"]) >= {"decisions", "came_back", "never_retried", "delays"}
    assert body["report_at"] == T0 and body["suggestions"] == []
    # within REPORT_EVERY the report is not read again, the whitelist is
    store.whitelist_add("sender", "@example.org", "", T0)
    again = greylist_body(store, Whitelist, 1200, T0 + 10, body)
    assert again["report_at"] == T0 and len(again["whitelist"]) == 2


def test_greylist_body_publishes_the_daily_history_with_the_report(store):
    store.add_stats([(int(T0) + 3600, "decision", "new", 9)])
    body = greylist_body(store, Whitelist, 1200, T0 + 7200, None)
    history = body["history"]
    assert history["days"] == 14 and len(history["by_day"]) == 14
    assert history["by_day"][-1]["day"] == T0 and history["by_day"][-1]["greylisted"] == 9
    assert len(json.dumps(history)) < 14 * 1024  # bounded: about a kilobyte a day
    # within REPORT_EVERY the history is reused, like the report
    store.add_stats([(int(T0) + 3600, "decision", "new", 1)])
    again = greylist_body(store, Whitelist, 1200, T0 + 7210, body)
    assert again["history"] is body["history"] and again["report_at"] == T0 + 7200
    # a previous body from a gateway that published no history: both are read again
    older = {k: v for k, v in body.items() if k != "history"}
    fresh = greylist_body(store, Whitelist, 1200, T0 + 7220, older)
    assert fresh["report_at"] == T0 + 7220 and fresh["history"]["by_day"][-1]["greylisted"] == 10


def test_suggestions_leave_out_what_is_whitelisted():
    wl = Whitelist()
    wl.add("client", "192.0.2.0/24")
    came_back = [
        ("192.0.2.0/24", 9, 1300.0),
        ("198.51.100.0/24", 5, 1250.0),
        ("203.0.113.9/32", 2, 1210.0),
        ("unix:/run/x", 1, 1.0),
    ]
    assert [s["entry"] for s in suggestions(came_back, wl)] == ["198.51.100.0/24", "203.0.113.9"]


def test_connguard_body_reads_the_guard_state(tmp_path):
    body = connguard_body(_guard(tmp_path))
    assert [b["ip"] for b in body["blocks"]] == ["2001:db8::bad", "198.51.100.7"]  # by expiry
    assert body["status"].startswith("CRITICAL - inbound gw1: blocked 198.51.100.7")
    assert (body["alert_threshold"], body["block_threshold"]) == (500, 2500)


def _write_over(cfg, clients):
    rec = over_record(
        [Decision(ip, n, action) for ip, n, action in clients],
        {"198.51.100.7"},
        {"198.51.100.7"},
        at=T0 - 60,
        window=3600,
        direction="inbound",
        alert_threshold=500,
        block_threshold=2500,
        counts="local",
    )
    write_over(cfg.over_file, rec)
    return rec


def test_connguard_body_publishes_the_last_runs_clients_over(tmp_path):
    cfg = _guard(tmp_path)
    rec = _write_over(cfg, [("198.51.100.7", 3000, "block"), ("192.0.2.10", 600, "alert")])
    over = connguard_body(cfg)["over"]
    assert over == rec
    assert [(c["ip"], c["decision"]) for c in over["clients"]] == [
        ("198.51.100.7", "already blocked"),
        ("192.0.2.10", "alert"),
    ]
    assert (over["at"], over["window"], over["counts"], over["total"]) == (
        T0 - 60,
        3600,
        "local",
        2,
    )


@pytest.mark.parametrize(
    "content, why",
    [
        (b'{"version": 1, "clients": [', "not JSON"),
        (b"[" * 200_000, "not JSON"),
        (b" " * (FILE_MAX + 1), f"larger than {FILE_MAX} bytes"),
        (b'{"version": 1, "at": 0}', "is not a number"),
    ],
)
def test_an_unreadable_over_file_is_published_as_unknown_with_why(tmp_path, content, why):
    cfg = _guard(tmp_path)
    Path(cfg.over_file).write_bytes(content)
    body = connguard_body(cfg)
    assert body["over"]["unknown"].startswith(cfg.over_file + ": ")
    assert why in body["over"]["unknown"]
    assert len(body["blocks"]) == 2 and body["status"].startswith("CRITICAL")  # the rest is there


def test_a_missing_over_file_is_published_as_not_yet(tmp_path):
    """No guard run has written it yet (after an install or an upgrade, until the next run):
    the normal state, not an error."""
    body = connguard_body(_guard(tmp_path))
    assert body["over"] == {"not_yet": True}
    assert len(body["blocks"]) == 2 and body["status"].startswith("CRITICAL")


def test_an_unexpected_error_reading_the_over_file_is_contained(tmp_path, monkeypatch):
    import passerelle.connwatch.over as over

    def boom(path):
        raise MemoryError("no room")

    monkeypatch.setattr(over, "read_over", boom)
    body = connguard_body(_guard(tmp_path))
    assert body["over"] == {
        "unknown": f"{tmp_path / 'connwatch-over.json'}: not read (MemoryError)"
    }
    assert len(body["blocks"]) == 2


def test_publish_replaces_the_row(conn, store, tmp_path):
    state = PublishedState(conn)
    publish_greylist(store, state, "gw1", Whitelist, 1200, T0)
    publish_greylist(store, state, "gw2", Whitelist, 1200, T0 + 1)
    got = state.get("greylist")
    assert got is not None and got.gateway == "gw2" and got.published_at == T0 + 1
    publish_connguard(_guard(tmp_path), state, "gw1", T0)
    assert [p.name for p in state.starting("connguard:")] == ["connguard:gw1"]


# -- gateway-sync's step (pages_sync): the milter's and the guard's own config files ---------


def test_pages_sync_with_the_greylist_and_guard_configs(conn, tmp_path):
    from passerelle.console.pages_sync import PagesSync

    store_path = tmp_path / "greylist.sqlite"
    grey = tmp_path / "greylist.toml"
    grey.write_text(f'[greylist]\nstore = "sqlite:///{store_path}"\nmin_delay = "20s"\n')
    guard = _guard(tmp_path)
    cw = tmp_path / "connwatch.toml"
    cw.write_text(
        f'[connwatch]\nstate = "{guard.state}"\nmap = "{guard.map}"\n'
        f'status_file = "{guard.status_file}"\nhostname = "gw1"\n'
    )
    pages = PagesSync(conn, "gw1", str(grey), str(cw), T0)
    t = RequestTable(conn)
    rid = t.submit("whitelist_add", "client:10.0.0.5", None, "alice", T0)
    try:
        counts = carry_out(
            t,
            None,
            QuarantineIndex(conn),
            "gw1",
            T0,
            lambda *a: None,
            lambda *a: None,
            handlers=pages.handlers(),
        )
        assert (counts.done, counts.failed) == (1, 0), t.get(rid).result
        assert pages.publish(T0 + 1) and pages.errors == []
    finally:
        pages.close()
    state = PublishedState(conn)
    grey_row = state.get("greylist")
    assert grey_row is not None
    assert [(e["kind"], e["entry"], e["comment"]) for e in grey_row.body["whitelist"]] == [
        ("client", "10.0.0.5", "console, alice")
    ]
    guard_row = state.get("connguard:gw1")
    assert guard_row is not None and len(guard_row.body["blocks"]) == 2
    # over_file unset: beside the status file, where no run has written yet
    assert guard_row.body["over"] == {"not_yet": True}


def test_pages_sync_says_why_when_a_config_cannot_be_read(conn, tmp_path):
    from passerelle.console.pages_sync import PagesSync

    missing = str(tmp_path / "nope.toml")
    pages = PagesSync(conn, "gw1", missing, missing, T0)
    t = RequestTable(conn)
    rid = t.submit("whitelist_add", "client:10.0.0.5", None, "alice", T0)
    carry_out(
        t,
        None,
        QuarantineIndex(conn),
        "gw1",
        T0,
        lambda *a: None,
        lambda *a: None,
        handlers=pages.handlers(),
    )
    assert t.get(rid).result.startswith("failed: greylist store not reached")
    assert not pages.publish(T0)
    assert pages.errors == ["greylist not published", "connection guard state not published"]
    assert PublishedState(conn).get("greylist") is None
