"""Backups and restore (issue 16): back up db1 and gw1, destroy the shared databases and
gw1's quarantine, restore them, and prove nothing was lost: the same rows in every stable
table, the same quarantine files (names, owners, modes), a quarantined message released and
delivered, and a greylisted triplet recorded before the loss accepted after it.

The fleet is left healthy: the databases and the quarantine are restored within the test
(a failure on the way restores them in the fixture), the test's quarantine item is deleted.
"""

from __future__ import annotations

import json
import re
import time
import uuid

import pytest
import tomllib
from labsmtp import NET, message, podman_exec, present, smtp, wait_for_mail
from test_30_greylist import _headers_of
from test_40_antivirus import mime_message, quarantined

# The web console's database exists when the fleet has a console (mon1; not in trixie).
DATABASES = ("greylist", "spamassassin") + (("passerelle_console",) if present("mon1") else ())
# Tables the gateways write without new mail (counters flushed every few seconds, connection
# counts every hour, the console's index of their quarantines every minute): after the
# restore at least the backup's rows, the others exactly.
MOVING = {
    ("greylist", "stats"),
    ("greylist", "clients"),
    ("greylist", "connwatch_counts"),
    ("passerelle_console", "console_quarantine"),
}
QUARANTINE = "/var/spool/passerelle/quarantine"
SOURCE = f"{NET}.245"  # not whitelisted: greylisted (test_30_greylist.py)


def _sql(statement: str) -> list[list[str]]:
    out = podman_exec("db1", "mariadb", "--batch", "--skip-column-names", "-e", statement)
    return [line.split("\t") for line in out.splitlines() if line]


def _counts() -> dict[tuple[str, str], int]:
    tables = _sql(
        "SELECT table_schema, table_name FROM information_schema.tables WHERE table_schema IN"
        f" ({','.join(repr(d) for d in DATABASES)}) AND table_type = 'BASE TABLE'"
    )
    assert tables, "no Passerelle table on db1"
    union = " UNION ALL ".join(f"SELECT '{s}', '{t}', COUNT(*) FROM `{s}`.`{t}`" for s, t in tables)
    return {(s, t): int(n) for s, t, n in _sql(union)}


def _quarantine_files() -> dict[str, str]:
    """name -> 'mode owner group size' of every file of gw1's quarantine."""
    out = podman_exec(
        "gw1", "find", QUARANTINE, "-mindepth", "1", "-maxdepth", "1", "-type", "f",
        "!", "-name", ".*", "-printf", r"%f %m %u %g %s\n",
    )  # fmt: skip
    return {line.split(" ", 1)[0]: line.split(" ", 1)[1] for line in out.splitlines()}


def _backup(host: str) -> str:
    out = podman_exec(host, "passerelle", "backup", "create")
    m = re.search(r"^backup (\d{8}T\d{6}Z) made", out, re.M)
    assert m, out
    return m.group(1)


def _manifest(host: str, name: str) -> dict:
    listing = json.loads(podman_exec(host, "passerelle", "backup", "list", "--json"))
    return next(m for m in listing["complete"] if m["name"] == name)


@pytest.fixture
def min_delay() -> int:
    cfg = tomllib.loads(podman_exec("gw1", "cat", "/etc/passerelle/greylist.toml"))
    text = cfg["greylist"]["min_delay"]
    seconds = int(text[:-1]) * {"s": 1, "m": 60}[text[-1]] if text[-1] in "sm" else int(text)
    assert seconds <= 60, "the lab's min_delay should be short (inventory/lab)"
    return seconds


@pytest.fixture
def safety_net():
    """Whatever happens in the test, the databases and the quarantine come back."""
    names: dict[str, str] = {}
    yield names
    if "db1" in names and not all(_sql(f"SHOW DATABASES LIKE '{d}'") for d in DATABASES):
        podman_exec("db1", "passerelle", "backup", "restore", names["db1"], check=False)
    if "gw1" in names:
        podman_exec(
            "gw1", "passerelle", "backup", "restore", names["gw1"], "--part", "quarantine",
            check=False,
        )  # fmt: skip


def test_backup_destroy_restore_loses_nothing(min_delay, safety_net):
    started = time.monotonic()
    # A message in gw1's quarantine (an executable attachment: the "executables" rule).
    tag = f"bk-{uuid.uuid4().hex[:12]}"
    sender = f"{tag}@internet.test"
    pe = b"MZ\x90\x00" + b"\x00" * 60 + b"This program cannot be run in DOS mode. " + tag.encode()
    text = mime_message(sender, "alice@static-a.test", tag, "invoice.exe", pe)
    d = smtp("outside", "gw1", sender, ["alice@static-a.test"], data=text)
    assert d.last[0] == "eom" and d.last[1] == 250, d.transcript
    (item,) = quarantined("gw1", sender)

    # A triplet greylisted now, to be retried after the loss and the restore.
    gl_sender = f"greylist-{uuid.uuid4().hex[:10]}@internet.test"
    gl_mail = message(gl_sender, "alice@static-a.test")
    first = time.monotonic()
    d = smtp("outside", "gw1", gl_sender, ["alice@static-a.test"], data=gl_mail[1], source=SOURCE)
    assert d.reply("rcpt")[0] == 451, d.transcript
    key = _sql(f"SELECT HEX(k) FROM greylist.greylist WHERE sender = '{gl_sender}'")
    assert len(key) == 1, key

    # Back up both hosts, then note what there is.
    safety_net["db1"] = _backup("db1")
    safety_net["gw1"] = _backup("gw1")
    before = _counts()
    files = _quarantine_files()
    assert f"{item['id']}.eml" in files and f"{item['id']}.json" in files
    db_manifest = _manifest("db1", safety_net["db1"])
    gw_manifest = _manifest("gw1", safety_net["gw1"])
    parts = {p["kind"] + ":" + p["name"]: p for p in gw_manifest["parts"]}
    assert parts["folder:quarantine"]["files"] == len(files)
    assert parts["folder:quarantine"]["meta"]["mode"] == "3770"
    assert {p["name"] for p in db_manifest["parts"] if p["kind"] == "database"} == set(DATABASES)

    # Destroy: the shared databases, and gw1's quarantine folder itself.
    _sql("; ".join(f"DROP DATABASE {d}" for d in DATABASES))
    assert not _sql("SHOW DATABASES LIKE 'greylist'")
    podman_exec("gw1", "rm", "-rf", QUARANTINE)

    # Restore: checked against the manifest first, then loaded.
    restore_started = time.monotonic()
    out = podman_exec("db1", "passerelle", "backup", "restore", safety_net["db1"])
    for database in DATABASES:
        assert f"database:{database}: restored" in out, out
    db_restored = time.monotonic()
    out = podman_exec(
        "gw1", "passerelle", "backup", "restore", safety_net["gw1"], "--part", "quarantine"
    )
    assert f"restored {len(files)} file(s)" in out and "folder recreated" in out, out
    print(
        f"restore: db1's databases {db_restored - restore_started:.1f} s, gw1's quarantine"
        f" ({len(files)} files) {time.monotonic() - db_restored:.1f} s"
    )

    # Nothing lost: rows (counted here, and as the manifests say), files with their owners
    # and modes, the folder's own mode.
    after = _counts()
    in_backup = {
        (p["name"], t): n
        for p in db_manifest["parts"]
        if p["kind"] == "database"
        for t, n in p["rows"].items()
    }
    assert set(after) == set(before) == set(in_backup)
    for table, n in in_backup.items():
        if table in MOVING:
            assert after[table] >= n, table
        else:
            assert after[table] == before[table] == n, (table, after[table], before[table], n)
    assert before[("greylist", "greylist")] > 0
    assert _quarantine_files() == files
    assert podman_exec("gw1", "stat", "-c", "%a %U %G", QUARANTINE).split() == [
        "3770",
        "root",
        "passerelle",
    ]

    # The released message proves the restored item is whole and the path works.
    out = podman_exec("gw1", "passerelle", "quarantine", "release", item["id"])
    assert "released to alice@static-a.test" in out, out
    assert "invoice.exe" in wait_for_mail("mailstore1", "alice", tag)
    podman_exec("gw1", "passerelle", "quarantine", "delete", item["id"], check=False)

    # The greylist milter uses the restored database: the triplet from before the loss is
    # accepted on its retry, with X-Delayed (an unknown triplet would be refused again).
    time.sleep(max(0.0, first + min_delay + 2 - time.monotonic()))
    d = smtp("outside", "gw1", gl_sender, ["alice@static-a.test"], data=gl_mail[1], source=SOURCE)
    assert d.last[0] == "eom" and d.last[1] == 250, d.transcript
    headers = _headers_of(wait_for_mail("mailstore1", "alice", gl_mail[0]), gl_mail[0])
    assert "X-Delayed:" in headers, headers
    # All of it within the lab's greylist_pending_ttl (10m): the retry above found the
    # pre-loss triplet still pending, not expired and greylisted again.
    assert time.monotonic() - started < 600
