"""What to do with one message: rules, clamd, outbreak mode, quarantine (no milter here).

The milter collects the envelope, headers and body, then asks :class:`Engine` for a
:class:`Verdict` at end of DATA; the benchmark and the tests use the engine directly too.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import BinaryIO

from passerelle import decisionlog
from passerelle.antivirus import clamd as cl
from passerelle.antivirus.budget import Budget, BudgetExceeded
from passerelle.antivirus.config import AntivirusConfig, Rule
from passerelle.antivirus.mime import Walk, walk
from passerelle.antivirus.outbreak import OUTBREAK, AutoTrigger, OutbreakStore, signature_key
from passerelle.antivirus.quarantine import Quarantine
from passerelle.antivirus.rules import RulesResult, evaluate, header_hits
from passerelle.antivirus.runtime_rules import RuntimeRulesFile
from passerelle.antivirus.strip import strip_parts

log = logging.getLogger("passerelle.antivirus")

ACCEPT = "accept"
REJECT = "reject"
TEMPFAIL = "tempfail"
DISCARD = "discard"
UNINSPECTABLE = "uninspectable"  # quarantine reason
# Every header this milter writes: a client's copies are removed before ours are added.
OWNED_HEADERS = ("X-Virus-Scanned", "X-Passerelle-Stripped")


@dataclass
class Envelope:
    sender: str = ""
    recipients: list[str] = field(default_factory=list)
    client_ip: str = ""
    client_host: str = ""
    queue_id: str = ""


@dataclass
class Verdict:
    action: str
    code: str = ""
    xcode: str = ""
    text: str = ""
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes | None = None  # replacement body (strip)
    quarantine_id: str = ""
    log: str = ""
    scan: cl.ScanResult | None = None


class Engine:
    def __init__(
        self,
        cfg: AntivirusConfig,
        scanner: cl.ClamdClient | None = None,
        quarantine: Quarantine | None = None,
        outbreak: OutbreakStore | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        inspect_clock: Callable[[], float] = time.thread_time,
    ) -> None:
        self.cfg = cfg
        self.scanner = scanner or cl.ClamdClient(cfg.clamd, cfg.connect_timeout, cfg.timeout)
        self.quarantine = quarantine or Quarantine(
            cfg.quarantine_dir, clock=clock, release_command=cfg.release_command
        )
        self.outbreak = outbreak or OutbreakStore(cfg.outbreak_state, clock=clock)
        self.trigger = (
            AutoTrigger(
                cfg.outbreak.window,
                cfg.outbreak.threshold,
                cfg.outbreak.min_messages,
                clock=monotonic,
            )
            if cfg.outbreak.auto
            else None
        )
        self.monotonic = monotonic
        # The console's runtime rules on top of the inventory's (None: the inventory's only).
        self.runtime_rules = (
            RuntimeRulesFile(cfg.rules, cfg.runtime_rules, cfg.runtime_rules_interval, monotonic)
            if cfg.runtime_rules
            else None
        )
        # The inspection budget counts this thread's CPU time: monotonic, and not used up
        # by other sessions or processes loading the host (a busy gateway must not
        # quarantine legitimate mail for being slow), while a costly message is still cut.
        self.inspect_clock = inspect_clock
        self._sigver: tuple[float, str] = (-1e18, "")
        self._lock = threading.Lock()

    def signature_version(self) -> str:
        """clamd's signature version, cached for a minute ("" if clamd does not answer)."""
        now = self.monotonic()
        with self._lock:
            if now - self._sigver[0] < 60:
                return self._sigver[1]
        try:
            key = signature_key(self.scanner, self.cfg.signature_dir)
        except OSError:
            key = ""
        with self._lock:
            self._sigver = (now, key)
        return key

    def rules(self) -> tuple[Rule, ...]:
        """The content rules in force (one reference: a message sees one set whole)."""
        if self.runtime_rules is None:
            return self.cfg.rules
        return self.runtime_rules.rules()

    # ------------------------------------------------------------------------------------
    def _hold(
        self,
        env: Envelope,
        spool: BinaryIO,
        size: int,
        reason: str,
        detail: str,
        scan: cl.ScanResult | None,
    ) -> Verdict:
        sigver = self.signature_version() if reason == OUTBREAK else ""
        try:
            item = self.quarantine.store(
                spool,
                sender=env.sender,
                recipients=list(env.recipients),
                client_ip=env.client_ip,
                client_host=env.client_host,
                reason=reason,
                detail=detail,
                direction=self.cfg.direction,
                size=size,
                signature_version=sigver,
                queue_id=env.queue_id,
            )
        except OSError as exc:
            log.error("%s: quarantine write failed (%s): tempfail", env.queue_id, exc)
            return Verdict(
                TEMPFAIL,
                "451",
                "4.3.0",
                "Temporary failure, try again later",
                log=decisionlog.av_quarantine_failed(exc),
                scan=scan,
            )
        return Verdict(
            DISCARD,
            quarantine_id=item.id,
            scan=scan,
            log=decisionlog.av_quarantined(item.id, reason, detail),
        )

    def inspect(
        self, headers: Sequence[tuple[str, str]], raw: bytes
    ) -> tuple[Walk | None, RulesResult]:
        """The content rules on one message, within the time budget; never raises."""
        cfg = self.cfg
        budget = Budget(cfg.inspect_time_budget, self.inspect_clock)
        rules = self.rules()
        try:
            w = walk(raw, cfg.mime.max_depth, max_parts=cfg.mime.max_parts, budget=budget)
            return w, evaluate(w, headers, rules, cfg.archives, cfg.mime, budget)
        except BudgetExceeded as exc:
            why = str(exc)
        except Exception as exc:  # an inspection bug is a verdict, never a 451 loop
            log.exception("content inspection failed")
            why = f"inspection failed: {exc.__class__.__name__}: {exc}"[:300]
        try:
            hits = header_hits(rules, headers)
        except Exception:
            hits = []
        return None, RulesResult(hits, [why])

    def _uninspectable(
        self,
        env: Envelope,
        spool: BinaryIO,
        size: int,
        reasons: list[str],
        scan: cl.ScanResult | None,
    ) -> Verdict | None:
        """The uninspectable-content policy (None: accept, with a note in the header)."""
        why = "; ".join(reasons)[:500]
        policy = self.cfg.uninspectable_action
        if policy == REJECT:
            return Verdict(
                REJECT,
                "554",
                "5.7.1",
                "Message content cannot be inspected",
                log=decisionlog.av_uninspectable(why),
                scan=scan,
            )
        if policy == TEMPFAIL:
            return Verdict(
                TEMPFAIL,
                "451",
                "4.7.1",
                "Message content could not be inspected, try again later",
                log=decisionlog.av_uninspectable(why),
                scan=scan,
            )
        if policy == "quarantine":
            return self._hold(env, spool, size, UNINSPECTABLE, why, scan)
        return None

    def process(
        self, env: Envelope, headers: Sequence[tuple[str, str]], spool: BinaryIO, size: int
    ) -> Verdict:
        cfg = self.cfg
        oversize = size > cfg.max_size
        # The size check comes first: a message too large is refused before it is parsed.
        if oversize and cfg.on_oversize in (REJECT, TEMPFAIL):
            detail = f"{size} bytes > max_size {cfg.max_size}"
            if cfg.on_oversize == REJECT:
                return Verdict(
                    REJECT,
                    "552",
                    "5.3.4",
                    "Message too big to be scanned",
                    log=decisionlog.av_too_large(detail),
                )
            return Verdict(
                TEMPFAIL,
                "451",
                "4.7.1",
                "Message could not be scanned",
                log=decisionlog.av_too_large(detail),
            )
        spool.seek(0)
        raw = spool.read()
        w, rules = self.inspect(headers, raw)
        del raw
        if rules.action == REJECT:
            m = rules.first(REJECT)
            return Verdict(
                REJECT,
                "550",
                "5.7.1",
                f"Message refused by content rule {m.rule}",
                log=decisionlog.av_rule(m.rule, m.detail),
            )
        spool.seek(0)
        if (w is None or w.uninspectable) and cfg.uninspectable_action != ACCEPT:
            # Too costly for our parser (time, parts): clamd's MIME parser would choke on it
            # too; decide now rather than hold a clamd thread for it.
            held = self._uninspectable(env, spool, size, rules.uninspectable, None)
            if held is not None:
                return held
        if oversize:
            scan = cl.ScanResult(cl.TOO_LARGE, detail=f"{size} bytes > max_size {cfg.max_size}")
        else:
            scan = self.scanner.scan(spool)
        uninspectable = list(rules.uninspectable)
        if scan.status == cl.LIMITS:
            uninspectable.append(f"clamd stopped at its limits: {scan.detail}")
        if self.trigger is not None and scan.status in (cl.CLEAN, cl.INFECTED):
            self._auto(scan.infected)
        scanned_header: tuple[str, str] = ("X-Virus-Scanned", f"ClamAV on {cfg.hostname}")
        if scan.status == cl.INFECTED:
            if cfg.on_virus == REJECT:
                return Verdict(
                    REJECT,
                    "554",
                    "5.7.1",
                    f"Virus found: {scan.signature}",
                    log=decisionlog.av_virus(scan.signature, scan.host),
                    scan=scan,
                )
            return self._hold(env, spool, size, "signature", scan.signature, scan)
        if scan.status == cl.TOO_LARGE:
            scanned_header = ("X-Virus-Scanned", "not scanned (too large)")
        elif scan.status not in (cl.CLEAN, cl.LIMITS):
            if cfg.on_error == TEMPFAIL:
                return Verdict(
                    TEMPFAIL,
                    "451",
                    "4.7.1",
                    "Virus scanner unavailable, try again later",
                    log=decisionlog.av_clamd_error(scan.detail),
                    scan=scan,
                )
            scanned_header = ("X-Virus-Scanned", "not scanned (clamd unavailable)")
        if rules.action == "quarantine":
            m = rules.first("quarantine")
            return self._hold(env, spool, size, "rule", f"{m.rule}: {m.detail}", scan)
        if uninspectable:
            held = self._uninspectable(env, spool, size, uninspectable, scan)
            if held is not None:
                return held
            scanned_header = (
                scanned_header[0],
                scanned_header[1] + " (content not fully inspected)",
            )
        has_attachment = w.has_attachment if w is not None else True
        if has_attachment and self.outbreak.read().on:
            return self._hold(env, spool, size, OUTBREAK, "attachment held in outbreak mode", scan)
        verdict = Verdict(
            ACCEPT,
            headers=[scanned_header],
            scan=scan,
            log=decisionlog.av_clean(scan.status, scan.host)
            + (f", not fully inspected: {'; '.join(uninspectable)[:300]}" if uninspectable else ""),
        )
        if rules.action == "strip":
            targets = [
                (m.path, m.rule)
                for m in rules.matches
                if m.action == "strip" and m.path is not None
            ]
            locatable = len(targets) == len([m for m in rules.matches if m.action == "strip"])
            try:
                body = (
                    strip_parts(w.message, targets, cfg.hostname)
                    if locatable and w is not None and w.message is not None
                    else None
                )
            except Exception:  # a part that cannot be rewritten is held instead
                log.exception("strip failed")
                body = None
            if body is None:
                m = rules.first("strip")
                return self._hold(
                    env, spool, size, "rule", f"{m.rule}: {m.detail} (not strippable)", scan
                )
            names = sorted({m.rule for m in rules.matches if m.action == "strip"})
            verdict.body = body
            verdict.headers.append(("X-Passerelle-Stripped", ", ".join(names)))
            verdict.log = decisionlog.av_stripped(names)
        return verdict

    def _auto(self, infected: bool) -> None:
        assert self.trigger is not None
        if self.trigger.record(infected) and not self.outbreak.read().on:
            bad, total = self.trigger.share()
            try:
                self.outbreak.set(True, by="auto", reason=f"{bad}/{total} infected in window")
            except OSError as exc:
                log.error("outbreak: cannot write state: %s", exc)
