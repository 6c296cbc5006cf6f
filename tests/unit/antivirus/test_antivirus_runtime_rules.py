"""The console's runtime content rules, from the database row to the milter's rules in force:
gateway-sync writes the file, the engine picks it up after its reload interval."""

from __future__ import annotations

import io
import logging
import os
import sqlite3
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from av_helpers import PDF, attachment, multipart

import hostile_samples as hs
from passerelle.antivirus.config import parse_config
from passerelle.antivirus.engine import DISCARD, REJECT, Engine, Envelope
from passerelle.antivirus.outbreak import OutbreakStore
from passerelle.antivirus.quarantine import Quarantine
from passerelle.antivirus.runtime_rules import RuntimeRulesFile
from passerelle.console.gateway import sync_runtime_rules
from passerelle.console.rules import (
    add_rule,
    inventory_rules,
    make_rule,
    remove_rule,
    set_enabled,
)
from passerelle.console.rules_store import RuleStore

T0 = 1_764_633_600.0
INTERVAL = 5
INVENTORY = [
    {"name": "executables", "extensions": ["exe"], "action": "quarantine"},
    {"name": "no_viagra", "header": "Subject", "pattern": "(?i)viagra", "action": "reject"},
]


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def store():
    c = sqlite3.connect(":memory:", isolation_level=None)
    s = RuleStore(c)
    s.migrate()
    yield s
    c.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def rules_file(tmp_path: Path) -> Path:
    return tmp_path / "lib" / "console-rules.json"


@pytest.fixture
def engine(tmp_path: Path, rules_file: Path, clock: Clock) -> Engine:
    cfg = parse_config(
        {
            "antivirus": {
                "hostname": "gw1",
                "rules": INVENTORY,
                "runtime_rules": str(rules_file),
                "runtime_rules_interval": f"{INTERVAL}s",
            }
        }
    )
    return Engine(
        cfg,
        scanner=hs.ReplyScanner(hs.CLAMD_OK),
        quarantine=Quarantine(tmp_path / "q"),
        outbreak=OutbreakStore(tmp_path / "ob.json"),
        monotonic=clock,
    )


def change(store: RuleStore, fn) -> None:
    """What the console's rules page does: read, change, compare-and-set."""
    runtime, version = store.load()
    inventory = inventory_rules(INVENTORY)
    store.save(fn(runtime, inventory), version, "admin", T0)


def sync(store: RuleStore, rules_file: Path) -> bool:
    """What gateway-sync does each pass."""
    runtime, _version = store.load()
    return sync_runtime_rules(runtime, str(rules_file), None)


def names(engine: Engine) -> list[str]:
    return [r.name for r in engine.rules()]


def send(engine: Engine, filename: str, subject: str = "test"):
    raw = multipart(attachment(filename, PDF)).replace(
        b"Subject: test", b"Subject: " + subject.encode()
    )
    headers, _body = hs.split(raw.replace(b"\n", b"\r\n"))
    env = Envelope("m@example.net", ["b@example.com"], "192.0.2.1", "mx.example.net", "Q1")
    return engine.process(env, headers, io.BytesIO(raw), len(raw))


ISO = {"extensions": ["iso"], "action": "quarantine"}


def test_no_file_is_the_inventory_rules(engine):
    assert names(engine) == ["executables", "no_viagra"]
    assert send(engine, "image.iso").action != DISCARD


def test_a_rule_added_in_the_store_is_in_force_after_a_sync_and_the_interval(
    engine, store, rules_file, clock
):
    engine.rules()  # looked at the file (absent) now
    change(store, lambda rt, inv: add_rule(rt, inv, make_rule("block_iso", **ISO)))
    assert sync(store, rules_file) is True
    assert oct(rules_file.stat().st_mode & 0o777) == "0o640"
    clock.t += INTERVAL - 1  # not looked at again yet
    assert names(engine) == ["executables", "no_viagra"]
    clock.t += 1
    assert names(engine) == ["executables", "no_viagra", "block_iso"]
    v = send(engine, "image.iso")
    assert v.action == DISCARD and v.quarantine_id
    assert "block_iso" in v.log
    # the inventory's rules are still in force beside it
    assert send(engine, "setup.exe").action == DISCARD
    assert send(engine, "x.pdf", subject="cheap VIAGRA").action == REJECT
    assert send(engine, "report.pdf").action != DISCARD


def test_an_inventory_rule_disabled_at_runtime_stops_matching(engine, store, rules_file, clock):
    assert send(engine, "setup.exe").action == DISCARD
    change(store, lambda rt, inv: set_enabled(rt, inv, "executables", False))
    sync(store, rules_file)
    clock.t += INTERVAL
    assert names(engine) == ["no_viagra"]
    assert send(engine, "setup.exe").action != DISCARD
    # enabled again: in force again
    change(store, lambda rt, inv: set_enabled(rt, inv, "executables", True))
    sync(store, rules_file)
    clock.t += INTERVAL
    assert send(engine, "setup.exe").action == DISCARD


def test_a_disabled_runtime_rule_is_not_in_force(engine, store, rules_file, clock):
    change(store, lambda rt, inv: add_rule(rt, inv, make_rule("block_iso", **ISO)))
    change(store, lambda rt, inv: set_enabled(rt, inv, "block_iso", False))
    sync(store, rules_file)
    clock.t += INTERVAL
    assert names(engine) == ["executables", "no_viagra"]


def test_a_corrupt_file_keeps_the_last_rules_and_is_logged_once(
    engine, store, rules_file, clock, caplog
):
    change(store, lambda rt, inv: add_rule(rt, inv, make_rule("block_iso", **ISO)))
    sync(store, rules_file)
    clock.t += INTERVAL
    assert names(engine) == ["executables", "no_viagra", "block_iso"]
    good = rules_file.read_bytes()
    caplog.set_level(logging.ERROR, "passerelle.antivirus.runtime_rules")
    for bad in (b'{"rules": [', b'{"rules": [{"name": "x", "pattern": "("}], "disabled": []}'):
        rules_file.write_bytes(bad)
        for _ in range(3):
            clock.t += INTERVAL
            assert names(engine) == ["executables", "no_viagra", "block_iso"]
        assert send(engine, "image.iso").action == DISCARD
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 2  # once per bad content, not once per look
    assert str(rules_file) in errors[0].getMessage()
    assert "keeping the 3 rules in force" in errors[0].getMessage()
    # the next good file is loaded: the sync rewrites it, as the file is not the row's
    rules_file.write_bytes(b"\x00")
    assert sync(store, rules_file) is True
    assert rules_file.read_bytes() == good
    clock.t += INTERVAL
    assert names(engine) == ["executables", "no_viagra", "block_iso"]


def test_a_corrupt_file_at_start_is_the_inventory_rules_not_none(tmp_path, rules_file, clock):
    rules_file.parent.mkdir(parents=True)
    rules_file.write_text("not json")
    inventory = parse_config({"antivirus": {"rules": INVENTORY}}).rules
    f = RuntimeRulesFile(inventory, str(rules_file), INTERVAL, clock)
    assert [r.name for r in f.rules()] == ["executables", "no_viagra"]


def test_an_unreadable_file_keeps_the_rules(tmp_path, rules_file, clock, caplog):
    inventory = parse_config({"antivirus": {"rules": INVENTORY}}).rules

    def cannot_stat(path: str):
        raise PermissionError(13, "Permission denied", path)

    f = RuntimeRulesFile(inventory, str(rules_file), INTERVAL, clock, stat_file=cannot_stat)
    clock.t += INTERVAL
    assert [r.name for r in f.rules()] == ["executables", "no_viagra"]
    assert "Permission denied" in caplog.text


def test_removing_every_runtime_rule_returns_to_the_inventory_set(engine, store, rules_file, clock):
    change(store, lambda rt, inv: add_rule(rt, inv, make_rule("block_iso", **ISO)))
    change(store, lambda rt, inv: set_enabled(rt, inv, "executables", False))
    sync(store, rules_file)
    clock.t += INTERVAL
    assert names(engine) == ["no_viagra", "block_iso"]
    change(
        store, lambda rt, inv: set_enabled(remove_rule(rt, "block_iso"), inv, "executables", True)
    )
    sync(store, rules_file)
    clock.t += INTERVAL
    assert names(engine) == ["executables", "no_viagra"]
    assert send(engine, "image.iso").action != DISCARD
    # the file gone too: the inventory's rules
    rules_file.unlink()
    clock.t += INTERVAL
    assert names(engine) == ["executables", "no_viagra"]


def test_a_sync_without_change_does_not_rewrite_the_file(store, rules_file):
    change(store, lambda rt, inv: add_rule(rt, inv, make_rule("block_iso", **ISO)))
    assert sync(store, rules_file) is True
    before = os.stat(rules_file)
    assert sync(store, rules_file) is False
    after = os.stat(rules_file)
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert not [p for p in rules_file.parent.iterdir() if p.name != rules_file.name]


def test_the_rule_set_is_swapped_whole(engine, store, rules_file, clock):
    """A message sees one tuple of rules: the one reference the reload replaces."""
    first = engine.rules()
    change(store, lambda rt, inv: add_rule(rt, inv, make_rule("block_iso", **ISO)))
    sync(store, rules_file)
    assert engine.rules() is first  # within the interval: the same object
    clock.t += INTERVAL
    second = engine.rules()
    assert second is not first and isinstance(second, tuple)
    assert (len(first), len(second)) == (2, 3)  # the old set is left as it was


def test_config_keys(tmp_path):
    from passerelle.config import ConfigError

    cfg = parse_config({"antivirus": {}})
    assert (cfg.runtime_rules, cfg.runtime_rules_interval) == ("", 5)
    with pytest.raises(ConfigError, match=r"antivirus\.runtime_rules"):
        parse_config({"antivirus": {"runtime_rules": "rel/path.json"}})
    with pytest.raises(ConfigError, match=r"antivirus\.runtime_rules_interval"):
        parse_config({"antivirus": {"runtime_rules_interval": "2m"}})
