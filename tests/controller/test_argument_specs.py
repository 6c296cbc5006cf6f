"""Contract: every role's ``meta/argument_specs.yml`` agrees with its ``defaults/main.yml``.

For each role: the same variables (internal ``__`` ones excluded) in both; where the spec
states a literal ``default:``, it equals the defaults' value; and a literal default has the
spec's ``type``. Templated values (``{{ ... }}``) are not compared. Every entry point of the
spec (``main`` and any other) is read; a variable may be in any of them. A required option of
an entry point other than ``main`` is an argument its caller passes (``tasks_from``, e.g.
``passerelle_tools``' ``milter``), not a role default: it is not looked for in the defaults.

``test_the_check_catches_*``: a spec that lost or gained a variable, a default or a type that
changed, must each be reported by the same check.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

ROLES = Path(__file__).resolve().parents[2] / "roles"
ALL_ROLES = sorted(p.name for p in ROLES.iterdir() if (p / "defaults" / "main.yml").exists())

TYPES: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "int": (int,),
    "bool": (bool,),
    "list": (list,),
    "dict": (dict,),
    "float": (float, int),
    "path": (str,),
    "raw": (object,),
}


def _templated(value: Any) -> bool:
    if isinstance(value, str):
        return "{{" in value or "{%" in value
    if isinstance(value, list):
        return any(_templated(v) for v in value)
    if isinstance(value, dict):
        return any(_templated(v) for v in value.values())
    return False


def _options(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for entry in (spec.get("argument_specs") or {}).values():
        out.update((entry or {}).get("options") or {})
    return out


def _arguments(spec: dict[str, Any]) -> set[str]:
    """Required options of the entry points other than ``main``: their callers pass them."""
    return {
        name
        for entry_point, entry in (spec.get("argument_specs") or {}).items()
        if entry_point != "main"
        for name, opt in ((entry or {}).get("options") or {}).items()
        if (opt or {}).get("required") and "default" not in (opt or {})
    }


def _is(value: Any, typ: str) -> bool:
    kinds = TYPES.get(typ, (object,))
    if isinstance(value, bool) and bool not in kinds and object not in kinds:
        return False
    return isinstance(value, kinds)


def drift(defaults: dict[str, Any], spec: dict[str, Any]) -> list[str]:
    """What differs between a role's defaults and its argument spec."""
    options = _options(spec)
    public = {k: v for k, v in defaults.items() if not k.startswith("__")}
    out = [f"{k}: in defaults, not in the spec" for k in sorted(public.keys() - options.keys())]
    out += [
        f"{k}: in the spec, not in defaults"
        for k in sorted(options.keys() - public.keys() - _arguments(spec))
        if not k.startswith("__")
    ]
    for name in sorted(public.keys() & options.keys()):
        value, opt = public[name], options[name] or {}
        if _templated(value):
            continue
        typ = opt.get("type", "str")
        if value is not None and not _is(value, typ):
            out.append(f"{name}: default {value!r} is not of the spec's type {typ}")
        if "default" in opt and not _templated(opt["default"]) and opt["default"] != value:
            out.append(f"{name}: spec default {opt['default']!r} != defaults {value!r}")
        if "default" in opt and _is(opt["default"], "bool") != _is(value, "bool"):
            out.append(f"{name}: spec default {opt['default']!r} and defaults {value!r} differ")
    return out


def _load(role: str) -> tuple[dict[str, Any], dict[str, Any]]:
    base = ROLES / role
    defaults = yaml.safe_load((base / "defaults" / "main.yml").read_text()) or {}
    spec_file = base / "meta" / "argument_specs.yml"
    assert spec_file.exists(), f"{role}: no meta/argument_specs.yml"
    return defaults, yaml.safe_load(spec_file.read_text()) or {}


@pytest.mark.parametrize("role", ALL_ROLES)
def test_argument_specs_agree_with_defaults(role: str) -> None:
    defaults, spec = _load(role)
    assert drift(defaults, spec) == []


# -- tests of the test -------------------------------------------------------------------------
def _a_literal(defaults: dict[str, Any], spec: dict[str, Any], kind: type) -> str:
    options = _options(spec)
    for name, value in defaults.items():
        if name in options and type(value) is kind and not _templated(value):
            return name
    raise AssertionError(f"no literal {kind.__name__} default")


def test_the_check_catches_a_spec_that_drifted() -> None:
    defaults, spec = _load("greylist")
    assert drift(defaults, spec) == []
    main = spec["argument_specs"]["main"]["options"]

    lost = copy.deepcopy(spec)
    name = next(iter(main))
    del lost["argument_specs"]["main"]["options"][name]
    assert drift(defaults, lost) == [f"{name}: in defaults, not in the spec"]

    gained = copy.deepcopy(spec)
    gained["argument_specs"]["main"]["options"]["greylist_new_knob"] = {"type": "int"}
    assert drift(defaults, gained) == ["greylist_new_knob: in the spec, not in defaults"]

    name = _a_literal(defaults, spec, int)
    other = copy.deepcopy(spec)
    other["argument_specs"]["main"]["options"][name]["default"] = defaults[name] + 1
    assert drift(defaults, other)

    retyped = copy.deepcopy(spec)
    retyped["argument_specs"]["main"]["options"][name]["type"] = "list"
    assert drift(defaults, retyped)


def test_the_check_catches_defaults_that_drifted() -> None:
    defaults, spec = _load("greylist")
    name = _a_literal(defaults, spec, str)
    assert drift({**defaults, name: 3}, spec)
    assert drift({**defaults, name: True}, spec)
    assert drift({**defaults, "greylist_undocumented": 1}, spec)
    assert drift({**defaults, "__greylist_internal": 1}, spec) == []
    name = _a_literal(defaults, spec, bool)
    opt = spec["argument_specs"]["main"]["options"][name]
    if "default" in opt:
        assert drift({**defaults, name: not defaults[name]}, spec)


def test_the_check_takes_only_required_entry_point_options_as_arguments() -> None:
    defaults, spec = _load("passerelle_tools")
    assert drift(defaults, spec) == []
    milter = spec["argument_specs"]["milter"]["options"]
    assert milter, "no milter entry point: the exemption is not exercised"
    name = next(iter(milter))

    optional = copy.deepcopy(spec)
    del optional["argument_specs"]["milter"]["options"][name]["required"]
    assert drift(defaults, optional) == [f"{name}: in the spec, not in defaults"]

    in_main = copy.deepcopy(spec)
    in_main["argument_specs"]["main"]["options"]["passerelle_tools_knob"] = {
        "type": "str",
        "required": True,
    }
    assert drift(defaults, in_main) == ["passerelle_tools_knob: in the spec, not in defaults"]
