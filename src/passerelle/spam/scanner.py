"""What to do with one message: scan it (with image text) and decide the header edits.

Kept apart from pymilter so the whole decision can be tested without a milter.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from passerelle import decisionlog
from passerelle.spam.config import SpamConfig
from passerelle.spam.marking import (
    Header,
    HeaderEdit,
    Partial,
    marking_edits,
    not_scanned_edits,
    tier,
)
from passerelle.spam.ocr import OcrLimits, OcrRunner, augment, tesseract_runner
from passerelle.spam.spamc import SpamdClient, SpamdError

log = logging.getLogger("passerelle.spam")

_NL = re.compile(rb"\r?\n")


def build_message(headers: Sequence[Header], body: bytes) -> bytes:
    """The message as sendmail holds it: headers (CRLF, folding kept), blank line, body."""
    out = bytearray()
    for name, value in headers:
        line = f"{name}: {value}".encode("utf-8", "surrogateescape")
        out += _NL.sub(b"\r\n", line) + b"\r\n"
    out += b"\r\n"
    out += body
    return bytes(out)


def cut_body(body: bytes, budget: int) -> bytes:
    """At most ``budget`` bytes of ``body``, cut after the last line end that fits; a single
    line longer than that is cut where the budget ends."""
    if len(body) <= budget:
        return body
    head = body[: max(0, budget)]
    end = head.rfind(b"\n")
    return head[: end + 1] if end >= 0 else head


@dataclass(frozen=True)
class Outcome:
    action: str  # "accept" | "tempfail"
    edits: list[HeaderEdit]
    summary: str  # for the log line


@dataclass
class Scanner:
    config: SpamConfig
    client: SpamdClient
    ocr: OcrRunner | None = None
    clock: Callable[[], float] = field(default=time.monotonic)

    @classmethod
    def from_config(cls, config: SpamConfig) -> Scanner:
        client = SpamdClient(
            hosts=config.spamd,
            connect_timeout=config.connect_timeout,
            timeout=config.timeout,
            user=config.user,
        )
        ocr = None
        if config.ocr.enabled:
            ocr = tesseract_runner(config.ocr.tesseract, config.ocr.languages)
        return cls(config, client, ocr)

    def scan(
        self, headers: Sequence[Header], body: bytes, size: int, received: str | None = None
    ) -> Outcome:
        """``size`` is the full message size; ``body`` may be cut when over max_size.

        Over ``max_size``, spamd gets the headers intact and as much of the body as fits in
        ``max_size`` bytes, cut at a line end; the verdict (and its tier) is given for that
        part and the message says so (``partial_header``).

        ``received``: the Received value of the current hop (see ``received_header``), put on
        top of the copy spamd sees; the header edits are computed on ``headers`` only.
        """
        cfg = self.config
        seen = [("Received", received), *headers] if received else headers
        partial = None
        if size > cfg.max_size:
            head = len(build_message(seen, b""))
            body = cut_body(body, cfg.max_size - head)
            own = len(build_message(headers, b""))  # without the Received made for spamd
            partial = Partial(own + len(body), size, cfg.max_size)
        message = build_message(seen, body)
        images = 0
        if self.ocr is not None:
            o = cfg.ocr
            limits = OcrLimits(o.max_images, o.max_image_size, o.timeout, o.total_timeout)
            try:
                message, images = augment(message, self.ocr, limits, self.clock)
            except Exception as exc:  # OCR is a bonus: never lose the scan because of it
                log.warning("ocr failed: %s", exc)
        start = self.clock()
        try:
            result, host = self.client.check(message)
        except SpamdError as exc:
            if cfg.on_error == "tempfail":
                return Outcome("tempfail", [], decisionlog.spam_unavailable(exc, tempfail=True))
            reason = "spamd unavailable"
            return Outcome(
                "accept",
                not_scanned_edits(headers, reason, cfg.tiers, cfg.hostname),
                decisionlog.spam_unavailable(exc, tempfail=False),
            )
        took = self.clock() - start
        level = tier(result.score, cfg.tiers) or "none"
        summary = decisionlog.spam_scanned(
            result.score,
            result.threshold,
            level,
            result.rules,
            host,
            took,
            images,
            (partial.scanned, partial.size) if partial else None,
        )
        edits = marking_edits(headers, result, cfg.tiers, cfg.hostname, partial)
        return Outcome("accept", edits, summary)
