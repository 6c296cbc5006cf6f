"""Netstrings (``<length>:<bytes>,``), the framing of sendmail's socket map protocol.

Pure logic: ``encode`` frames one payload, ``NetstringReader`` takes bytes as they arrive
and yields complete payloads. A malformed stream raises ``NetstringError`` (the framing is
lost: the caller answers once and closes that connection, the daemon goes on).
"""

from __future__ import annotations

# sendmail never sends more than a map name and an address; anything bigger is garbage.
MAX_PAYLOAD = 10_000
_MAX_DIGITS = len(str(MAX_PAYLOAD))


class NetstringError(ValueError):
    """The peer did not send a valid netstring."""


def encode(payload: bytes | str) -> bytes:
    data = payload.encode("utf-8") if isinstance(payload, str) else payload
    return b"%d:%s," % (len(data), data)


def decode(data: bytes, max_payload: int = MAX_PAYLOAD) -> bytes:
    """Exactly one netstring -> its payload."""
    reader = NetstringReader(max_payload)
    payloads = reader.feed(data)
    if len(payloads) != 1 or reader.pending:
        raise NetstringError(f"expected exactly one netstring, got {data[:60]!r}")
    return payloads[0]


class NetstringReader:
    """Incremental decoder: ``feed()`` bytes, get back the payloads completed so far."""

    def __init__(self, max_payload: int = MAX_PAYLOAD) -> None:
        self.max_payload = max_payload
        self._buf = b""

    @property
    def pending(self) -> bool:
        """Bytes of an incomplete netstring are waiting."""
        return bool(self._buf)

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        out: list[bytes] = []
        while self._buf:
            colon = self._buf.find(b":")
            if colon < 0:
                if len(self._buf) > _MAX_DIGITS or not self._buf.isdigit():
                    raise NetstringError(f"bad netstring length {self._buf[:20]!r}")
                break
            digits = self._buf[:colon]
            if not digits.isdigit() or len(digits) > _MAX_DIGITS:
                raise NetstringError(f"bad netstring length {digits[:20]!r}")
            if len(digits) > 1 and digits.startswith(b"0"):
                raise NetstringError(f"bad netstring length {digits!r} (leading zero)")
            size = int(digits)
            if size > self.max_payload:
                raise NetstringError(f"netstring of {size} bytes (at most {self.max_payload})")
            end = colon + 1 + size
            if len(self._buf) < end + 1:
                break
            if self._buf[end : end + 1] != b",":
                raise NetstringError("netstring not terminated by ','")
            out.append(self._buf[colon + 1 : end])
            self._buf = self._buf[end + 1 :]
        return out
