"""``passerelle status``: pure screen from probed values; probes with an injected runner."""

from datetime import timezone

import pytest
from maillog.smlog import NOW

import passerelle
from passerelle.cli import main
from passerelle.config import ConfigError
from passerelle.reports import status
from passerelle.reports.config import parse_config
from passerelle.reports.status import Snapshot, Unit, assess, parse_systemctl_show

SHOW = """Id=sendmail.service
LoadState=loaded
ActiveState=active
SubState=running

Id=passerelle-greylist.service
LoadState=loaded
ActiveState=failed
SubState=failed

Id=mariadb.service
LoadState=not-found
ActiveState=inactive
SubState=dead
"""


def test_parse_systemctl_show_leaves_out_units_not_installed():
    assert parse_systemctl_show(SHOW) == [
        Unit("sendmail", "active", "running"),
        Unit("passerelle-greylist", "failed", "failed"),
    ]


def test_all_well():
    s = Snapshot(
        "gw1",
        NOW,
        version="9.8.7",
        units=[Unit("sendmail", "active", "running"), Unit("spamd", "active", "running")],
        queues={"/var/spool/mqueue": 3, "/var/spool/mqueue-client": 0},
        signatures=("daily.cld", NOW - 900),
        today={
            "greylist|new": 40,
            "greylist|early": 2,
            "greylist|delayed": 30,
            "greylist|passed": 100,
            "greylist|trusted": 8,
            "spam|HIGH": 4,
            "spam|LOW": 9,
            "spam|none": 300,
            "antivirus|virus": 1,
            "antivirus|clean": 312,
            "connwatch|block": 1,
        },
    )
    st = assess(s, timezone.utc)
    text = st.text()
    assert st.state == "OK" and st.exit_code == 0
    assert text.startswith("gw1  2026-11-27 11:00 UTC  passerelle 9.8.7\n")
    assert "  ok   sendmail  active (running)" in text
    assert "queue:      3 message(s) (/var/spool/mqueue 3, /var/spool/mqueue-client 0)" in text
    assert "signatures: updated 15m ago (daily.cld)" in text
    assert "greylist 180 decision(s): 42 delayed (451), 30 came back, 108 accepted" in text
    assert "spam 313 message(s): HIGH 4 MEDIUM 0 LOW 9, unscanned 0" in text
    assert "antivirus 313 message(s): 1 virus(es); connection guard: 1 block(s)" in text
    assert text.rstrip().endswith("OK")


def test_a_daemon_down_is_critical_and_old_signatures_a_warning():
    s = Snapshot(
        "gw1",
        NOW,
        units=[Unit("sendmail", "active", "running"), Unit("clamav-daemon", "failed", "failed")],
        signatures=("daily.cld", NOW - 3 * 86400),
    )
    st = assess(s, timezone.utc)
    assert st.state == "CRITICAL" and st.exit_code == 2
    assert "  DOWN clamav-daemon  failed (failed)" in st.text()
    assert "no counts yet" in st.text()
    assert st.lines[-1] == "CRITICAL: clamav-daemon failed; signatures 3d old"
    st = assess(Snapshot("gw1", NOW, signatures=("x.hdb", NOW - 2 * 86400)), timezone.utc)
    assert st.state == "WARNING" and st.exit_code == 1


def test_long_queue_is_a_warning():
    st = assess(Snapshot("gw1", NOW, queues={"/q": 501}), timezone.utc)
    assert st.state == "WARNING" and "queue 501 > 500" in st.lines[-1]


def test_probe_with_injected_runner(tmp_path):
    (tmp_path / "mqueue").mkdir()
    (tmp_path / "mqueue" / "qfX").write_text("")
    (tmp_path / "clamav").mkdir()
    (tmp_path / "clamav" / "daily.cld").write_text("")
    (tmp_path / "clamav" / "freshclam.dat").write_text("")
    cfg = parse_config(
        {
            "ops": {
                "hostname": "gw9",
                "queue_dirs": [str(tmp_path / "mqueue")],
                "signature_dir": str(tmp_path / "clamav"),
                "units": ["sendmail", "passerelle-greylist", "mariadb"],
            },
            "metrics": {"state": str(tmp_path / "none.json")},
        }
    )
    calls = []

    def runner(argv):
        calls.append(argv)
        return 0, SHOW

    snap = status.probe(cfg, NOW, runner)
    assert snap.version == passerelle.__version__  # the version this host runs, on the screen
    assert calls == [
        [
            "systemctl",
            "show",
            "-p",
            "Id,LoadState,ActiveState,SubState",
            "--",
            "sendmail",
            "passerelle-greylist",
            "mariadb",
        ]
    ]
    assert [u.name for u in snap.units] == ["sendmail", "passerelle-greylist"]
    assert snap.queues == {str(tmp_path / "mqueue"): 1}
    assert snap.signatures[0] == "daily.cld"
    assert snap.today is None
    broken = status.probe(cfg, NOW, lambda argv: (1, "Failed to connect to bus"))
    assert broken.problems == ["systemctl show failed (1): Failed to connect to bus"]
    assert assess(broken, timezone.utc).state == "WARNING"


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"ops": {"logs": []}}, "ops.logs"),
        ({"ops": {"logs": ["mail.log"]}}, "ops.logs"),
        ({"ops": {"units": ["bad unit"]}}, "ops.units"),
        ({"ops": {"colour": 1}}, "ops.colour"),
        ({"metrics": {"file": "x.txt"}}, "metrics.file"),
        ({"metrics": {"textfile_dir": "rel"}}, "metrics.textfile_dir"),
        ({"report": {"mail_to": ["nobody"]}}, "report.mail_to"),
        ({"report": {"top_clients": 0}}, "report.top_clients"),
        ({"report": {"suggest_min_ratio": 1.5}}, "report.suggest_min_ratio"),
        ({"reports": {}}, "reports"),
    ],
)
def test_config_errors_name_the_key(data, key):
    with pytest.raises(ConfigError) as exc:
        parse_config(data, "ops.toml")
    assert exc.value.key == key
    assert str(exc.value).startswith(f"ops.toml: {key}: ")


def test_cli_status_and_check_config(tmp_path, capsys):
    bad = tmp_path / "ops.toml"
    bad.write_text('[metrics]\nfile = "a/b.prom"\n')
    assert main(["ops", "check-config", str(bad)]) == 1
    assert "metrics.file" in capsys.readouterr().err
    good = tmp_path / "good.toml"
    good.write_text(
        f'[ops]\nhostname = "gw1"\nunits = []\nqueue_dirs = []\nsignature_dir = "{tmp_path}"\n'
        f'[metrics]\nstate = "{tmp_path}/m.json"\n'
    )
    assert main(["status", "--config", str(good)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("gw1  ") and "(none of the configured units is installed)" in out
