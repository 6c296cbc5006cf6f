"""Content rules: header patterns and attachment extensions / types (pure logic)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from passerelle.antivirus.archives import ArchiveReport, inspect_zip
from passerelle.antivirus.config import ArchiveLimits, MimeLimits, Rule
from passerelle.antivirus.filetypes import detect_type, extension
from passerelle.antivirus.mime import Walk, decode_words

OVERSIZED_ARCHIVE = "oversized_archive"
MIME_TOO_DEEP = "mime_too_deep"
HEADER_MATCH_LIMIT = 64 * 1024
_SEVERITY = {"reject": 3, "quarantine": 2, "strip": 1}


@dataclass(frozen=True)
class Match:
    rule: str
    action: str
    detail: str
    path: tuple[int, ...] | None = None  # MIME part to strip; None = not locatable


@dataclass
class RulesResult:
    matches: list[Match]

    @property
    def action(self) -> str | None:
        """The strongest action: reject > quarantine > strip (None when nothing matched)."""
        if not self.matches:
            return None
        return max(self.matches, key=lambda m: _SEVERITY[m.action]).action

    def first(self, action: str) -> Match:
        return next(m for m in self.matches if m.action == action)

    def strip_paths(self) -> set[tuple[int, ...]]:
        return {m.path for m in self.matches if m.action == "strip" and m.path is not None}


def _attachment_hit(rule: Rule, names: Iterable[str], kind: str | None) -> str | None:
    for n in names:
        ext = extension(n)
        if ext and ext in rule.extensions:
            return f"file {n!r}"
    if kind is not None and kind in rule.types:
        return f"type {kind}"
    return None


def _header_hits(rules: Sequence[Rule], headers: Sequence[tuple[str, str]]) -> list[Match]:
    out: list[Match] = []
    for rule in rules:
        if not rule.is_header_rule or rule.pattern is None or rule.header is None:
            continue
        wanted = rule.header.lower()
        for name, value in headers:
            if name.lower() != wanted:
                continue
            v = value[:HEADER_MATCH_LIMIT]
            if rule.pattern.search(v) or rule.pattern.search(decode_words(v)):
                out.append(Match(rule.name, rule.action, f"header {rule.header}"))
                break
    return out


def evaluate(
    walk: Walk,
    headers: Sequence[tuple[str, str]],
    rules: Sequence[Rule],
    archives: ArchiveLimits,
    mime: MimeLimits,
) -> RulesResult:
    """Every rule that matches the message; raw-fallback hits are never strippable."""
    matches = _header_hits(rules, headers)
    att_rules = [r for r in rules if not r.is_header_rule]
    seen_names: set[str] = set()
    seen_types: set[str] = set()
    for part in walk.parts:
        kind = detect_type(part.payload)
        if not part.attachment and kind is None:
            continue
        seen_names.update(n.strip().lower() for n in part.names)
        if kind:
            seen_types.add(kind)
        report: ArchiveReport | None = None
        if kind == "zip":
            report = inspect_zip(part.payload, archives)
            if any(m.name == "[Content_Types].xml" and m.depth == 1 for m in report.members):
                kind = "ooxml"
            if report.uninspectable:
                matches.append(Match(OVERSIZED_ARCHIVE, archives.action, report.uninspectable))
        for rule in att_rules:
            hit = _attachment_hit(rule, part.names, kind)
            if hit is None and report is not None and rule.archives:
                for m in report.members:
                    hit = _attachment_hit(rule, [m.name], m.type)
                    if hit:
                        hit = f"{hit} in archive"
                        break
            if hit:
                if part.path == ():  # the whole message is the attachment: cannot strip
                    matches.append(Match(rule.name, _unlocatable(rule.action), hit))
                else:
                    matches.append(Match(rule.name, rule.action, hit, part.path))
    if walk.too_deep:
        matches.append(
            Match(MIME_TOO_DEEP, mime.action, f"MIME nested deeper than {mime.max_depth}")
        )
    # Fallback on the raw bytes: names and executables the parser did not see as parts.
    for rule in att_rules:
        for n in walk.raw_names:
            if n.strip().lower() in seen_names:
                continue
            hit = _attachment_hit(rule, [n], None)
            if hit:
                matches.append(Match(rule.name, _unlocatable(rule.action), f"{hit} (raw)"))
                break
        for t in walk.raw_types - seen_types:
            if t in rule.types:
                matches.append(Match(rule.name, _unlocatable(rule.action), f"type {t} (raw)"))
                break
    return RulesResult(matches)


def _unlocatable(action: str) -> str:
    """An attachment the parser cannot locate cannot be stripped: hold the message."""
    return "quarantine" if action == "strip" else action
