"""Backups of a gateway's files end to end on a temporary tree: the quarantine (found through
the antivirus config), a config folder and an embedded SQLite greylist store; then damage,
loss and restore."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import sqlite3
from pathlib import Path

import pytest

from passerelle.backup import engine, model
from passerelle.backup.config import load_config
from passerelle.backup.engine import BackupError, RestoreRequest
from passerelle.cli import main

T0 = 1_735_700_000.0
ROOT = os.geteuid() == 0
OTHER_UID = 4242  # an owner only root can give: proves owners are restored


class Clock:
    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def tree(tmp_path: Path):
    q = tmp_path / "spool/quarantine"
    q.mkdir(parents=True)
    os.chmod(q, 0o3770)
    etc = tmp_path / "etc"
    etc.mkdir()
    for i in range(3):
        (q / f"2025010{i}T000000-00000000000{i}.eml").write_bytes(f"message {i}\n".encode())
        (q / f"2025010{i}T000000-00000000000{i}.json").write_text(json.dumps({"id": i}))
    (q / ".lock").write_text("")
    (q / "link").symlink_to("/etc/passwd")
    os.chmod(q / "20250100T000000-000000000000.eml", 0o640)
    if ROOT:
        os.chown(q / "20250101T000000-000000000001.eml", OTHER_UID, OTHER_UID)
    (etc / "antivirus.toml").write_text(f'[antivirus]\nquarantine_dir = "{q}"\n')
    store = tmp_path / "lib/greylist.sqlite"
    store.parent.mkdir()
    (etc / "greylist.toml").write_text(f'[greylist]\nstore = "sqlite:///{store}"\n')
    (etc / "sub").mkdir()
    (etc / "sub/x.conf").write_text("x = 1\n")
    conn = sqlite3.connect(store)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE greylist (k TEXT PRIMARY KEY, n INTEGER)")
    conn.executemany("INSERT INTO greylist VALUES (?, ?)", [(f"k{i}", i) for i in range(50)])
    conn.commit()  # left open: a live WAL database, frames not checkpointed
    cfg_path = etc / "backup.toml"
    cfg_path.write_text(
        f'[backup]\ndirectory = "{tmp_path / "backups"}"\nkeep_days = 2\nhost = "gw1"\n'
        f'antivirus_config = "{etc / "antivirus.toml"}"\n'
        f'greylist_config = "{etc / "greylist.toml"}"\n'
        f'[backup.folders]\nconfig = "{etc}"\n'
    )
    yield {"q": q, "etc": etc, "store": store, "cfg": load_config(str(cfg_path)), "path": cfg_path}
    conn.close()


def test_create_writes_a_complete_backup_with_its_manifest(tree):
    m = engine.create(tree["cfg"], Clock())
    d = Path(tree["cfg"].directory)
    assert m.name == "20250101T025320Z"
    folder = d / m.name
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [model.MANIFEST, *(p.file for p in m.parts)]
    )
    assert oct(d.stat().st_mode & 0o777) == "0o700"
    for f in folder.iterdir():
        assert f.stat().st_mode & 0o077 == 0, f
    q = m.part("quarantine")
    assert (q.files, q.source) == (6, str(tree["q"]))  # not .lock, not the symlink
    assert q.meta["mode"] == "3770" and q.meta["skipped"] == 1
    assert m.part("config").files == 4
    assert m.part("sqlite:greylist").rows == {"greylist": 50}
    assert engine.verify(folder, m) == []
    assert json.loads((d / engine.LAST_RUN).read_text())["ok"] is True


def test_the_sqlite_copy_is_consistent_with_uncheckpointed_wal(tree):
    m = engine.create(tree["cfg"], Clock())
    part = m.part("sqlite:greylist")
    raw = gzip.decompress((Path(tree["cfg"].directory) / m.name / part.file).read_bytes())
    copy = tree["store"].parent / "copy.sqlite"
    copy.write_bytes(raw)
    assert sqlite3.connect(copy).execute("SELECT COUNT(*) FROM greylist").fetchone()[0] == 50


def test_restore_after_losing_the_quarantine_brings_back_names_modes_owners(tree):
    m = engine.create(tree["cfg"], Clock())
    before = {p.name: p.stat() for p in tree["q"].iterdir() if not p.name.startswith(".")}
    shutil.rmtree(tree["q"])
    _m, lines = engine.restore(tree["cfg"], RestoreRequest(parts=("quarantine",)))
    assert m.name == _m.name
    assert "restored 6 file(s)" in lines[0] and "folder recreated" in lines[0]
    after = {p.name: p.stat() for p in tree["q"].iterdir()}
    assert set(after) == set(before) - {"link"}
    assert oct(tree["q"].stat().st_mode & 0o7777) == "0o3770"
    for name, st in after.items():
        assert (st.st_mode, st.st_uid, st.st_gid) == (
            before[name].st_mode,
            before[name].st_uid,
            before[name].st_gid,
        ), name
        assert int(st.st_mtime) == int(before[name].st_mtime)
    if ROOT:
        assert after["20250101T000000-000000000001.eml"].st_uid == OTHER_UID


def test_restore_never_overwrites_what_changed_or_arrived_since(tree):
    engine.create(tree["cfg"], Clock())
    q = tree["q"]
    (q / "20250100T000000-000000000000.json").write_text('{"released": true}')  # history moved
    (q / "20250101T000000-000000000001.eml").unlink()  # lost
    (q / "20250109T000000-000000000009.eml").write_text("arrived since\n")
    _m, lines = engine.restore(tree["cfg"], RestoreRequest(parts=("quarantine",)))
    assert "restored 1 file(s)" in lines[0] and "kept 5 present" in lines[0], lines
    assert (q / "20250100T000000-000000000000.json").read_text() == '{"released": true}'
    assert (q / "20250101T000000-000000000001.eml").read_text() == "message 1\n"
    assert (q / "20250109T000000-000000000009.eml").read_text() == "arrived since\n"
    assert not [p for p in q.iterdir() if ".restore-" in p.name]


def test_sqlite_store_restored_into_a_lost_file_and_protected_when_it_has_rows(tree):
    engine.create(tree["cfg"], Clock())
    req = RestoreRequest(parts=("sqlite",))
    with pytest.raises(BackupError, match="holds 50 row"):
        engine.restore(tree["cfg"], req)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{tree['store']}{suffix}").unlink(missing_ok=True)
    _m, lines = engine.restore(tree["cfg"], req)
    assert "50 row(s)" in lines[0]
    assert sqlite3.connect(tree["store"]).execute("SELECT COUNT(*) FROM greylist").fetchone() == (
        50,
    )


def test_a_corrupt_part_is_refused_before_anything_is_touched(tree):
    m = engine.create(tree["cfg"], Clock())
    part = Path(tree["cfg"].directory) / m.name / m.part("quarantine").file
    data = bytearray(part.read_bytes())
    data[len(data) // 2] ^= 0xFF
    part.write_bytes(bytes(data))
    shutil.rmtree(tree["q"])
    with pytest.raises(BackupError, match="damaged, nothing restored") as err:
        engine.restore(tree["cfg"], RestoreRequest())
    assert "sha256" in str(err.value)
    assert not tree["q"].exists()


def test_a_manifest_that_lies_about_the_counts_is_refused(tree):
    m = engine.create(tree["cfg"], Clock())
    folder = Path(tree["cfg"].directory) / m.name
    data = json.loads((folder / model.MANIFEST).read_text())
    for p in data["parts"]:
        if p["name"] == "quarantine":
            p["files"] = 7
    (folder / model.MANIFEST).write_text(json.dumps(data))
    problems = engine.verify(folder, engine.find(tree["cfg"], m.name)[1])
    assert problems == ["folder:quarantine: the archive holds 6 file(s), the manifest says 7"], (
        problems
    )


def test_a_backup_of_another_host_is_refused_unless_asked(tree):
    engine.create(tree["cfg"], Clock())
    other = load_config(str(tree["path"]))
    other = type(other)(**{**other.__dict__, "host": "gw2"})
    with pytest.raises(BackupError, match="made on gw1, this is gw2"):
        engine.restore(other, RestoreRequest(dry_run=True))
    _m, lines = engine.restore(other, RestoreRequest(dry_run=True, other_host=True, replace=True))
    assert any("would restore" in line for line in lines)


def test_prune_keeps_the_configured_days_and_crashed_leftovers_young(tree):
    clock = Clock()
    for day in range(4):
        clock.t = T0 + day * 86400
        engine.create(tree["cfg"], clock)
    d = Path(tree["cfg"].directory)
    (d / f".{model.backup_name(clock.t - 2 * 86400)}.partial").mkdir()
    (d / f".{model.backup_name(clock.t)}.partial").mkdir()  # maybe a run in progress
    gone = engine.prune(tree["cfg"], clock)
    assert gone == sorted(
        [
            model.backup_name(T0),
            model.backup_name(T0 + 86400),
            f".{model.backup_name(clock.t - 2 * 86400)}.partial",
        ]
    )
    listing = engine.scan(str(d))
    assert [m.name for m in listing.complete] == [
        model.backup_name(T0 + 2 * 86400),
        model.backup_name(T0 + 3 * 86400),
    ]
    assert listing.partial == [f".{model.backup_name(clock.t)}.partial"]


def test_a_failed_run_leaves_nothing_and_says_why(tree):
    shutil.rmtree(tree["q"])
    with pytest.raises(BackupError, match="cannot open the folder"):
        engine.create(tree["cfg"], Clock())
    d = Path(tree["cfg"].directory)
    assert [p.name for p in d.iterdir() if not p.name.startswith(".lock")] == [engine.LAST_RUN]
    last = json.loads((d / engine.LAST_RUN).read_text())
    assert last["ok"] is False and "quarantine" in last["error"]


# -- the command: clear errors, never a traceback ------------------------------------------
def test_cli_round_trip(tree, capsys):
    cfg = str(tree["path"])
    assert main(["backup", "create", "-c", cfg]) == 0
    assert "folder:quarantine: 6 file(s)" in capsys.readouterr().out
    assert main(["backup", "verify", "-c", cfg]) == 0
    assert "OK" in capsys.readouterr().out
    shutil.rmtree(tree["q"])
    assert main(["backup", "restore", "-c", cfg, "--part", "quarantine"]) == 0
    assert "restored 6 file(s)" in capsys.readouterr().out
    assert main(["backup", "list", "-c", cfg, "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["complete"]) == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["backup", "list", "-c", "/nonexistent.toml"], "file not found"),
        (["backup", "restore", "20990101T000000Z"], "no backup 20990101T000000Z"),
        (["backup", "restore", "../../etc"], "not a backup name"),
        (["backup", "restore", "--part", "nothing"], "has no part 'nothing'"),
        (["backup", "verify", "latest"], None),
    ],
)
def test_cli_bad_input_is_one_line_not_a_traceback(tree, capsys, argv, message):
    if argv[-1] == "latest":
        message = "no complete backup"
    elif "-c" not in argv:
        engine.create(tree["cfg"], Clock())
    if "-c" not in argv:
        argv = [*argv, "-c", str(tree["path"])]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_cli_refuses_a_garbage_manifest(tree, capsys):
    m = engine.create(tree["cfg"], Clock())
    (Path(tree["cfg"].directory) / m.name / model.MANIFEST).write_bytes(b"\x00garbage")
    assert main(["backup", "restore", m.name, "-c", str(tree["path"])]) == 1
    assert "manifest is not JSON" in capsys.readouterr().err


def test_check_config(tree, tmp_path, capsys):
    assert main(["backup", "check-config", str(tree["path"])]) == 0
    bad = tmp_path / "bad.toml"
    bad.write_text('[backup]\ndirectory = "relative"\n')
    assert main(["backup", "check-config", str(bad)]) == 1
    assert "backup.directory: must be an absolute path" in capsys.readouterr().err
    bad.write_text('[backup]\ndatabases = ["grey list"]\n')
    assert main(["backup", "check-config", str(bad)]) == 1
    bad.write_text("[backup]\nkeep = 3\n")
    assert main(["backup", "check-config", str(bad)]) == 1
    assert "backup.keep: unknown setting" in capsys.readouterr().err
