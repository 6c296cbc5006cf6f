"""Runtime content rules merged over the inventory's, and their export as inventory YAML."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from passerelle.antivirus.config import parse_config
from passerelle.console.rules import (
    PATTERN_MAX,
    ContentRule,
    RuleError,
    RuntimeRules,
    add_rule,
    change_rule,
    check_pattern,
    export_yaml,
    inventory_rules,
    make_rule,
    merge,
    milter_rules,
    remove_rule,
    runtime_from_json,
    runtime_to_json,
    set_enabled,
)

ROOT = Path(__file__).resolve().parents[3]


def lab_inventory() -> list[dict]:
    data = yaml.safe_load((ROOT / "inventory/lab/group_vars/all/antivirus.yml").read_text())
    return data["antivirus_rules"]


INVENTORY = [
    {"name": "executables", "extensions": ["exe", "scr"], "types": ["pe"], "action": "quarantine"},
    {
        "name": "invoice_spam",
        "header": "Subject",
        "pattern": "(?i)urgent invoice",
        "action": "reject",
    },
]


@pytest.fixture
def inv():
    return inventory_rules(INVENTORY)


def test_lab_inventory_rules_are_read_with_the_milters_parser():
    rules = inventory_rules(lab_inventory())
    assert [r.name for r in rules] == ["executables"]
    assert "exe" in rules[0].extensions and rules[0].types == ("pe",)
    assert rules[0].kind == "attachment"


def test_invalid_inventory_rules_are_refused():
    with pytest.raises(RuleError, match="invalid regular expression"):
        inventory_rules([{"name": "x", "header": "Subject", "pattern": "(", "action": "reject"}])
    with pytest.raises(RuleError, match="duplicate rule name"):
        inventory_rules([INVENTORY[0], INVENTORY[0]])
    with pytest.raises(RuleError, match="list of mappings"):
        inventory_rules("executables")
    assert inventory_rules(None) == ()


def test_make_header_rule():
    r = make_rule("pay", "quarantine", header="Subject", pattern=r"(?i)\bpayment\b")
    assert (r.kind, r.header, r.pattern, r.extensions) == (
        "header",
        "Subject",
        r"(?i)\bpayment\b",
        (),
    )


def test_make_attachment_rule_normalises_extensions():
    r = make_rule("iso", "quarantine", extensions=".ISO, img ,iso", types=["pe"], archives=False)
    assert (r.kind, r.extensions, r.types, r.archives) == (
        "attachment",
        ("img", "iso"),
        ("pe",),
        False,
    )


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("(unclosed", "invalid regular expression"),
        ("[z-a]", "invalid regular expression"),
        ("a{99999999999}", "invalid regular expression"),
        ("x" * (PATTERN_MAX + 1), "longer than"),
        ("(a+)+$", "nests repetitions"),
        ("(a*)*b", "nests repetitions"),
        ("(?:x|y+){2,}", "nests repetitions"),
        ("((ab)*c)+", "nests repetitions"),
        (r"(a)\1", "refers back"),
        (r"(?P<x>a)(?P=x)", "refers back"),
        (r"(a)?(?(1)b|c)", "refers back"),
        (".*a.*b.*c.*d.*e", "unbounded repetitions"),
        ("bad\ttab", "control character"),
        ("", "needs a pattern"),
        (None, "needs a pattern"),
    ],
)
def test_invalid_or_pathological_patterns_are_refused(pattern, message):
    with pytest.raises(RuleError, match=message):
        check_pattern(pattern)
    with pytest.raises(RuleError, match=message):
        make_rule("r", "quarantine", header="Subject", pattern=pattern)


@pytest.mark.parametrize(
    "pattern", [r"(?i)^\s*re:\s*invoice", "a{2,5}b+", r"\.(exe|scr)$", "(ab){3}", "é+"]
)
def test_ordinary_patterns_pass(pattern):
    assert check_pattern(pattern) == pattern


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "bad name"}, "rule name"),
        ({"name": "x" * 65}, "rule name"),
        ({"name": "oversized_archive"}, "milter's own"),
        ({"action": "explode"}, "action must be"),
        ({"header": "Sub:ject", "pattern": "x"}, "header field name"),
        ({"header": "Subject", "pattern": "x", "extensions": ["exe"]}, "either a header rule"),
        ({"header": "Subject", "pattern": "x", "action": "strip"}, "strip applies"),
        ({"extensions": ["ex e/"]}, "extension"),
        ({"types": ["iso9660"]}, "unknown type"),
        ({}, "needs extensions or types"),
        ({"extensions": [f"e{i}" for i in range(65)]}, "at most 64"),
        ({"extensions": [3]}, "must be text"),
        ({"extensions": ["exe"], "archives": "yes"}, "archives must be"),
    ],
)
def test_malformed_runtime_rules_are_refused(kwargs, message):
    args = {"name": "r", "action": "quarantine", **kwargs}
    with pytest.raises(RuleError, match=message):
        make_rule(**args)


def test_runtime_rules_merge_over_the_inventory_with_their_origin(inv):
    rt = add_rule(RuntimeRules(), inv, make_rule("iso", "quarantine", extensions=["iso"]))
    rt = add_rule(rt, inv, make_rule("pay", "reject", header="Subject", pattern="pay now"))
    rt = set_enabled(rt, inv, "invoice_spam", False)  # an inventory rule: disabled, not edited
    rt = set_enabled(rt, inv, "pay", False)
    merged = merge(inv, rt)
    assert [(e.rule.name, e.origin, e.enabled) for e in merged] == [
        ("executables", "inventory", True),
        ("invoice_spam", "inventory", False),
        ("iso", "runtime", True),
        ("pay", "runtime", False),
    ]
    assert merged[1].rule == inv[1]  # the inventory rule itself is unchanged
    assert merged[1].note == "disabled at runtime"
    assert [r["name"] for r in milter_rules(merged)] == ["executables", "iso"]
    rt = set_enabled(rt, inv, "invoice_spam", True)
    assert merge(inv, rt)[1].enabled


def test_inventory_rule_is_never_edited_in_place(inv):
    clash = make_rule("executables", "reject", extensions=["exe"])
    with pytest.raises(RuleError, match="is an inventory rule"):
        add_rule(RuntimeRules(), inv, clash)
    with pytest.raises(RuleError, match="is an inventory rule"):
        change_rule(RuntimeRules(), inv, clash)
    with pytest.raises(RuleError, match="inventory rules can only be disabled"):
        remove_rule(RuntimeRules(), "executables")


def test_change_and_remove_runtime_rules(inv):
    rt = add_rule(RuntimeRules(), inv, make_rule("iso", "quarantine", extensions=["iso"]))
    rt = add_rule(rt, inv, make_rule("img", "quarantine", extensions=["img"]))
    rt = set_enabled(rt, inv, "iso", False)
    rt = change_rule(rt, inv, make_rule("iso", "reject", extensions=["iso", "udf"]))
    assert rt.names() == ["iso", "img"]
    assert rt.rules[0].rule.extensions == ("iso", "udf") and not rt.rules[0].enabled
    with pytest.raises(RuleError, match="already named"):
        add_rule(rt, inv, make_rule("img", "quarantine", extensions=["img"]))
    with pytest.raises(RuleError, match="no runtime rule"):
        change_rule(rt, inv, make_rule("nope", "quarantine", extensions=["x"]))
    with pytest.raises(RuleError, match="no rule named"):
        set_enabled(rt, inv, "nope", True)
    assert remove_rule(rt, "iso").names() == ["img"]


def test_runtime_rule_shadowed_by_a_later_inventory_rule_is_not_in_force(inv):
    rt = add_rule(RuntimeRules(), (), make_rule("executables", "reject", extensions=["exe"]))
    merged = merge(inv, rt)
    assert [(e.origin, e.enabled) for e in merged if e.rule.name == "executables"] == [
        ("inventory", True),
        ("runtime", False),
    ]
    assert "shadowed" in merged[-1].note
    assert [r["name"] for r in milter_rules(merged)] == ["executables", "invoice_spam"]


def test_export_round_trips_through_the_milters_parser(inv):
    rt = add_rule(
        RuntimeRules(), inv, make_rule("iso", "quarantine", extensions=["iso"], archives=False)
    )
    rt = add_rule(
        rt, inv, make_rule("fr", "reject", header="X-Mailer", pattern='é"\\d+\\\\ ok: #1')
    )
    rt = add_rule(rt, inv, make_rule("off", "reject", header="Subject", pattern="x"))
    rt = set_enabled(rt, inv, "off", False)
    rt = set_enabled(rt, inv, "invoice_spam", False)
    text = export_yaml(inv, rt)
    assert "# inventory rule invoice_spam left out" in text
    assert "# runtime rule off left out" in text
    loaded = yaml.safe_load(text)["antivirus_rules"]
    # the milter's parser reads the export as the role would render it
    cfg = parse_config({"antivirus": {"rules": loaded}})
    assert [r.name for r in cfg.rules] == ["executables", "iso", "fr"]
    assert cfg.rules[2].pattern.pattern == 'é"\\d+\\\\ ok: #1'
    assert not cfg.rules[1].archives
    # and the rules read back are the effective ones
    effective = [e.rule for e in merge(inv, rt) if e.enabled]
    assert list(inventory_rules(loaded)) == effective
    assert yaml.safe_load(export_yaml(inv, rt)) == yaml.safe_load(text)  # deterministic


def test_export_of_nothing_in_force_is_an_empty_list(inv):
    rt = set_enabled(
        set_enabled(RuntimeRules(), inv, "executables", False), inv, "invoice_spam", False
    )
    assert yaml.safe_load(export_yaml(inv, rt)) == {"antivirus_rules": []}


def test_export_escapes_what_yaml_would_misread():
    rule = ContentRule(
        "odd", "quarantine", header="Subject", pattern="\u2028x\U0001f600: [y] 'z' #"
    )
    loaded = yaml.safe_load(export_yaml([rule], RuntimeRules()))
    assert loaded["antivirus_rules"][0]["pattern"] == rule.pattern


def test_runtime_rules_stored_as_json_round_trip(inv):
    rt = add_rule(RuntimeRules(), inv, make_rule("iso", "quarantine", extensions=["iso"]))
    rt = add_rule(rt, inv, make_rule("pay", "reject", header="Subject", pattern="pay"))
    rt = set_enabled(set_enabled(rt, inv, "pay", False), inv, "executables", False)
    assert runtime_from_json(runtime_to_json(rt)) == rt


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not json", "not JSON"),
        ("[]", "expected keys"),
        ('{"rules": [], "disabled": ["bad name"]}', "malformed"),
        ('{"rules": [{"name": "x", "header": "S", "pattern": "(a+)+"}], "disabled": []}', "nests"),
        (
            '{"rules": [{"name": "x", "extensions": ["exe"], "sql": 1}], "disabled": []}',
            "unknown keys",
        ),
        ('{"rules": ["x"], "disabled": []}', "not a mapping"),
    ],
)
def test_tampered_stored_rules_are_refused(text, message):
    with pytest.raises(RuleError, match=message):
        runtime_from_json(text)
