"""``passerelle metrics``: incremental log reading, counters, queue, textfile."""

import json
import os
from datetime import timezone

import pytest
from maillog.smlog import NOW

from passerelle.cli import main
from passerelle.connwatch.blocks import Block, save_state
from passerelle.reports import metrics
from passerelle.reports.config import parse_config
from passerelle.reports.metrics import Cursor, queue_length, read_new, render

from . import opslog

T = NOW - 600


def cfg_for(tmp_path, **ops):
    (tmp_path / "mqueue").mkdir(exist_ok=True)
    return parse_config(
        {
            "ops": {
                "hostname": "gw1",
                "logs": [str(tmp_path / "mail.log")],
                "queue_dirs": [str(tmp_path / "mqueue"), str(tmp_path / "absent")],
                "connwatch_state": str(tmp_path / "connwatch.json"),
                "signature_dir": str(tmp_path / "clamav"),
                **ops,
            },
            "metrics": {
                "textfile_dir": str(tmp_path / "textfile"),
                "state": str(tmp_path / "state" / "metrics.json"),
            },
            "report": {"output_dir": str(tmp_path / "reports")},
        }
    )


def append(path, lines):
    with path.open("a") as fh:
        fh.write("\n".join(lines) + "\n")


def sample(value_name, text):
    for line in text.splitlines():
        if line.startswith(value_name + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{value_name} not in\n{text}")


def test_read_new_follows_appends_truncation_and_rotation(tmp_path):
    log = tmp_path / "mail.log"
    log.write_bytes(b"a1\na2\npartial")
    c = Cursor(str(log))
    assert b"".join(read_new(c, 1 << 20)) == b"a1\na2\n"
    assert c.offset == 6
    with log.open("ab") as fh:
        fh.write(b" line\nb1\n")
    assert b"".join(read_new(c, 1 << 20)) == b"partial line\nb1\n"
    assert b"".join(read_new(c, 1 << 20)) == b""
    # rotation: the old file got more lines after our last read, then moved to .1
    with log.open("ab") as fh:
        fh.write(b"late\n")
    os.rename(log, tmp_path / "mail.log.1")
    log.write_bytes(b"c1\n")
    assert b"".join(read_new(c, 1 << 20)) == b"late\nc1\n"
    # truncated in place (copytruncate)
    log.write_bytes(b"d\n")
    assert b"".join(read_new(c, 1 << 20)) == b"d\n"


def test_first_run_reads_only_the_tail_from_a_line_start(tmp_path):
    log = tmp_path / "mail.log"
    log.write_bytes(b"".join(b"line %04d\n" % i for i in range(1000)))
    c = Cursor(str(log))
    data = b"".join(read_new(c, 95))
    assert data.startswith(b"line 0991\n") and data.endswith(b"line 0999\n")
    assert c.offset == log.stat().st_size


def test_queue_length_counts_qf_files_in_queue_groups(tmp_path):
    q = tmp_path / "mqueue"
    (q / "q1" / "qf").mkdir(parents=True)
    for name in ("qfAB1", "dfAB1", "qfAB2", "xfAB3", "tfAB4"):
        (q / name).write_text("x")
    (q / "q1" / "qf" / "qfCD1").write_text("x")
    (q / "q1" / "qfCD2").write_text("x")
    assert queue_length(q) == 4
    assert queue_length(tmp_path / "absent") is None


def test_render_is_prometheus_text_with_every_known_label():
    text = render(
        {"greylist|new": 3, "spam|HIGH": 1, 'greylist|weird"x': 1},
        {"/var/spool/mqueue": 5},
        2,
        1234,
        0,
        NOW,
    )
    assert "# TYPE passerelle_mail_queue_messages gauge" in text
    assert 'passerelle_mail_queue_messages{queue="/var/spool/mqueue"} 5' in text
    assert 'passerelle_greylist_decisions_total{reason="new"} 3' in text
    assert 'passerelle_greylist_decisions_total{reason="delayed"} 0' in text
    assert 'passerelle_greylist_decisions_total{reason="weird\\"x"} 1' in text
    assert 'passerelle_spam_messages_total{tier="HIGH"} 1' in text
    assert "passerelle_connwatch_blocked_clients 2" in text
    assert "passerelle_antivirus_viruses_total 0" in text
    assert text.endswith("\n")
    for line in text.splitlines():  # every sample line: name{labels} value
        if not line.startswith("#"):
            assert len(line.rsplit(" ", 1)) == 2 and float(line.rsplit(" ", 1)[1]) >= 0


def test_counters_grow_across_runs_and_today_is_kept(tmp_path):
    cfg = cfg_for(tmp_path)
    log = tmp_path / "mail.log"
    append(log, [opslog.gl(T, "new"), opslog.spam(T, "HIGH"), opslog.av(T, "virus")])
    (tmp_path / "mqueue" / "qfAAA").write_text("x")
    save_state(
        cfg.connwatch_state,
        {"198.51.100.7": Block("198.51.100.7", "r", 3000, NOW - 10, NOW + 3600)},
    )
    r1 = metrics.collect(cfg, NOW, timezone.utc)
    path = metrics.write(cfg, r1)
    text = path.read_text()
    assert path == tmp_path / "textfile" / "passerelle.prom"
    assert sample('passerelle_greylist_decisions_total{reason="new"}', text) == 1
    assert sample('passerelle_spam_messages_total{tier="HIGH"}', text) == 1
    assert sample("passerelle_antivirus_viruses_total", text) == 1
    assert sample(f'passerelle_mail_queue_messages{{queue="{tmp_path}/mqueue"}}', text) == 1
    assert sample("passerelle_connwatch_blocked_clients", text) == 1
    assert "absent" not in text
    assert sample("passerelle_metrics_errors", text) == 0
    # nothing new: same counters; then more lines: they add up
    r2 = metrics.collect(cfg, NOW + 60, timezone.utc)
    assert r2.read == 0
    metrics.write(cfg, r2)
    append(log, [opslog.gl(T + 60, "new"), opslog.gl(T + 61, "delayed", delay="45m")])
    metrics.write(cfg, metrics.collect(cfg, NOW + 120, timezone.utc))
    text = path.read_text()
    assert sample('passerelle_greylist_decisions_total{reason="new"}', text) == 2
    assert sample('passerelle_greylist_decisions_total{reason="delayed"}', text) == 1
    today = metrics.today_counts(cfg, NOW, timezone.utc)
    assert today == {"greylist|new": 2, "greylist|delayed": 1, "spam|HIGH": 1, "antivirus|virus": 1}
    assert not list((tmp_path / "textfile").glob(".*"))  # no temporary file left


def test_missing_log_is_reported_not_fatal(tmp_path):
    cfg = cfg_for(tmp_path)
    r = metrics.collect(cfg, NOW, timezone.utc)
    assert sample("passerelle_metrics_errors", r.text) == 1
    assert any("no such file" in e for e in r.errors)


def test_corrupt_state_starts_over(tmp_path):
    cfg = cfg_for(tmp_path)
    append(tmp_path / "mail.log", [opslog.gl(T, "new")])
    p = tmp_path / "state" / "metrics.json"
    p.parent.mkdir()
    p.write_text("{not json")
    r = metrics.collect(cfg, NOW, timezone.utc)
    assert r.state.counters == {"greylist|new": 1}
    json.loads(json.dumps(r.state.to_json()))


def test_cli_write_and_show(tmp_path, capsys):
    cfg = cfg_for(tmp_path)
    append(tmp_path / "mail.log", [opslog.spam(T, "LOW")])
    toml = tmp_path / "ops.toml"
    toml.write_text(
        "[ops]\n"
        f'hostname = "gw1"\nlogs = ["{tmp_path}/mail.log"]\nqueue_dirs = ["{tmp_path}/mqueue"]\n'
        f'connwatch_state = "{cfg.connwatch_state}"\n'
        "[metrics]\n"
        f'textfile_dir = "{tmp_path}/tf"\nstate = "{tmp_path}/m.json"\n'
    )
    assert main(["ops", "check-config", str(toml)]) == 0
    assert main(["metrics", "write", "--config", str(toml)]) == 0
    assert 'tier="LOW"} 1' in (tmp_path / "tf" / "passerelle.prom").read_text()
    capsys.readouterr()
    assert main(["metrics", "show", "--config", str(toml)]) == 0
    assert "passerelle_spam_messages_total" in capsys.readouterr().out


def test_concurrent_runs_count_each_line_once(tmp_path):
    import multiprocessing

    cfg = cfg_for(tmp_path)
    append(tmp_path / "mail.log", [opslog.gl(T + i, "new") for i in range(2000)])
    ctx = multiprocessing.get_context("fork")
    procs = [
        ctx.Process(target=metrics.collect_and_write, args=(cfg, NOW, timezone.utc))
        for _ in range(4)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    text = (tmp_path / "textfile" / "passerelle.prom").read_text()
    assert sample('passerelle_greylist_decisions_total{reason="new"}', text) == 2000


def test_planted_symlink_lock_is_refused_and_nothing_is_written(tmp_path, capsys):
    """metrics.json.lock sits in a folder the passerelle user owns and root takes it: a
    symlink there must not make root create or lock the file it points to (issue 14, item 9)."""
    cfg = cfg_for(tmp_path)
    append(tmp_path / "mail.log", [opslog.gl(T, "new")])
    victim = tmp_path / "victim"
    state = tmp_path / "state" / "metrics.json"
    state.parent.mkdir()
    os.symlink(victim, f"{state}.lock")
    with pytest.raises(OSError, match="symbolic link"):
        metrics.collect_and_write(cfg, NOW, timezone.utc)
    assert not victim.exists()
    assert not state.exists() and not (tmp_path / "textfile").exists()
    # the command says so and fails, without a traceback
    toml = tmp_path / "ops.toml"
    toml.write_text(
        "[ops]\n"
        f'hostname = "gw1"\nlogs = ["{tmp_path}/mail.log"]\nqueue_dirs = ["{tmp_path}/mqueue"]\n'
        f'connwatch_state = "{cfg.connwatch_state}"\n'
        "[metrics]\n"
        f'textfile_dir = "{tmp_path}/tf"\nstate = "{state}"\n'
    )
    assert main(["metrics", "write", "--config", str(toml)]) == 1
    assert "symbolic link" in capsys.readouterr().err
    assert not victim.exists()
