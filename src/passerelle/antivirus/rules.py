"""Content rules: header patterns and attachment extensions / types (pure logic)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from passerelle.antivirus.archives import ArchiveReport, inspect_archive, looks_like_zip
from passerelle.antivirus.budget import Budget, BudgetExceeded, unlimited
from passerelle.antivirus.config import ArchiveLimits, MimeLimits, Rule
from passerelle.antivirus.filetypes import ARCHIVE_TYPES, detect_type, extension
from passerelle.antivirus.mime import Part, Walk, decode_words

OVERSIZED_ARCHIVE = "oversized_archive"
MIME_TOO_DEEP = "mime_too_deep"
# Names an archive could have whatever its content looks like (opened by libarchive).
ARCHIVE_EXTENSIONS = frozenset(
    {"zip", "rar", "7z", "gz", "tgz", "tar", "bz2", "tbz", "xz", "txz", "cab", "jar", "z"}
)
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
    # Why some content could not be inspected (the uninspectable-content policy applies).
    uninspectable: list[str] = field(default_factory=list)

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


def header_hits(rules: Sequence[Rule], headers: Sequence[tuple[str, str]]) -> list[Match]:
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


def _wants_archive(part: Part, kind: str | None) -> bool:
    if kind in ARCHIVE_TYPES:
        return True
    if kind is not None:
        return False
    if any(extension(n) in ARCHIVE_EXTENSIONS for n in part.names):
        return True
    return part.attachment and looks_like_zip(part.payload)  # zip after prepended bytes


def evaluate(
    walk: Walk,
    headers: Sequence[tuple[str, str]],
    rules: Sequence[Rule],
    archives: ArchiveLimits,
    mime: MimeLimits,
    budget: Budget | None = None,
) -> RulesResult:
    """Every rule that matches the message; raw-fallback hits are never strippable.

    A part whose inspection fails is recorded in ``uninspectable`` (with why); only
    :class:`BudgetExceeded` leaves this function, for the engine's policy."""
    budget = budget or unlimited()
    result = RulesResult(header_hits(rules, headers), list(walk.uninspectable))
    matches = result.matches
    att_rules = [r for r in rules if not r.is_header_rule]
    seen_names: set[str] = set()
    seen_types: set[str] = set()
    for part in walk.parts:
        budget.check()
        if part.error:
            result.uninspectable.append(part.error)
        try:
            _part_matches(part, att_rules, archives, budget, result, seen_names, seen_types)
        except BudgetExceeded:
            raise
        except Exception as exc:  # a verdict on this part, not an exception for the message
            where = ".".join(map(str, part.path)) or "body"
            result.uninspectable.append(f"part {where}: {exc.__class__.__name__}: {exc}"[:300])
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
    return result


def _part_matches(
    part: Part,
    att_rules: Sequence[Rule],
    archives: ArchiveLimits,
    budget: Budget,
    result: RulesResult,
    seen_names: set[str],
    seen_types: set[str],
) -> None:
    kind = detect_type(part.payload)
    if not part.attachment and kind is None:
        return
    seen_names.update(n.strip().lower() for n in part.names)
    if kind:
        seen_types.add(kind)
    report: ArchiveReport | None = None
    if _wants_archive(part, kind):
        report = inspect_archive(
            part.payload, archives, budget, name=part.names[0] if part.names else ""
        )
        if kind == "zip" and any(
            m.name == "[Content_Types].xml" and m.depth == 1 for m in report.members
        ):
            kind = "ooxml"
        if report.too_big:
            result.matches.append(Match(OVERSIZED_ARCHIVE, archives.action, report.too_big))
        if report.unreadable:
            result.uninspectable.append(report.unreadable)
    for rule in att_rules:
        hit = _attachment_hit(rule, part.names, kind)
        if hit is None and report is not None and rule.archives:
            for m in report.members:
                hit = _attachment_hit(rule, [m.name], m.type)
                if hit:
                    hit = f"{hit} in archive"
                    break
        if hit:
            if part.path == () or part.inner:  # cannot be stripped: hold the message
                result.matches.append(Match(rule.name, _unlocatable(rule.action), hit))
            else:
                result.matches.append(Match(rule.name, rule.action, hit, part.path))


def _unlocatable(action: str) -> str:
    """An attachment the parser cannot locate cannot be stripped: hold the message."""
    return "quarantine" if action == "strip" else action
