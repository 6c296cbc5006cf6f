#!/usr/bin/python
# Copyright: Passerelle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ansible module: render a sendmail map (or class list) and rebuild its database."""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Iterable, Sequence
from typing import Any, NoReturn

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
---
module: sendmail_map
short_description: Render a sendmail map or list from data and rebuild its database
description:
  - Renders a sendmail text map (C(key value) lines, e.g. C(/etc/mail/access),
    C(/etc/mail/mailertable)) or a class list (one item a line, e.g.
    C(/etc/mail/relay-domains)) from a list of entries, deterministically sorted.
  - For maps, rebuilds the database with C(makemap) into a temporary name in the same
    directory and renames it over C(path.db), so sendmail never sees a half-built map.
  - Nothing is written and C(makemap) is not run when the rendered text equals the file
    and the database exists and is not older than the text.
  - If C(makemap) fails, the old text and database are left in place.
version_added: "0.1.0"
author: Passerelle
options:
  path:
    description: Path of the text source, e.g. C(/etc/mail/access).
    type: path
    required: true
  entries:
    description:
      - "For I(format=map), each item is a 2-item list C([key, value]) or a dict
        C({key: ..., value: ...})."
      - For I(format=list), each item is a string.
      - Keys must be non-empty and contain no whitespace; values must be non-empty, contain
        no newline and have no leading or trailing whitespace.
      - Duplicate keys with the same value are merged; with different values the module fails.
    type: list
    elements: raw
    default: []
  format:
    description: C(map) renders C(key<TAB>value) lines, C(list) renders one item a line.
    type: str
    choices: [map, list]
    default: map
  map_type:
    description: Database type given to C(makemap).
    type: str
    choices: [hash, btree, dbm]
    default: hash
  makemap:
    description: Path of the C(makemap) program.
    type: path
    default: /usr/sbin/makemap
  build:
    description:
      - Build the database with C(makemap). Defaults to C(true) for I(format=map) and
        C(false) for I(format=list) (class files are read as text by sendmail).
    type: bool
  header:
    description:
      - Comment written at the top of the text file, each line prefixed with C(# ).
      - An empty string writes no header.
    type: str
    default: "Managed by Ansible (Passerelle); local changes are overwritten."
  case_fold:
    description:
      - Lower-case keys (and list items), as C(makemap) does when indexing unless C(-f) is
        given, so that the text is exactly what is indexed and duplicate detection matches
        sendmail's lookups.
      - With C(false), keys are kept as given and C(makemap -f) is used.
    type: bool
    default: true
extends_documentation_fragment:
  - files
notes:
  - Supports check mode and diff mode.
  - I(map_type=dbm) produces C(path.dir) and C(path.pag) instead of C(path.db).
"""

EXAMPLES = r"""
- name: Mailertable
  sendmail_map:
    path: /etc/mail/mailertable
    entries: "{{ passerelle_domains | passerelle_domains | passerelle_mailertable }}"
    owner: root
    group: smmsp
    mode: "0640"
  notify: Reload sendmail

- name: Access map
  sendmail_map:
    path: /etc/mail/access
    entries:
      - ["To:example.org", "RELAY"]
      - {key: "Connect:192.0.2.10", value: "REJECT"}

- name: Relay domains class file (text only)
  sendmail_map:
    path: /etc/mail/relay-domains
    format: list
    entries: ["example.org", "example.net"]
"""

RETURN = r"""
path:
  description: Path of the text source.
  returned: always
  type: str
db:
  description: Database file(s) that the map builds to (empty for text-only).
  returned: always
  type: list
  elements: str
entries:
  description: Number of entries rendered (after merging identical duplicates).
  returned: always
  type: int
added:
  description: Data lines present in the new text and not in the old one.
  returned: always
  type: list
  elements: str
removed:
  description: Data lines present in the old text and not in the new one.
  returned: always
  type: list
  elements: str
text_changed:
  description: Whether the text differed (or was absent).
  returned: always
  type: bool
rebuilt:
  description: Whether the database was (or, in check mode, would be) rebuilt.
  returned: always
  type: bool
diff:
  description: Full texts before and after, for C(--diff).
  returned: diff mode
  type: dict
"""

MAP = "map"
LIST = "list"
DB_SUFFIXES: dict[str, tuple[str, ...]] = {
    "hash": (".db",),
    "btree": (".db",),
    "dbm": (".dir", ".pag"),
}


class MapError(ValueError):
    """Invalid entries; the message names the entry."""


def _scalar(value: Any, what: str, index: int, item: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise MapError(f"entries[{index}] {item!r}: {what} must be a string, got {value!r}")
    return str(value)


_GOOD_KEY = re.compile(r"[^\s#]\S*")
_GOOD_VALUE = re.compile(r"\S(?:[^\n\r\x00]*\S)?")


def _check_key(key: str, index: int, item: Any) -> None:
    if _GOOD_KEY.fullmatch(key) and key.isprintable():
        return  # fast path
    if key == "":
        raise MapError(f"entries[{index}] {item!r}: empty key")
    if any(ch.isspace() for ch in key):
        raise MapError(f"entries[{index}] {item!r}: key {key!r} contains whitespace")
    if key.startswith("#"):
        raise MapError(f"entries[{index}] {item!r}: key {key!r} starts with '#' (a comment)")
    raise MapError(f"entries[{index}] {item!r}: key {key!r} contains control characters")


def _check_value(value: str, index: int, item: Any) -> None:
    if _GOOD_VALUE.fullmatch(value):
        return  # fast path
    if value == "":
        raise MapError(f"entries[{index}] {item!r}: empty value")
    if "\n" in value or "\r" in value or "\0" in value:
        raise MapError(f"entries[{index}] {item!r}: value contains a newline or NUL")
    raise MapError(f"entries[{index}] {item!r}: value has leading or trailing whitespace")


def _split_item(item: Any, index: int) -> tuple[str, str]:
    if isinstance(item, dict):
        if set(item) != {"key", "value"}:
            raise MapError(f"entries[{index}] {item!r}: a dict entry needs exactly key and value")
        raw_key, raw_value = item["key"], item["value"]
    elif isinstance(item, (list, tuple)):
        if len(item) != 2:
            raise MapError(f"entries[{index}] {item!r}: a list entry needs exactly 2 items")
        raw_key, raw_value = item
    else:
        raise MapError(f"entries[{index}] {item!r}: expected [key, value] or {{key:, value:}}")
    return _scalar(raw_key, "key", index, item), _scalar(raw_value, "value", index, item)


def render_entries(entries: Sequence[Any], fmt: str = MAP, case_fold: bool = True) -> list[str]:
    """Validate ``entries`` and return the data lines, sorted, without header.

    Raises MapError naming the offending entry.
    """
    if fmt == LIST:
        items: set[str] = set()
        for index, item in enumerate(entries):
            key = _scalar(item, "item", index, item)
            _check_key(key, index, item)
            items.add(key.lower() if case_fold else key)
        return sorted(items)

    mapping: dict[str, tuple[str, int, Any]] = {}
    for index, item in enumerate(entries):
        key, value = _split_item(item, index)
        _check_key(key, index, item)
        _check_value(value, index, item)
        if case_fold:
            key = key.lower()
        seen = mapping.get(key)
        if seen is None:
            mapping[key] = (value, index, item)
        elif seen[0] != value:
            raise MapError(
                f"duplicate key {key!r} with different values: entries[{seen[1]}] "
                f"{seen[2]!r} and entries[{index}] {item!r}"
            )
    return [f"{key}\t{mapping[key][0]}" for key in sorted(mapping)]


def render_text(lines: Iterable[str], header: str | None) -> str:
    """Return the whole file text: header comment lines, then data lines."""
    out: list[str] = []
    if header:
        for line in header.splitlines():
            out.append(f"# {line}".rstrip())
    out.extend(lines)
    return "".join(f"{line}\n" for line in out)


def data_lines(text: str) -> list[str]:
    """Lines carrying data (as makemap sees them: not blank, not comments)."""
    return [line for line in text.splitlines() if line.strip() and not line.startswith("#")]


def line_changes(before: str, after: str) -> tuple[list[str], list[str]]:
    """Return (added, removed) data lines; a changed key counts as removed + added."""
    old, new = data_lines(before), data_lines(after)
    old_set, new_set = set(old), set(new)
    added = [line for line in new if line not in old_set]
    removed = [line for line in old if line not in new_set]
    return added, removed


def db_paths(path: str, map_type: str) -> list[str]:
    return [path + suffix for suffix in DB_SUFFIXES[map_type]]


def db_is_fresh(path: str, dbs: Sequence[str]) -> bool:
    """True when every database file exists and is not older than the text."""
    try:
        text_mtime = os.stat(path).st_mtime_ns
        return all(os.stat(db).st_mtime_ns >= text_mtime for db in dbs)
    except FileNotFoundError:
        return False


def read_text(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="surrogateescape", newline="") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def _remove(paths: Iterable[str]) -> None:
    for name in paths:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)


def _invocation(module: AnsibleModule) -> dict[str, Any]:
    """Module args echoed in the result, with ``entries`` summarised.

    AnsibleModule echoes every argument back (``invocation``), scanning it for no_log
    values on the way: for maps of tens of thousands of entries that doubles the cost of
    the task. The entries are in the file (and in ``diff``), so only their count is echoed.
    """
    args = dict(module.params)
    args["entries"] = f"<{len(args.get('entries') or [])} entries>"
    return {"module_args": args}


def _fail(module: AnsibleModule, msg: str, **kwargs: Any) -> NoReturn:
    module.fail_json(msg=msg, invocation=_invocation(module), **kwargs)


def apply_map(module: AnsibleModule) -> dict[str, Any]:
    """Do the work; return the result dict (module.fail_json on errors)."""
    params = module.params
    path: str = params["path"]
    fmt: str = params["format"]
    map_type: str = params["map_type"]
    build: bool = params["build"] if params["build"] is not None else fmt == MAP
    case_fold: bool = params["case_fold"]

    try:
        lines = render_entries(params["entries"] or [], fmt, case_fold)
    except MapError as exc:
        _fail(module, msg=f"{path}: {exc}")
    text = render_text(lines, params["header"])
    if os.path.isdir(path):
        _fail(module, msg=f"{path} is a directory")
    before = read_text(path)
    dbs = db_paths(path, map_type) if build else []

    text_changed = before != text
    rebuild = build and (text_changed or not db_is_fresh(path, dbs))
    added, removed = line_changes(before or "", text)
    result: dict[str, Any] = {
        "path": path,
        "db": dbs,
        "entries": len(lines),
        "added": added,
        "removed": removed,
        "text_changed": text_changed,
        "rebuilt": rebuild,
        "changed": text_changed or rebuild,
    }
    if module._diff:
        result["diff"] = {
            "before": before or "",
            "after": text,
            "before_header": path if before is not None else f"{path} (absent)",
            "after_header": path,
        }

    if module.check_mode:
        existing = [name for name in (path, *dbs) if os.path.exists(name)]
        result["changed"] = _set_attributes(module, existing, result["changed"])
        return result

    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        _fail(module, msg=f"{path}: directory {directory} does not exist", **result)

    tmp_text: str | None = None
    tmp_dbs: list[str] = []
    try:
        if text_changed or rebuild:
            fd, tmp_text = tempfile.mkstemp(
                prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory
            )
            with os.fdopen(fd, "w", encoding="utf-8", errors="surrogateescape") as handle:
                handle.write(text)
        if rebuild and tmp_text is not None:
            tmp_dbs = [tmp_text + suffix for suffix in DB_SUFFIXES[map_type]]
            _run_makemap(module, params["makemap"], map_type, fmt, case_fold, tmp_text, text)
            missing = [name for name in tmp_dbs if not os.path.exists(name)]
            if missing:
                _fail(module, msg=f"{path}: makemap did not produce {missing}", **result)
        # Text first, then the database: the database ends up not older than the text.
        if text_changed and tmp_text is not None:
            module.atomic_move(tmp_text, path, unsafe_writes=params["unsafe_writes"])
            tmp_text = None
        if tmp_dbs:
            for tmp_db, db in zip(tmp_dbs, dbs):
                module.atomic_move(tmp_db, db, unsafe_writes=params["unsafe_writes"])
            tmp_dbs = []
    finally:
        _remove([name for name in (tmp_text, *tmp_dbs) if name])

    result["changed"] = _set_attributes(module, [path, *dbs], result["changed"])
    return result


def _run_makemap(
    module: AnsibleModule,
    makemap: str,
    map_type: str,
    fmt: str,
    case_fold: bool,
    base: str,
    text: str,
) -> None:
    """Run ``makemap TYPE base < text``; fail (old files untouched) on error."""
    if not (os.path.isfile(makemap) and os.access(makemap, os.X_OK)):
        _fail(module, msg=f"makemap not found or not executable: {makemap}")
    cmd = [makemap]
    if not case_fold:
        cmd.append("-f")
    if fmt == LIST:
        cmd.append("-e")  # list items have no value
    cmd += [map_type, base]
    rc, out, err = module.run_command(cmd, data=text, binary_data=True)
    if rc != 0:
        _remove([base + suffix for suffix in DB_SUFFIXES[map_type]] + [base])
        _fail(
            module,
            msg=f"makemap failed (rc={rc}): {err.strip() or out.strip()}",
            cmd=cmd,
            rc=rc,
            stdout=out,
            stderr=err,
        )


def _set_attributes(module: AnsibleModule, paths: Sequence[str], changed: bool) -> bool:
    for name in paths:
        file_args = module.load_file_common_arguments(module.params, path=name)
        changed = module.set_fs_attributes_if_different(file_args, changed)
    return changed


ARGUMENT_SPEC: dict[str, dict[str, Any]] = {
    "path": {"type": "path", "required": True},
    "entries": {"type": "list", "elements": "raw", "default": []},
    "format": {"type": "str", "choices": [MAP, LIST], "default": MAP},
    "map_type": {"type": "str", "choices": list(DB_SUFFIXES), "default": "hash"},
    "makemap": {"type": "path", "default": "/usr/sbin/makemap"},
    "build": {"type": "bool"},
    "header": {
        "type": "str",
        "default": "Managed by Ansible (Passerelle); local changes are overwritten.",
    },
    "case_fold": {"type": "bool", "default": True},
}


def main() -> None:
    module = AnsibleModule(
        # AnsibleModule adds the file arguments to the spec in place: give it a copy.
        argument_spec={name: dict(spec) for name, spec in ARGUMENT_SPEC.items()},
        add_file_common_args=True,
        supports_check_mode=True,
    )
    result = apply_map(module)
    module.exit_json(**result, invocation=_invocation(module))


if __name__ == "__main__":
    main()
