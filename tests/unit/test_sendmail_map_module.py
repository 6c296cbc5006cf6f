"""Unit tests for library/sendmail_map.py, run through the module's main()."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from ansible.module_utils.testing import patch_module_args

from plugins import load

ROOT = Path(__file__).resolve().parents[2]
sendmail_map = load("library/sendmail_map.py")

HEADER = "# Managed by Ansible (Passerelle); local changes are overwritten.\n"

FAKE_MAKEMAP = """#!/bin/sh
# Fake makemap: log the arguments, then copy stdin to <last arg>.db
echo "$@" >> {log}
for last; do :; done
cat > "$last.db"
{tail}
"""


def fake_makemap(tmp_path: Path, fail: bool = False) -> tuple[Path, Path]:
    log = tmp_path / "makemap.log"
    script = tmp_path / ("makemap-fail" if fail else "makemap")
    tail = 'echo "makemap: line 2: boom" >&2; exit 65' if fail else "exit 0"
    script.write_text(FAKE_MAKEMAP.format(log=log, tail=tail))
    script.chmod(0o755)
    return script, log


def calls(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def run(args: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any]]:
    with patch_module_args(args), pytest.raises(SystemExit) as exc:
        sendmail_map.main()
    out = capsys.readouterr().out
    return int(exc.value.code or 0), json.loads(out)


@pytest.fixture
def etc(tmp_path: Path) -> Path:
    directory = tmp_path / "mail"
    directory.mkdir()
    return directory


ENTRIES = [["To:Example.org", "RELAY"], {"key": "Connect:192.0.2.10", "value": "REJECT"}]
TEXT = HEADER + "connect:192.0.2.10\tREJECT\nto:example.org\tRELAY\n"


def test_first_write_builds_db(etc: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    makemap, log = fake_makemap(tmp_path)
    path = etc / "access"
    rc, res = run({"path": str(path), "entries": ENTRIES, "makemap": str(makemap)}, capsys)
    assert rc == 0, res
    assert res["changed"] is True
    assert res["rebuilt"] is True
    assert res["entries"] == 2
    assert path.read_text() == TEXT
    assert (etc / "access.db").read_text() == TEXT
    (call,) = calls(log)
    map_type, base = call.split()
    assert map_type == "hash"
    # built under a temporary name in the same directory, then renamed
    assert Path(base).parent == etc
    assert Path(base).name.startswith(".access.")
    assert sorted(p.name for p in etc.iterdir()) == ["access", "access.db"]


def test_second_run_is_idempotent(etc: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    makemap, log = fake_makemap(tmp_path)
    args = {"path": str(etc / "access"), "entries": ENTRIES, "makemap": str(makemap)}
    run(args, capsys)
    before = {p.name: p.stat().st_mtime_ns for p in etc.iterdir()}
    rc, res = run(args, capsys)
    assert rc == 0
    assert res["changed"] is False
    assert res["rebuilt"] is False
    assert len(calls(log)) == 1  # makemap not called again
    assert {p.name: p.stat().st_mtime_ns for p in etc.iterdir()} == before


def test_entries_order_does_not_matter(
    etc: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    makemap, log = fake_makemap(tmp_path)
    path = str(etc / "access")
    run({"path": path, "entries": ENTRIES, "makemap": str(makemap)}, capsys)
    _, res = run({"path": path, "entries": ENTRIES[::-1], "makemap": str(makemap)}, capsys)
    assert res["changed"] is False
    assert len(calls(log)) == 1


def test_stale_or_missing_db_is_rebuilt(
    etc: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    makemap, log = fake_makemap(tmp_path)
    path = etc / "access"
    args = {"path": str(path), "entries": ENTRIES, "makemap": str(makemap)}
    run(args, capsys)
    text_mtime = path.stat().st_mtime_ns
    db = etc / "access.db"
    os.utime(db, ns=(text_mtime - 10**9, text_mtime - 10**9))
    _, res = run(args, capsys)
    assert (res["changed"], res["text_changed"], res["rebuilt"]) == (True, False, True)
    assert path.stat().st_mtime_ns == text_mtime  # text not rewritten
    assert db.stat().st_mtime_ns >= text_mtime
    db.unlink()
    _, res = run(args, capsys)
    assert res["rebuilt"] is True and db.exists()
    assert len(calls(log)) == 3
    _, res = run(args, capsys)
    assert res["changed"] is False


def test_check_mode_writes_nothing(etc: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    makemap, log = fake_makemap(tmp_path)
    path = etc / "access"
    args = {
        "path": str(path),
        "entries": ENTRIES,
        "makemap": str(makemap),
        "_ansible_check_mode": True,
        "_ansible_diff": True,
    }
    rc, res = run(args, capsys)
    assert rc == 0
    assert res["changed"] is True
    assert res["diff"]["after"] == TEXT
    assert res["diff"]["before"] == ""
    assert list(etc.iterdir()) == []
    assert calls(log) == []

    # existing file, new content: still untouched in check mode
    path.write_text("old\tvalue\n")
    rc, res = run({**args, "entries": [["a", "b"]]}, capsys)
    assert res["changed"] is True
    assert res["removed"] == ["old\tvalue"]
    assert res["added"] == ["a\tb"]
    assert path.read_text() == "old\tvalue\n"
    assert sorted(p.name for p in etc.iterdir()) == ["access"]
    assert calls(log) == []


def test_diff_added_and_removed(etc: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    makemap, _ = fake_makemap(tmp_path)
    path = etc / "mailertable"
    first = [["a.example.org", "esmtp:[mx1]"], ["b.example.org", "esmtp:[mx2]"]]
    run({"path": str(path), "entries": first, "makemap": str(makemap)}, capsys)
    second = [["a.example.org", "esmtp:[mx9]"], ["c.example.org", "esmtp:[mx3]"]]
    rc, res = run(
        {"path": str(path), "entries": second, "makemap": str(makemap), "_ansible_diff": True},
        capsys,
    )
    assert rc == 0 and res["changed"] is True
    assert res["added"] == ["a.example.org\tesmtp:[mx9]", "c.example.org\tesmtp:[mx3]"]
    assert res["removed"] == ["a.example.org\tesmtp:[mx1]", "b.example.org\tesmtp:[mx2]"]
    diff = res["diff"]
    assert diff["before_header"] == diff["after_header"] == str(path)
    assert diff["before"] == HEADER + "a.example.org\tesmtp:[mx1]\nb.example.org\tesmtp:[mx2]\n"
    assert diff["after"] == HEADER + "a.example.org\tesmtp:[mx9]\nc.example.org\tesmtp:[mx3]\n"
    assert path.read_text() == diff["after"]
    assert res["entries"] == 2


def test_makemap_failure_leaves_old_files(
    etc: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    good, _ = fake_makemap(tmp_path)
    bad, log = fake_makemap(tmp_path, fail=True)
    path = etc / "access"
    run({"path": str(path), "entries": ENTRIES, "makemap": str(good)}, capsys)
    old_text = path.read_text()
    old_db = (etc / "access.db").read_bytes()
    rc, res = run(
        {"path": str(path), "entries": [["To:new.example", "RELAY"]], "makemap": str(bad)}, capsys
    )
    assert rc == 1
    assert res["failed"] is True
    assert "boom" in res["msg"]
    assert len(calls(log)) == 2  # the failing makemap did run (log is shared)
    assert path.read_text() == old_text
    assert (etc / "access.db").read_bytes() == old_db
    # no temporary text or half-built database left behind
    assert sorted(p.name for p in etc.iterdir()) == ["access", "access.db"]


def test_missing_makemap_fails(etc: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    path = etc / "access"
    rc, res = run(
        {"path": str(path), "entries": ENTRIES, "makemap": str(tmp_path / "nope")}, capsys
    )
    assert rc == 1
    assert "makemap not found" in res["msg"]
    assert list(etc.iterdir()) == []


@pytest.mark.parametrize(
    ("entries", "fragment"),
    [
        ([["To:A.example", "RELAY"], ["to:a.example", "REJECT"]], "duplicate key 'to:a.example'"),
        ([["bad key", "RELAY"]], "'bad key' contains whitespace"),
        ([["tab\tkey", "RELAY"]], "contains whitespace"),
        ([["", "RELAY"]], "empty key"),
        ([["k", ""]], "empty value"),
        ([["k", "two\nlines"]], "newline"),
        ([["#k", "v"]], "comment"),
        ([["k", "v", "extra"]], "exactly 2 items"),
        ([{"key": "k"}], "key and value"),
        (["just-a-string"], "expected [key, value]"),
        ([["k", None]], "value must be a string"),
    ],
)
def test_bad_entries_fail_naming_the_entry(
    entries: list[Any],
    fragment: str,
    etc: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
):
    makemap, log = fake_makemap(tmp_path)
    rc, res = run(
        {"path": str(etc / "access"), "entries": entries, "makemap": str(makemap)}, capsys
    )
    assert rc == 1
    assert fragment in res["msg"]
    assert "entries[" in res["msg"]
    assert list(etc.iterdir()) == []
    assert calls(log) == []


def test_duplicate_message_names_both_entries():
    with pytest.raises(sendmail_map.MapError) as exc:
        sendmail_map.render_entries([["a", "1"], ["b", "2"], ["A", "3"]])
    assert "entries[0] ['a', '1']" in str(exc.value)
    assert "entries[2] ['A', '3']" in str(exc.value)


def test_identical_duplicates_are_merged():
    lines = sendmail_map.render_entries([["B", "x"], ["a", "y"], ["b", "x"]])
    assert lines == ["a\ty", "b\tx"]


def test_list_format(etc: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    makemap, log = fake_makemap(tmp_path)
    path = etc / "relay-domains"
    entries = ["b.example.org", "A.example.org", "a.example.org"]
    rc, res = run(
        {"path": str(path), "format": "list", "entries": entries, "makemap": str(makemap)},
        capsys,
    )
    assert rc == 0 and res["changed"] is True
    assert path.read_text() == HEADER + "a.example.org\nb.example.org\n"
    assert res["entries"] == 2
    assert res["db"] == []
    assert calls(log) == []  # build defaults to false for lists
    assert sorted(p.name for p in etc.iterdir()) == ["relay-domains"]
    _, res = run(
        {"path": str(path), "format": "list", "entries": entries[::-1], "makemap": str(makemap)},
        capsys,
    )
    assert res["changed"] is False


def test_list_format_rejects_whitespace(
    etc: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    rc, res = run(
        {"path": str(etc / "relay-domains"), "format": "list", "entries": ["ok.org", "no t.org"]},
        capsys,
    )
    assert rc == 1
    assert "entries[1] 'no t.org'" in res["msg"]


def test_no_case_fold_passes_f(etc: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    makemap, log = fake_makemap(tmp_path)
    path = etc / "virtusertable"
    rc, _ = run(
        {
            "path": str(path),
            "entries": [["User@Example.org", "local"]],
            "case_fold": False,
            "map_type": "btree",
            "makemap": str(makemap),
        },
        capsys,
    )
    assert rc == 0
    assert path.read_text() == HEADER + "User@Example.org\tlocal\n"
    assert calls(log)[0].split()[:2] == ["-f", "btree"]


def test_build_false_writes_text_only(
    etc: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    makemap, log = fake_makemap(tmp_path)
    path = etc / "access"
    rc, res = run(
        {"path": str(path), "entries": ENTRIES, "build": False, "makemap": str(makemap)}, capsys
    )
    assert rc == 0 and res["changed"] is True
    assert path.read_text() == TEXT
    assert calls(log) == []
    assert not (etc / "access.db").exists()


def test_header_lines_and_no_header(etc: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    makemap, _ = fake_makemap(tmp_path)
    path = etc / "access"
    run(
        {
            "path": str(path),
            "entries": [["k", "v"]],
            "header": "line one\n\nline three",
            "makemap": str(makemap),
        },
        capsys,
    )
    assert path.read_text() == "# line one\n#\n# line three\nk\tv\n"
    _, res = run(
        {"path": str(path), "entries": [["k", "v"]], "header": "", "makemap": str(makemap)},
        capsys,
    )
    assert res["changed"] is True
    assert res["added"] == [] and res["removed"] == []  # only comments changed
    assert path.read_text() == "k\tv\n"


def test_mode_is_applied_to_text_and_db(
    etc: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    makemap, _ = fake_makemap(tmp_path)
    path = etc / "access"
    args = {"path": str(path), "entries": ENTRIES, "makemap": str(makemap), "mode": "0640"}
    rc, _ = run(args, capsys)
    assert rc == 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert stat.S_IMODE((etc / "access.db").stat().st_mode) == 0o640
    _, res = run(args, capsys)
    assert res["changed"] is False
    _, res = run({**args, "mode": "0600"}, capsys)
    assert res["changed"] is True
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # a mode change alone does not rebuild
    assert res["rebuilt"] is False


def test_existing_mode_is_preserved_on_rewrite(
    etc: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    makemap, _ = fake_makemap(tmp_path)
    path = etc / "access"
    path.write_text("old\tv\n")
    path.chmod(0o604)
    rc, _ = run({"path": str(path), "entries": ENTRIES, "makemap": str(makemap)}, capsys)
    assert rc == 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o604


def test_result_shape_without_diff(etc: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    makemap, _ = fake_makemap(tmp_path)
    path = etc / "access"
    rc, res = run({"path": str(path), "entries": ENTRIES, "makemap": str(makemap)}, capsys)
    assert rc == 0
    assert "diff" not in res
    assert res["db"] == [str(etc / "access.db")]
    assert res["added"] == ["connect:192.0.2.10\tREJECT", "to:example.org\tRELAY"]
    # large entry lists are not echoed back in the invocation
    assert res["invocation"]["module_args"]["entries"] == "<2 entries>"
    assert res["invocation"]["module_args"]["path"] == str(path)


def test_documentation_matches_argument_spec():
    import yaml

    doc = yaml.safe_load(sendmail_map.DOCUMENTATION)
    yaml.safe_load(sendmail_map.EXAMPLES)
    returned = yaml.safe_load(sendmail_map.RETURN)
    assert set(doc["options"]) == set(sendmail_map.ARGUMENT_SPEC)
    for name, spec in sendmail_map.ARGUMENT_SPEC.items():
        assert doc["options"][name]["type"] == spec["type"], name
        assert doc["options"][name].get("default") == spec.get("default"), name
    assert {"added", "removed", "entries", "diff"} <= set(returned)
