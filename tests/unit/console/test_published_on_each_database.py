"""The published state (greylist, connection guard) and the whitelist notes on SQLite and on
a throwaway MariaDB: rows replaced without DELETE, an unchanged row published again, the
version table of their own."""

from __future__ import annotations

from passerelle.console.published import PublishedState

T0 = 1_764_633_600.0


def test_published_state(conn):
    s = PublishedState(conn)
    assert s.migrate() == (0, 1)
    assert s.migrate() == (1, 1)
    assert s.get("greylist") is None
    body = {"whitelist": [{"kind": "client", "entry": "192.0.2.7", "comment": "é"}]}
    s.publish("greylist", "gw1", body, T0)
    s.publish("greylist", "gw1", body, T0)  # unchanged: MariaDB counts 0 rows, still fine
    s.publish("greylist", "gw2", {**body, "report_at": T0}, T0 + 1)
    got = s.get("greylist")
    assert got is not None and (got.gateway, got.published_at) == ("gw2", T0 + 1)
    assert got.body["whitelist"][0]["comment"] == "é" and got.body["report_at"] == T0
    for gw in ("gw2", "gw1"):
        s.publish(f"connguard:{gw}", gw, {"blocks": []}, T0)
    s.publish("connguardx", "gw1", {}, T0)
    assert [p.gateway for p in s.starting("connguard:")] == ["gw1", "gw2"]
    s.set_note("client:192.0.2.7", "partner\tMX " + "x" * 300, T0)
    s.set_note("client:192.0.2.7", "partner\tMX", T0)
    s.set_note("client:192.0.2.7", "partner\tMX", T0)
    assert s.note("client:192.0.2.7") == "partner MX" and s.note("client:10.0.0.1") == ""
