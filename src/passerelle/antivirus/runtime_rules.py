"""Runtime content rules: the console's rules, loaded on top of the inventory's while the
milter runs (no restart).

The console's gateway side (``passerelle console gateway-sync``) writes the runtime set it
reads from the shared database to a file (``rules.runtime_to_json``: the runtime rules, each
enabled or not, and the inventory rules disabled at runtime). The milter's ``RuntimeRulesFile``
looks at that file at most every ``interval`` seconds (its mtime, size and inode), and when it
changed parses it again: every rule through the milter's own parser (``antivirus.config``,
by way of ``console.rules.runtime_from_json``) and merged over the inventory's by
``console.rules.merge`` (an inventory rule wins its name; an inventory rule disabled at
runtime is left out). The new rule set replaces the old one by one reference: a message sees
the old set or the new, never a mix.

A file that cannot be read or parsed keeps the last good rules and is logged once (until it
changes again); a missing file means no runtime rules (the inventory's rules alone). Nothing
here raises into a milter callback.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence

from passerelle.antivirus.config import Rule, parse_config

log = logging.getLogger("passerelle.antivirus.runtime_rules")

FILE_MAX = 4 * 1024 * 1024  # bytes: far above RUNTIME_RULES_MAX rules
DEFAULT_INTERVAL = 5.0  # seconds between two looks at the file

# (mtime_ns, size, inode) of the file: when it changes, the file is read again
Stamp = tuple[int, int, int]
_UNSTATABLE: Stamp = (-1, -1, -1)  # the file could not even be looked at


def effective_rules(inventory: Sequence[Rule], text: str | None) -> tuple[Rule, ...]:
    """The rules in force: the inventory's (as loaded, in order, less those disabled at
    runtime), then the runtime rules that are enabled and not shadowed. ``text`` is the
    runtime file (None: no file). Raises ``RuleError`` (a ValueError) on a bad file."""
    from passerelle.console.rules import _from_milter, merge, milter_rules, runtime_from_json

    if text is None:
        return tuple(inventory)
    runtime = runtime_from_json(text)
    merged = merge([_from_milter(r) for r in inventory], runtime)
    items = milter_rules(merged)  # checked by the milter's parser
    by_name = {r.name: r for r in inventory}
    runtime_rules = {r.name: r for r in parse_config({"antivirus": {"rules": items}}).rules}
    out: list[Rule] = []
    for e in merged:
        if not e.enabled:
            continue
        # the inventory's own objects (its compiled patterns), the runtime ones parsed
        out.append(by_name[e.rule.name] if e.origin == "inventory" else runtime_rules[e.rule.name])
    return tuple(out)


def _stamp(path: str) -> Stamp | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def _read(path: str) -> str:
    # O_NOFOLLOW: a file in a folder another user may write; O_NONBLOCK: never a FIFO's wait
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as fh:
        data = fh.read(FILE_MAX + 1)
    if len(data) > FILE_MAX:
        raise ValueError(f"larger than {FILE_MAX} bytes")
    return data.decode("utf-8")


class RuntimeRulesFile:
    """The rules in force (``rules()``), the runtime file looked at every ``interval`` s."""

    def __init__(
        self,
        inventory: Sequence[Rule],
        path: str,
        interval: float = DEFAULT_INTERVAL,
        monotonic: Callable[[], float] = time.monotonic,
        stat_file: Callable[[str], Stamp | None] = _stamp,
        read: Callable[[str], str] = _read,
    ) -> None:
        self.inventory = tuple(inventory)
        self.path = path
        self.interval = interval
        self.monotonic = monotonic
        self._stamp_of = stat_file
        self._read = read
        self._rules: tuple[Rule, ...] = self.inventory  # the one reference swapped
        self._stamp: Stamp | None = None  # of the rules in force
        self._failed: Stamp | None = None  # of the file last refused
        self._checked: float | None = None
        self._lock = threading.Lock()
        self.check()

    def rules(self) -> tuple[Rule, ...]:
        """The rules in force, looking at the file when ``interval`` has passed."""
        now = self.monotonic()
        due = self._checked is None or now - self._checked >= self.interval
        # One thread looks; the others go on with the rules in force meanwhile.
        if due and self._lock.acquire(blocking=False):
            try:
                self._checked = now
                self._check_locked()
            finally:
                self._lock.release()
        return self._rules

    def check(self) -> None:
        """Look at the file now."""
        with self._lock:
            self._checked = self.monotonic()
            self._check_locked()

    def _check_locked(self) -> None:
        stamp: Stamp | None = _UNSTATABLE
        try:
            stamp = self._stamp_of(self.path)
            if stamp is None:
                if self._stamp is not None or self._rules is not self.inventory:
                    log.warning("runtime rules %s gone: the inventory's rules alone", self.path)
                self._rules, self._stamp, self._failed = self.inventory, None, None
                return
            if stamp == self._stamp or stamp == self._failed:
                return
            rules = effective_rules(self.inventory, self._read(self.path))
        except Exception as exc:  # a bad file is logged, never raised into a callback
            if stamp is not None and stamp != self._failed:
                log.error(
                    "runtime rules %s refused (%s): keeping the %d rules in force",
                    self.path,
                    str(exc)[:300],
                    len(self._rules),
                )
                self._failed = stamp
            return
        self._rules, self._stamp, self._failed = rules, stamp, None
        log.info(
            "runtime rules %s loaded: %d rules in force (%d from the inventory)",
            self.path,
            len(rules),
            len(self.inventory),
        )
