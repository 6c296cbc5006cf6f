"""The greylisting engine: whitelists, store and clock put together.

``Greylister.check`` gives one ``Verdict`` per recipient. Store calls run on a small pool of
worker threads (one database connection each) and the caller waits at most
``store_timeout``: a slow or dead store never holds a decision longer than that. A serial
store (the milter's SQLite store, ``SQLStore.serial``) is called in the caller's own thread
instead, one call at a time under ``store.lock``: the wait for the lock is bounded by
``store_timeout`` and so is the call (SQLite's busy timeout on locks, and the store's
checkpointer thread interrupts a call past its deadline), without the cost of handing every
decision to another thread. After a store
error the store is skipped for ``store_retry`` seconds, so a dead database costs one timeout,
not one per recipient. Then ``on_store_error`` applies: ``accept`` (the message is marked
``X-Greylist: skipped``) or ``tempfail``.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from passerelle import decisionlog
from passerelle.durations import format_duration
from passerelle.greylist.addresses import normalise_recipient, normalise_sender
from passerelle.greylist.config import GreylistConfig
from passerelle.greylist.network import group_of, parse_ip
from passerelle.greylist.policy import auto_whitelisted, triplet_key
from passerelle.greylist.stats import Counters
from passerelle.greylist.store import SQLStore, Triplet
from passerelle.greylist.whitelist import Whitelist

log = logging.getLogger("passerelle.greylist")

GREYLIST_REPLY = ("451", "4.7.1", "greylisted, retry later")
STORE_ERROR_REPLY = ("451", "4.3.0", "greylisting temporarily unavailable, retry later")

# The headers this milter writes, and so owns: every copy a client sends is removed.
DELAYED_HEADER = "X-Delayed"
SKIPPED_HEADER = "X-Greylist"
OWNED_HEADERS = (DELAYED_HEADER, SKIPPED_HEADER)

# reasons that mean "whitelisted one way or another" (counted as whitelisted machines)
EXEMPT_REASONS = ("trusted", "client", "auth", "sender", "recipient", "auto")


@dataclass(frozen=True)
class Client:
    """What is known about the SMTP client at connect time."""

    ip: str
    group: str
    hostname: str | None  # verified hostname only
    exemption: str | None  # "trusted 127.0.0.0/8", "client mx.example.org", ...


@dataclass(frozen=True)
class Verdict:
    accept: bool
    reason: str  # trusted | client | auth | sender | recipient | auto | new | early |
    # restart | delayed | passed | store-error
    detail: str = ""
    delay: float | None = None  # first acceptance after a delay
    skipped: bool = False  # accepted without greylisting because the store failed
    reply: tuple[str, str, str] | None = None  # SMTP reply when not accepted
    auto: bool | None = None  # client group auto-whitelisted (None: not looked up)


class Greylister:
    def __init__(
        self,
        cfg: GreylistConfig,
        store: SQLStore,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cfg = cfg
        self.store = store
        self.clock = clock
        self.monotonic = monotonic
        self.timing = cfg.timing
        self.counters = Counters()
        self._config_wl = cfg.whitelist()
        self._wl = self._config_wl
        self._down_until = 0.0
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=cfg.store_threads, thread_name_prefix="greylist-store"
        )
        self._stop = threading.Event()
        self._bg: threading.Thread | None = None
        self._serial = bool(getattr(store, "serial", False))

    # -- whitelists --------------------------------------------------------------------
    @property
    def whitelist(self) -> Whitelist:
        return self._wl

    def refresh_whitelist(self) -> int:
        """Reload the database whitelist table (merged with the config's); entries read."""
        entries = self._run(self.store.whitelist_list)
        wl = self.cfg.whitelist()
        bad = wl.extend(((k, e) for k, e, _c, _t in entries), strict=False)
        for b in bad:
            log.warning("ignoring bad whitelist table entry: %s", b)
        self._wl = wl
        return len(entries)

    def client(self, ip: str, hostname: str | None = None, verified: bool = False) -> Client:
        """Classify the client once per connection."""
        addr = parse_ip(ip)
        host = hostname.strip("[]").lower() if hostname and verified else None
        if host and parse_ip(host) is not None:
            host = None  # "[1.2.3.4]": no PTR
        group = group_of(addr, ip, self.cfg.ipv4_prefix, self.cfg.ipv6_prefix)
        if addr is None:
            group = group.encode("ascii", "backslashreplace").decode("ascii")[:64]
        wl = self._wl
        exemption = None
        m = wl.trusted.match(addr, None)
        if m:
            exemption = f"trusted {m}"
        else:
            m = wl.clients.match(addr, host)
            if m:
                exemption = f"client {m}"
        return Client(ip=ip, group=group, hostname=host, exemption=exemption)

    def message_exemption(self, client: Client, sender: str, auth: str | None) -> str | None:
        """Exemption valid for a whole message (client, authenticated, sender)."""
        if client.exemption:
            return client.exemption
        if auth:
            return "auth"
        m = self._wl.senders.match(sender)
        return f"sender {m}" if m else None

    # -- decision ----------------------------------------------------------------------
    def check(
        self,
        client: Client,
        sender: str,
        recipient: str,
        exemption: str | None = None,
        auto: bool | None = None,
    ) -> Verdict:
        """Decide for one recipient. ``exemption`` comes from message_exemption; ``auto``
        is the cached auto-whitelist state of the client group (None: look it up)."""
        now = self.clock()
        if exemption is None:
            exemption = client.exemption
        if exemption is None:
            m = self._wl.recipients.match(recipient)
            if m:
                exemption = f"recipient {m}"
        if exemption is not None:
            self._count_exempt(now, client, exemption)
            return Verdict(True, exemption.split(" ", 1)[0], detail=exemption, auto=auto)
        if auto:
            self._count_exempt(now, client, "auto")
            return Verdict(True, "auto", auto=True)
        if self.monotonic() < self._down_until:
            return self._store_failed(now, client, "store unavailable (backing off)")
        snd = normalise_sender(sender) if self.cfg.normalise_sender else sender
        rcpt = normalise_recipient(recipient)
        t = Triplet(triplet_key(client.group, snd, rcpt), client.group, snd, rcpt)
        try:
            verdict = self._run(self._store_check, t, now, auto)
        except Exception as exc:
            self._down_until = self.monotonic() + self.cfg.store_retry
            log.error("greylist store error (%s): %s", type(exc).__name__, exc or "timeout")
            return self._store_failed(now, client, f"{type(exc).__name__}")
        if verdict.reason == "auto":
            self._count_exempt(now, client, "auto")
            return verdict
        self.counters.hit(now, "decision", verdict.reason)
        if log.isEnabledFor(logging.INFO):
            self._log_decision(client, snd, rcpt, verdict)
        return verdict

    @staticmethod
    def _log_decision(client: Client, snd: str, rcpt: str, verdict: Verdict) -> None:
        # One line per decision (read by ``passerelle metrics`` and the daily report).
        log.info(
            "%s",
            decisionlog.greylist_decision(
                verdict.accept, client.ip, client.group, snd, rcpt, verdict.reason, verdict.delay
            ),
        )

    def _store_check(self, t: Triplet, now: float, auto: bool | None) -> Verdict:
        threshold = self.cfg.auto_whitelist_after
        if threshold > 0 and auto is None:
            st = self.store.client_status(t.client)
            auto = st is not None and auto_whitelisted(st[0], st[1], now, threshold)
            if auto:
                return Verdict(True, "auto", auto=True)
        out = self.store.decide(t, now, self.timing)
        if out.accept and threshold > 0:
            self.store.client_pass(t.client, now, now + self.timing.pass_ttl)
        if out.accept:
            return Verdict(True, out.reason, delay=out.delay, auto=auto)
        return Verdict(False, out.reason, reply=GREYLIST_REPLY, auto=auto)

    def _store_failed(self, now: float, client: Client, why: str) -> Verdict:
        self.counters.hit(now, "decision", "store-error")
        if self.cfg.on_store_error == "tempfail":
            log.warning("%s", decisionlog.greylist_store_error(client.ip, why, tempfail=True))
            return Verdict(False, "store-error", detail=why, reply=STORE_ERROR_REPLY)
        log.warning("%s", decisionlog.greylist_store_error(client.ip, why, tempfail=False))
        return Verdict(True, "store-error", detail=why, skipped=True)

    def _count_exempt(self, now: float, client: Client, why: str) -> None:
        reason = why.split(" ", 1)[0]
        self.counters.hit(now, "decision", reason)
        who = client.ip if not client.hostname else f"{client.ip} {client.hostname}"
        self.counters.hit(now, "whitelisted", f"{who} ({why})")
        if log.isEnabledFor(logging.INFO):
            log.info("%s", decisionlog.greylist_exempt(client.ip, client.group, reason))

    def _run(self, fn: Callable[..., object], *args: object) -> object:
        """Run ``fn`` on a store worker (or, serial store, here); wait at most store_timeout."""
        if self._serial:
            return self._run_here(fn, *args)
        fut = self._pool.submit(self._guarded, fn, *args)
        try:
            return fut.result(timeout=self.cfg.store_timeout)
        except concurrent.futures.TimeoutError:
            fut.cancel()
            raise TimeoutError(f"store did not answer within {self.cfg.store_timeout:g}s") from None

    def _run_here(self, fn: Callable[..., object], *args: object) -> object:
        """Serial store: one call at a time in this thread, the same bound on the wait."""
        timeout = self.cfg.store_timeout
        lock = self.store.lock
        if not lock.acquire(timeout=timeout):
            raise TimeoutError(f"store did not answer within {timeout:g}s")
        try:
            self.store.deadline = time.monotonic() + timeout  # type: ignore[attr-defined]
            try:
                return fn(*args)
            except Exception:
                self.store.discard()  # a broken connection is not reused
                raise
        finally:
            self.store.deadline = 0.0  # type: ignore[attr-defined]
            lock.release()

    def _guarded(self, fn: Callable[..., object], *args: object) -> object:
        try:
            return fn(*args)
        except Exception:
            self.store.discard()  # a broken connection is not reused
            raise

    # -- headers -----------------------------------------------------------------------
    def delayed_header(self, delay: float) -> tuple[str, str]:
        d = round(delay)
        return DELAYED_HEADER, f"{format_duration(d)} ({d} s) by {self.cfg.hostname}"

    def skipped_header(self) -> tuple[str, str]:
        return SKIPPED_HEADER, f"skipped (store unavailable) by {self.cfg.hostname}"

    # -- background: counters and whitelist table ------------------------------------
    def flush_counters(self) -> int:
        rows = self.counters.drain()
        if not rows:
            return 0
        try:
            self._run(self.store.add_stats, rows)
        except Exception as exc:
            self.counters.restore(rows)
            log.warning("cannot write greylist counters: %s", exc or type(exc).__name__)
            return 0
        return len(rows)

    def maintain_store(self) -> None:
        """Store upkeep (SQLite: keep the WAL bounded)."""
        try:
            self._run(self.store.maintain)
        except Exception as exc:
            log.warning("greylist store upkeep failed: %s", exc or type(exc).__name__)

    def start_background(self) -> None:
        def loop() -> None:
            last_wl = 0.0
            while not self._stop.wait(self.cfg.stats_flush):
                self.flush_counters()
                self.maintain_store()
                if time.monotonic() - last_wl >= self.cfg.whitelist_refresh:
                    try:
                        self.refresh_whitelist()
                    except Exception as exc:
                        log.warning("cannot read the whitelist table: %s", exc or "timeout")
                    last_wl = time.monotonic()

        try:
            self.refresh_whitelist()
        except Exception as exc:
            log.warning("cannot read the whitelist table: %s", exc or "timeout")
        self._bg = threading.Thread(target=loop, name="greylist-background", daemon=True)
        self._bg.start()
        self.store.start_checkpointer()

    def close(self) -> None:
        self._stop.set()
        if self._bg is not None:
            self._bg.join(timeout=5)
        self.flush_counters()
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.store.close()
