"""The pure logic of backups: names, retention, manifest checks, restore plans."""

from __future__ import annotations

import copy

import pytest

from passerelle.backup import model
from passerelle.backup.model import Manifest, ManifestError, Member, Part

T0 = 1_735_700_000.0  # 2025-01-01T02:53:20Z
SHA = "a" * 64


def _part(**kw):
    base = dict(
        kind="database",
        name="greylist",
        file="database-greylist.sql.gz",
        size=10,
        sha256=SHA,
        rows={"greylist": 3, "clients": 1},
    )
    base.update(kw)
    return Part(**base)


def _manifest(*parts, name="20250101T025320Z", host="db1"):
    return Manifest(name, host, T0, "0.1.0", tuple(parts) or (_part(),))


# -- names -----------------------------------------------------------------------------------
def test_backup_name_is_utc_and_reads_back():
    name = model.backup_name(T0)
    assert name == "20250101T025320Z"
    assert model.name_time(name) == T0


@pytest.mark.parametrize("bad", ["", "latest", "20250101T025320", "20251301T000000Z", "x/y"])
def test_name_time_refuses_what_is_not_a_backup_name(bad):
    assert model.name_time(bad) is None


def test_unique_name_moves_one_second_when_taken():
    taken = {"20250101T025320Z", "20250101T025321Z"}
    assert model.unique_name(T0, taken) == "20250101T025322Z"


# -- retention -------------------------------------------------------------------------------
def _names(days, per_day=1):
    return [
        model.backup_name(T0 - d * 86400 + h * 3600) for d in range(days) for h in range(per_day)
    ]


def test_retention_keeps_the_most_recent_days():
    names = _names(20)
    kept, pruned = model.retention(names, 14)
    assert len(kept) == 14 and len(pruned) == 6
    assert max(pruned) < min(kept)


def test_retention_keeps_every_backup_of_a_kept_day():
    names = _names(3, per_day=3)  # a manual backup beside the nightly one
    kept, pruned = model.retention(names, 2)
    assert len(kept) == 6 and len(pruned) == 3
    assert {n[:8] for n in kept} == {n[:8] for n in sorted(names)[-6:]}


def test_retention_counts_days_with_a_backup_not_calendar_days():
    # Backups stopped a month ago: the last 14 are kept however old they are.
    names = [model.backup_name(T0 - 30 * 86400 - d * 86400) for d in range(16)]
    kept, pruned = model.retention(names, 14)
    assert len(kept) == 14 and len(pruned) == 2


def test_retention_ignores_other_names_and_refuses_zero():
    kept, pruned = model.retention(["notes", ".x.partial", *_names(2)], 1)
    assert len(kept) == 1 and len(pruned) == 1
    with pytest.raises(ValueError):
        model.retention([], 0)


# -- manifest ------------------------------------------------------------------------------
def test_manifest_round_trip():
    folder = _part(
        kind="folder",
        name="quarantine",
        file="folder-quarantine.tar.gz",
        rows={},
        files=4,
        bytes=1234,
        source="/var/spool/passerelle/quarantine",
        meta={"mode": "3770", "user": "root", "group": "passerelle"},
    )
    m = _manifest(_part(), folder)
    back = model.manifest_from_dict(m.to_dict(), m.name)
    assert back == m
    assert back.part("quarantine") == folder
    assert back.part("database:greylist") == _part()


def _broken(mutate):
    data = _manifest().to_dict()
    mutate(data)
    return data


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.update(format=2), "format 2"),
        (lambda d: d.pop("parts"), "parts missing"),
        (lambda d: d.update(name="latest"), "bad backup name"),
        (lambda d: d["parts"][0].update(kind="disk"), "unknown kind"),
        (lambda d: d["parts"][0].update(file="../../etc/shadow"), "is not"),
        (lambda d: d["parts"][0].update(name="../x"), "bad name"),
        (lambda d: d["parts"][0].update(sha256="zz"), "sha256"),
        (lambda d: d["parts"][0].update(rows={"t": -1}), "not a row count"),
        (lambda d: d["parts"][0].update(size=True), "wrong type"),
        (lambda d: d["parts"].append(copy.deepcopy(d["parts"][0])), "same kind and name"),
    ],
)
def test_manifest_refuses_what_it_cannot_trust(mutate, message):
    with pytest.raises(ManifestError, match=message):
        model.manifest_from_dict(_broken(mutate))


def test_manifest_found_in_another_backups_folder_is_refused():
    with pytest.raises(ManifestError, match="found in folder"):
        model.manifest_from_dict(_manifest().to_dict(), "20250102T000000Z")


@pytest.mark.parametrize("bad", [None, [], "x", 3])
def test_manifest_not_an_object(bad):
    with pytest.raises(ManifestError):
        model.manifest_from_dict(bad)


# -- checks before a restore -----------------------------------------------------------------
def test_file_problems():
    p = _part()
    assert model.file_problems(p, 10, SHA) == []
    assert "missing" in model.file_problems(p, None, None)[0]
    assert "11 bytes" in model.file_problems(p, 11, SHA)[0]
    assert "corrupt" in model.file_problems(p, 10, "b" * 64)[0]


def test_count_problems_name_each_table_that_differs():
    p = _part()
    assert model.count_problems(p, rows={"greylist": 3, "clients": 1}) == []
    (problem,) = model.count_problems(p, rows={"greylist": 2, "clients": 1, "extra": 5})
    assert "greylist: 2 instead of 3" in problem and "extra: 5 instead of 0" in problem
    folder = _part(kind="folder", name="q", file="folder-q.tar.gz", files=2)
    assert model.count_problems(folder, files=2) == []
    assert "1 file(s)" in model.count_problems(folder, files=1)[0]


def test_select_parts():
    q = _part(kind="folder", name="quarantine", file="folder-quarantine.tar.gz")
    c = _part(kind="folder", name="config", file="folder-config.tar.gz")
    m = _manifest(_part(), q, c)
    assert model.select_parts(m, []) == [_part(), q, c]
    assert model.select_parts(m, ["quarantine"]) == [q]
    assert model.select_parts(m, ["folder"]) == [q, c]
    assert model.select_parts(m, ["database:greylist", "greylist"]) == [_part()]
    with pytest.raises(ValueError, match="no part 'bayes'"):
        model.select_parts(m, ["bayes"])


def test_host_problem():
    m = _manifest(host="db1")
    assert model.host_problem(m, "db1", False) is None
    assert "made on db1, this is gw1" in model.host_problem(m, "gw1", False)
    assert model.host_problem(m, "gw1", True) is None


def test_target_problem_protects_rows_unless_replace():
    assert model.target_problem("database greylist", None, False) is None  # missing
    assert model.target_problem("database greylist", {"t": 0}, False) is None  # empty schema
    assert "holds 5 row(s)" in model.target_problem("database greylist", {"t": 5}, False)
    assert model.target_problem("database greylist", {"t": 5}, True) is None


# -- folder plans -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "member",
    [
        Member("/etc/shadow", "file"),
        Member("../x", "file"),
        Member("a/../../x", "file"),
        Member("a//b", "file"),
        Member("", "file"),
        Member("link", "other"),
    ],
)
def test_member_problem_refuses_paths_outside_and_odd_entries(member):
    assert model.member_problem(member) is not None


def test_plan_folder_adds_only_what_is_missing_json_after_its_message():
    members = [
        Member("A.json", "file"),
        Member("A.eml", "file"),
        Member("B.json", "file"),
        Member("B.eml", "file"),
        Member("sub", "dir"),
        Member("sub/x", "file"),
        Member("../evil", "file"),
    ]
    plan = model.plan_folder(members, existing={"B.json", "B.eml", "NEW.eml", "NEW.json"})
    assert [m.name for m in plan.write] == ["sub", "A.eml", "A.json", "sub/x"]
    assert set(plan.kept) == {"B.json", "B.eml"}
    assert len(plan.refused) == 1 and "evil" in plan.refused[0]
