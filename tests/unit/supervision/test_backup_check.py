"""``passerelle check backup``: the age of the newest backup, and a failed last run."""

from __future__ import annotations

import json
from pathlib import Path

from passerelle.backup import engine
from passerelle.backup.config import BackupConfig
from passerelle.supervision import checks
from passerelle.supervision.checks import CRITICAL, OK, UNKNOWN, WARNING

T0 = 1_735_700_000.0
DAY = 86400.0
MAX = 26 * 3600.0


def test_backup_result_states():
    young = ("20250101T025320Z", T0)
    assert checks.backup_result(young, {"ok": True}, T0 + 3600, MAX, "/b").state == OK
    old = checks.backup_result(young, {"ok": True}, T0 + DAY + 3 * 3600, MAX, "/b")
    assert old.state == CRITICAL and "older than 26 h" in old.text
    failed = checks.backup_result(young, {"ok": False, "error": "disk full"}, T0 + 60, MAX, "/b")
    assert failed.state == WARNING and "disk full" in failed.text
    none = checks.backup_result(None, None, T0, MAX, "/b")
    assert none.state == CRITICAL and "no backup in /b" in none.text
    assert checks.backup_result(young, None, T0 + 60, MAX, "/b").perf.startswith("age=60s")


def test_check_backup_reads_the_host_backups(tmp_path: Path):
    folder = tmp_path / "etc"
    folder.mkdir()
    (folder / "a.conf").write_text("a\n")
    cfg_file = tmp_path / "backup.toml"
    cfg_file.write_text(
        f'[backup]\ndirectory = "{tmp_path / "b"}"\n[backup.folders]\nconfig = "{folder}"\n'
    )
    assert checks.check_backup(str(cfg_file), T0, MAX).state == CRITICAL  # none yet
    cfg = BackupConfig(directory=str(tmp_path / "b"), folders={"config": str(folder)})
    engine.create(cfg, lambda: T0)
    res = checks.check_backup(str(cfg_file), T0 + 600, MAX)
    assert res.state == OK and "20250101T025320Z" in res.text, res
    assert checks.check_backup(str(cfg_file), T0 + 2 * DAY, MAX).state == CRITICAL
    (tmp_path / "b" / engine.LAST_RUN).write_text(json.dumps({"ok": False, "error": "x"}))
    assert checks.check_backup(str(cfg_file), T0 + 600, MAX).state == WARNING
    assert checks.check_backup(str(tmp_path / "none.toml"), T0, MAX).state == UNKNOWN
