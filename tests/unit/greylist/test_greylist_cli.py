import json

from passerelle.cli import main
from passerelle.greylist.policy import Timing, triplet_key
from passerelle.greylist.store import Triplet, open_store


def cfg_file(tmp_path, url=None, extra=""):
    p = tmp_path / "greylist.toml"
    url = url or f"sqlite:///{tmp_path}/g.sqlite"
    p.write_text(f'[greylist]\nstore = "{url}"\nhostname = "gw1"\n{extra}')
    return p


def test_check_config_ok(tmp_path, capsys):
    p = cfg_file(tmp_path)
    assert main(["greylist", "check-config", str(p)]) == 0
    assert capsys.readouterr().out == f"{p}: OK\n"


def test_check_config_error_names_key(tmp_path, capsys):
    p = cfg_file(tmp_path, extra='min_delay = "soon"\n')
    assert main(["greylist", "check-config", str(p)]) == 1
    assert "greylist.min_delay" in capsys.readouterr().err
    assert main(["greylist", "check-config", str(tmp_path / "missing.toml")]) == 1


def test_migrate_whitelist_purge_report(greylist_store_url, tmp_path, capsys):
    p = cfg_file(tmp_path, greylist_store_url)
    assert main(["greylist", "migrate", "--config", str(p)]) == 0
    assert "0 -> 1" in capsys.readouterr().out
    assert main(["greylist", "migrate", "--config", str(p)]) == 0
    assert capsys.readouterr().out == "schema version 1\n"

    assert (
        main(
            [
                "greylist",
                "whitelist",
                "add",
                "192.0.2.0/24",
                "--config",
                str(p),
                "--comment",
                "partner's relay",
            ]
        )
        == 0
    )
    assert main(["greylist", "whitelist", "add", "10.0.0.0/99", "--config", str(p)]) == 1
    assert (
        main(
            [
                "greylist",
                "whitelist",
                "add",
                "@partner.example",
                "--kind",
                "sender",
                "--config",
                str(p),
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["greylist", "whitelist", "list", "--config", str(p)]) == 0
    out = capsys.readouterr().out
    assert "client\t192.0.2.0/24" in out and "partner's relay" in out
    assert "sender\t@partner.example" in out
    assert main(["greylist", "whitelist", "remove", "192.0.2.0/24", "--config", str(p)]) == 0
    assert main(["greylist", "whitelist", "remove", "192.0.2.0/24", "--config", str(p)]) == 1

    import time

    now = time.time()
    s = open_store(greylist_store_url)
    for i, (client, delay) in enumerate([("198.51.100.0/24", 2500), ("203.0.113.0/24", 7300)]):
        t = Triplet(triplet_key(client, f"s{chr(97 + i)}@x", "r@y"), client, "s@x", "r@y")
        s.decide(t, now - 10000, Timing())
        s.decide(t, now - 10000 + delay, Timing())
    t = Triplet(triplet_key("192.0.2.0/24", "n@x", "r@y"), "192.0.2.0/24", "n@x", "r@y")
    s.decide(t, now - 5000, Timing())
    s.add_stats([(int(now // 3600 * 3600), "whitelisted", "10.0.0.1 (trusted 10.0.0.0/8)", 7)])
    old = Triplet(triplet_key("a", "b", "c"), "a", "b", "c")
    s.decide(old, now - 20 * 86400, Timing())
    s.close()

    capsys.readouterr()
    assert main(["greylist", "report", "--config", str(p), "--format", "json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["whitelisted"] == [{"client": "10.0.0.1 (trusted 10.0.0.0/8)", "hits": 7}]
    assert {c["client"] for c in rep["came_back"]} == {"198.51.100.0/24", "203.0.113.0/24"}
    assert rep["never_retried"] == [{"client": "192.0.2.0/24", "triplets": 1}]
    d = rep["delays"]
    assert (d["count"], d["min"], d["max"], d["p50"]) == (2, 2500, 7300, 2500)
    assert sum(b["count"] for b in d["buckets"]) == 2
    assert main(["greylist", "report", "--config", str(p)]) == 0
    text = capsys.readouterr().out
    assert "Machines that came back (2)" in text and "p99" in text
    assert main(["greylist", "report", "--config", str(p), "--since", "bad"]) == 2

    assert main(["greylist", "purge", "--config", str(p)]) == 0
    assert "purged 1 triplets" in capsys.readouterr().out
