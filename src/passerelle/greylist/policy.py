"""The relaydelay decision on one triplet record: pure, time passed in.

States: a record is PENDING (seen, not yet accepted) or PASSED (accepted after its delay).

- no record: greylist, new PENDING record (reason ``new``);
- PENDING, ``now - first_seen < min_delay``: greylist again (``early``);
- PENDING, ``now - first_seen > pending_ttl``: forgotten, starts over (``restart``);
- PENDING, ``min_delay <= now - first_seen <= pending_ttl``: accepted, becomes PASSED
  (``delayed``: the message gets ``X-Delayed`` with that delay);
- PASSED, ``now - last_seen <= pass_ttl``: accepted, ``last_seen`` refreshed (``passed``);
- PASSED, ``now - last_seen > pass_ttl``: expired, starts over (``restart``).
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

PENDING = 0
PASSED = 1


@dataclass(frozen=True)
class Timing:
    min_delay: float = 40 * 60
    pending_ttl: float = 15 * 3600
    pass_ttl: float = 15 * 86400


@dataclass(frozen=True)
class Record:
    state: int
    first_seen: float
    last_seen: float
    passed_at: float | None = None
    attempts: int = 1  # greylisted attempts
    passes: int = 0  # accepted deliveries
    version: int = 0  # bumped by every update (compare-and-set in the store)

    def expires(self, timing: Timing) -> float:
        """When the record is useless and may be purged."""
        if self.state == PASSED:
            return self.last_seen + timing.pass_ttl
        return self.first_seen + timing.pending_ttl


@dataclass(frozen=True)
class Outcome:
    accept: bool
    reason: str  # new | early | restart | delayed | passed
    record: Record  # the record to store
    delay: float | None = None  # set on the first acceptance after a delay


def new_record(now: float) -> Record:
    return Record(state=PENDING, first_seen=now, last_seen=now, attempts=1, passes=0, version=0)


def evaluate(rec: Record | None, now: float, timing: Timing) -> Outcome:
    """Decide for one attempt on a triplet whose stored record is ``rec``.

    The records are built field by field (``dataclasses.replace`` costs several times more:
    this runs once per recipient)."""
    if rec is None:
        return Outcome(False, "new", new_record(now))
    if rec.state == PASSED:
        if now - rec.last_seen > timing.pass_ttl:
            return Outcome(False, "restart", _restarted(rec, now))
        return Outcome(
            True,
            "passed",
            Record(
                rec.state,
                rec.first_seen,
                max(now, rec.last_seen),
                rec.passed_at,
                rec.attempts,
                rec.passes + 1,
                rec.version + 1,
            ),
        )
    age = now - rec.first_seen
    if age > timing.pending_ttl:
        return Outcome(False, "restart", _restarted(rec, now))
    if age < timing.min_delay:
        return Outcome(
            False,
            "early",
            Record(
                rec.state,
                rec.first_seen,
                max(now, rec.last_seen),
                rec.passed_at,
                rec.attempts + 1,
                rec.passes,
                rec.version + 1,
            ),
        )
    passed = Record(PASSED, rec.first_seen, now, now, rec.attempts, 1, rec.version + 1)
    return Outcome(True, "delayed", passed, delay=age)


def _restarted(rec: Record, now: float) -> Record:
    """A new PENDING record in place of ``rec`` (its version bumped)."""
    return Record(PENDING, now, now, None, 1, 0, rec.version + 1)


def triplet_key(client: str, sender: str, recipient: str) -> bytes:
    """16-byte key of a triplet: SHA-256 of the exact bytes (8-bit safe, any length), each
    part preceded by its length (4 bytes, big-endian)."""
    c = client.encode("utf-8", "surrogateescape")
    s = sender.encode("utf-8", "surrogateescape")
    r = recipient.encode("utf-8", "surrogateescape")
    return hashlib.sha256(b"".join((_LEN(len(c)), c, _LEN(len(s)), s, _LEN(len(r)), r))).digest()[
        :16
    ]


_LEN = struct.Struct(">I").pack


def auto_whitelisted(passes: int, expires: float, now: float, threshold: int) -> bool:
    """A client group with ``threshold`` accepted deliveries, not expired, skips greylisting."""
    return threshold > 0 and passes >= threshold and now <= expires
