"""Content rules at runtime, merged over the inventory's (pure logic).

The reference's two kinds of rule, as the antivirus milter knows them
(``passerelle.antivirus.config``): a pattern on a header field (``header`` + ``pattern``), or
attachment extensions / detected types. The inventory's ``antivirus_rules`` are the baseline;
the console adds, changes and disables rules on top of it:
- a runtime rule has a name of its own: it never shares one with an inventory rule, so an
  inventory rule is never edited in place; to change one, disable it and add a runtime rule;
- ``merge`` gives the effective rule set, each rule with its origin (inventory or runtime) and
  whether it is enabled; ``milter_rules`` the enabled ones in the milter's format;
- ``export_yaml`` writes the effective set as inventory YAML (``antivirus_rules:``), so that
  what was tried at runtime becomes the baseline at the next deployment.

Every rule, inventory or runtime, goes through the milter's own parser (``parse_config``): a
rule the console accepts is one the milter loads. A runtime header pattern is bounded besides
(length, no nested repetition, no back-reference, few unbounded repeats): it is matched
against every message's headers.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from passerelle.antivirus.config import ACTIONS, KNOWN_TYPES, parse_config
from passerelle.antivirus.rules import MIME_TOO_DEEP, OVERSIZED_ARCHIVE
from passerelle.config import ConfigError

try:  # Python 3.11+: the parser is re._parser (sre_parse is deprecated)
    from re import _parser as _sre_parse  # type: ignore[attr-defined]
except ImportError:  # Python 3.9, 3.10
    import sre_parse as _sre_parse  # type: ignore[no-redef]

PATTERN_MAX = 512  # characters of a header pattern
HEADER_NAME_MAX = 64
EXTENSIONS_MAX = 64  # extensions (and types) of one attachment rule
RUNTIME_RULES_MAX = 200
UNBOUNDED_REPEATS_MAX = 4  # '*', '+', '{n,}' in one pattern
ORIGINS = ("inventory", "runtime")
RESERVED_NAMES = frozenset({OVERSIZED_ARCHIVE, MIME_TOO_DEEP})  # the milter's built-in rules

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_HEADER_NAME = re.compile(r"[\x21-\x39\x3b-\x7e]{1,64}")  # RFC 5322 ftext, HEADER_NAME_MAX
_EXTENSION = re.compile(r"[a-z0-9][a-z0-9_-]{0,15}")
_REPEATS = ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT")
_MAXREPEAT = int(_sre_parse.MAXREPEAT)


class RuleError(ValueError):
    """A rule or a change of the rule set is refused; the message says why (for the page)."""


@dataclass(frozen=True)
class ContentRule:
    """A content rule as the inventory writes it (the pattern as text)."""

    name: str
    action: str
    header: str | None = None
    pattern: str | None = None
    extensions: tuple[str, ...] = ()
    types: tuple[str, ...] = ()
    archives: bool = True

    @property
    def kind(self) -> str:
        return "header" if self.header is not None else "attachment"

    def to_inventory(self) -> dict[str, Any]:
        """The rule as one element of ``antivirus_rules`` (the inventory's own keys)."""
        if self.header is not None:
            return {
                "name": self.name,
                "header": self.header,
                "pattern": self.pattern,
                "action": self.action,
            }
        out: dict[str, Any] = {"name": self.name}
        if self.extensions:
            out["extensions"] = list(self.extensions)
        if self.types:
            out["types"] = list(self.types)
        if not self.archives:
            out["archives"] = False
        out["action"] = self.action
        return out


@dataclass(frozen=True)
class RuntimeRule:
    rule: ContentRule
    enabled: bool = True


@dataclass(frozen=True)
class RuntimeRules:
    """What the console changed: its own rules, and the inventory rules it disabled."""

    rules: tuple[RuntimeRule, ...] = ()
    disabled: frozenset[str] = frozenset()

    def names(self) -> list[str]:
        return [r.rule.name for r in self.rules]


@dataclass(frozen=True)
class EffectiveRule:
    rule: ContentRule
    origin: str  # inventory or runtime
    enabled: bool
    note: str = ""  # why a rule is not in force, when it is not


# -- validation --------------------------------------------------------------------------


def _milter_check(items: Sequence[Mapping[str, Any]]) -> list[Any]:
    """The antivirus milter's own parser over rules in the inventory's format."""
    try:
        return list(parse_config({"antivirus": {"rules": [dict(i) for i in items]}}).rules)
    except ConfigError as exc:
        raise RuleError(str(exc)) from None


def _from_milter(rule: Any) -> ContentRule:
    return ContentRule(
        name=rule.name,
        action=rule.action,
        header=rule.header,
        pattern=None if rule.pattern is None else rule.pattern.pattern,
        extensions=tuple(sorted(rule.extensions)),
        types=tuple(sorted(rule.types)),
        archives=rule.archives,
    )


def inventory_rules(items: object) -> tuple[ContentRule, ...]:
    """The inventory's ``antivirus_rules`` (a list of mappings), checked by the milter's parser."""
    if items is None:
        return ()
    if not isinstance(items, (list, tuple)) or not all(isinstance(i, Mapping) for i in items):
        raise RuleError("antivirus_rules must be a list of mappings")
    return tuple(_from_milter(r) for r in _milter_check(items))


def _op_name(op: object) -> str:
    return str(getattr(op, "name", op))


def _walk(items: Iterable[Any], inside_repeat: bool, counts: dict[str, int]) -> None:
    for op, av in items:
        name = _op_name(op)
        if name in _REPEATS:
            _low, high, sub = av
            if inside_repeat and high > 1:
                raise RuleError(
                    "pattern nests repetitions (like (a+)+): its cost can explode; rewrite it"
                )
            if high == _MAXREPEAT:
                counts["unbounded"] += 1
            _walk(sub, inside_repeat or high > 1, counts)
        elif name in ("GROUPREF", "GROUPREF_EXISTS"):
            raise RuleError("pattern refers back to a group: not allowed in a content rule")
        elif name == "SUBPATTERN":
            _walk(av[-1], inside_repeat, counts)
        elif name == "BRANCH":
            for alt in av[1]:
                _walk(alt, inside_repeat, counts)
        elif name in ("ASSERT", "ASSERT_NOT"):
            _walk(av[1], inside_repeat, counts)
        elif name == "ATOMIC_GROUP":
            _walk(av, inside_repeat, counts)


def check_pattern(pattern: object) -> str:
    """A header pattern fit to run on every message, else ``RuleError`` with why."""
    if not isinstance(pattern, str) or not pattern:
        raise RuleError("a header rule needs a pattern")
    if len(pattern) > PATTERN_MAX:
        raise RuleError(f"pattern is longer than {PATTERN_MAX} characters")
    if any(not c.isprintable() for c in pattern):
        raise RuleError(r"pattern has a control character: write it as an escape (\t, \x00)")
    try:
        re.compile(pattern)
        parsed = _sre_parse.parse(pattern)
    except (re.error, OverflowError, RecursionError) as exc:
        raise RuleError(f"invalid regular expression: {exc}") from None
    counts = {"unbounded": 0}
    _walk(parsed, False, counts)
    if counts["unbounded"] > UNBOUNDED_REPEATS_MAX:
        raise RuleError(
            f"pattern has more than {UNBOUNDED_REPEATS_MAX} unbounded repetitions (*, +, {{n,}})"
        )
    return pattern


def make_rule(
    name: object,
    action: object = "quarantine",
    header: object = None,
    pattern: object = None,
    extensions: Iterable[object] = (),
    types: Iterable[object] = (),
    archives: object = True,
) -> ContentRule:
    """A runtime rule from the console's form, checked; ``RuleError`` names what is wrong."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise RuleError("rule name: 1 to 64 letters, digits, '.', '_' or '-'")
    if name in RESERVED_NAMES:
        raise RuleError(f"rule name {name!r} is the milter's own")
    if action not in ACTIONS:
        raise RuleError(f"action must be one of {', '.join(ACTIONS)}")
    if not isinstance(archives, bool):
        raise RuleError("archives must be true or false")
    exts = _words(extensions, "extensions")
    kinds = _words(types, "types")
    if header is not None or pattern is not None:
        if exts or kinds:
            raise RuleError("a rule is either a header rule or an attachment rule")
        if not isinstance(header, str) or not _HEADER_NAME.fullmatch(header):
            raise RuleError(f"header: a header field name (1 to {HEADER_NAME_MAX} characters)")
        if action == "strip":
            raise RuleError("strip applies to attachments, not to headers")
        rule = ContentRule(name, str(action), header=header, pattern=check_pattern(pattern))
    else:
        clean = []
        for e in exts:
            e = e.lower().lstrip(".")
            if not _EXTENSION.fullmatch(e):
                raise RuleError(f"extension {e[:20]!r}: letters, digits, '_' or '-' (at most 16)")
            clean.append(e)
        for t in kinds:
            if t not in KNOWN_TYPES:
                raise RuleError(f"unknown type {t[:20]!r}; known: {', '.join(KNOWN_TYPES)}")
        if not clean and not kinds:
            raise RuleError("an attachment rule needs extensions or types")
        rule = ContentRule(
            name,
            str(action),
            extensions=tuple(sorted(set(clean))),
            types=tuple(sorted(set(kinds))),
            archives=archives,
        )
    _milter_check([rule.to_inventory()])  # the milter would load it
    return rule


def _words(values: Iterable[object], what: str) -> list[str]:
    if isinstance(values, str):
        values = [v for v in re.split(r"[\s,]+", values) if v]
    out = list(values)
    if len(out) > EXTENSIONS_MAX:
        raise RuleError(f"at most {EXTENSIONS_MAX} {what}")
    if not all(isinstance(v, str) for v in out):
        raise RuleError(f"{what} must be text")
    return [str(v) for v in out]


# -- changes of the runtime set ----------------------------------------------------------


def _inventory_names(inventory: Sequence[ContentRule]) -> set[str]:
    return {r.name for r in inventory}


def _refuse_inventory_name(inventory: Sequence[ContentRule], name: str) -> None:
    if name in _inventory_names(inventory):
        raise RuleError(
            f"{name!r} is an inventory rule: it is not edited here (disable it and add a "
            "rule of another name)"
        )


def add_rule(
    runtime: RuntimeRules, inventory: Sequence[ContentRule], rule: ContentRule
) -> RuntimeRules:
    _refuse_inventory_name(inventory, rule.name)
    if rule.name in runtime.names():
        raise RuleError(f"a runtime rule is already named {rule.name!r}")
    if len(runtime.rules) >= RUNTIME_RULES_MAX:
        raise RuleError(f"at most {RUNTIME_RULES_MAX} runtime rules")
    return replace(runtime, rules=(*runtime.rules, RuntimeRule(rule)))


def change_rule(
    runtime: RuntimeRules, inventory: Sequence[ContentRule], rule: ContentRule
) -> RuntimeRules:
    """Replace the runtime rule of the same name (its place and enabled state kept)."""
    _refuse_inventory_name(inventory, rule.name)
    if rule.name not in runtime.names():
        raise RuleError(f"no runtime rule named {rule.name!r}")
    return replace(
        runtime,
        rules=tuple(
            replace(r, rule=rule) if r.rule.name == rule.name else r for r in runtime.rules
        ),
    )


def set_enabled(
    runtime: RuntimeRules, inventory: Sequence[ContentRule], name: str, enabled: bool
) -> RuntimeRules:
    """Enable or disable a runtime rule, or an inventory rule (then only its override)."""
    if name in _inventory_names(inventory):
        disabled = set(runtime.disabled)
        if enabled:
            disabled.discard(name)
        else:
            disabled.add(name)
        return replace(runtime, disabled=frozenset(disabled))
    if name not in runtime.names():
        raise RuleError(f"no rule named {name!r}")
    return replace(
        runtime,
        rules=tuple(
            replace(r, enabled=enabled) if r.rule.name == name else r for r in runtime.rules
        ),
    )


def remove_rule(runtime: RuntimeRules, name: str) -> RuntimeRules:
    if name not in runtime.names():
        raise RuleError(f"no runtime rule named {name!r} (inventory rules can only be disabled)")
    return replace(runtime, rules=tuple(r for r in runtime.rules if r.rule.name != name))


# -- the effective set ---------------------------------------------------------------------


def merge(inventory: Sequence[ContentRule], runtime: RuntimeRules) -> list[EffectiveRule]:
    """Every rule with its origin: the inventory's first (in order), then the runtime ones.

    A runtime rule whose name an inventory rule took since (the inventory changed under it)
    is not in force: the inventory is the baseline."""
    names = _inventory_names(inventory)
    out = [
        EffectiveRule(r, "inventory", r.name not in runtime.disabled, _disabled_note(r, runtime))
        for r in inventory
    ]
    for rr in runtime.rules:
        if rr.rule.name in names:
            out.append(
                EffectiveRule(
                    rr.rule, "runtime", False, "shadowed by the inventory rule of that name"
                )
            )
        else:
            out.append(EffectiveRule(rr.rule, "runtime", rr.enabled, "" if rr.enabled else "off"))
    return out


def _disabled_note(rule: ContentRule, runtime: RuntimeRules) -> str:
    return "disabled at runtime" if rule.name in runtime.disabled else ""


def milter_rules(merged: Sequence[EffectiveRule]) -> list[dict[str, Any]]:
    """The enabled rules in the milter's format (``[[antivirus.rules]]``), checked by its parser."""
    items = [e.rule.to_inventory() for e in merged if e.enabled]
    _milter_check(items)
    return items


# -- storage and export ------------------------------------------------------------------


def runtime_to_json(runtime: RuntimeRules) -> str:
    return json.dumps(
        {
            "rules": [{**r.rule.to_inventory(), "enabled": r.enabled} for r in runtime.rules],
            "disabled": sorted(runtime.disabled),
        },
        sort_keys=True,
    )


def runtime_from_json(text: str) -> RuntimeRules:
    """The runtime set as stored; every rule checked again (a stored row is input too)."""
    try:
        data = json.loads(text)
    except ValueError:
        raise RuleError("stored runtime rules are not JSON") from None
    if not isinstance(data, dict) or set(data) != {"rules", "disabled"}:
        raise RuleError("stored runtime rules: expected keys rules and disabled")
    rules_data, disabled = data["rules"], data["disabled"]
    if not isinstance(rules_data, list) or not isinstance(disabled, list):
        raise RuleError("stored runtime rules: rules and disabled must be lists")
    if not all(isinstance(n, str) and _NAME.fullmatch(n) for n in disabled):
        raise RuleError("stored runtime rules: a disabled name is malformed")
    out = RuntimeRules(disabled=frozenset(disabled))
    for item in rules_data:
        if not isinstance(item, dict):
            raise RuleError("stored runtime rules: a rule is not a mapping")
        item = dict(item)
        enabled = item.pop("enabled", True)
        unknown = set(item) - {
            "name",
            "action",
            "header",
            "pattern",
            "extensions",
            "types",
            "archives",
        }
        if unknown or not isinstance(enabled, bool):
            raise RuleError("stored runtime rules: a rule has unknown keys")
        rule = make_rule(
            item.get("name"),
            item.get("action", "quarantine"),
            item.get("header"),
            item.get("pattern"),
            item.get("extensions", ()),
            item.get("types", ()),
            item.get("archives", True),
        )
        out = add_rule(out, (), rule)
        if not enabled:
            out = set_enabled(out, (), rule.name, False)
    return out


def yaml_str(text: str) -> str:
    """A YAML double-quoted scalar (every character that is not printable escaped)."""
    out = ['"']
    for c in text:
        if c in '"\\':
            out.append("\\" + c)
        elif c.isprintable() and c not in "\u2028\u2029\x85\ufeff" and not _surrogate(c):
            out.append(c)
        elif ord(c) < 0x100:
            out.append(f"\\x{ord(c):02x}")
        elif ord(c) < 0x10000:
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(f"\\U{ord(c):08x}")
    out.append('"')
    return "".join(out)


def _surrogate(c: str) -> bool:
    return 0xD800 <= ord(c) <= 0xDFFF


def _yaml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(yaml_str(str(v)) for v in value) + "]"
    return yaml_str(str(value))


def export_yaml(inventory: Sequence[ContentRule], runtime: RuntimeRules) -> str:
    """The effective rules as inventory YAML (``antivirus_rules:``), to replace the
    inventory's list: its rules in order, then the runtime ones; rules not in force are
    left out and named in a comment."""
    merged = merge(inventory, runtime)
    lines = [
        "# Content rules exported from the Passerelle console: the inventory's rules, then the",
        "# runtime ones. Rules not in force are left out (named in comments).",
    ]
    body: list[str] = []
    for e in merged:
        if not e.enabled:
            body.append(f"  # {e.origin} rule {e.rule.name} left out: {e.note or 'off'}")
            continue
        for i, (key, value) in enumerate(e.rule.to_inventory().items()):
            body.append(f"  {'- ' if i == 0 else '  '}{key}: {_yaml_value(value)}")
    if any(not line.lstrip().startswith("#") for line in body):
        lines.append("antivirus_rules:")
        lines.extend(body)
    else:
        lines.extend(line.strip() for line in body)
        lines.append("antivirus_rules: []")
    return "\n".join(lines) + "\n"


__all__ = [
    "ORIGINS",
    "ContentRule",
    "EffectiveRule",
    "RuleError",
    "RuntimeRule",
    "RuntimeRules",
    "add_rule",
    "change_rule",
    "check_pattern",
    "export_yaml",
    "inventory_rules",
    "make_rule",
    "merge",
    "milter_rules",
    "remove_rule",
    "runtime_from_json",
    "runtime_to_json",
    "set_enabled",
]
