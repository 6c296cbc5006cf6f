"""The console's own Nagios check (``passerelle check console``, run by NRPE on the console's
host): the console answers, its database is readable, every gateway's side is alive.

- The console's listener (``listen`` of console.toml, 127.0.0.1:8025 by default) answers
  ``GET /login`` with 200 within the timeout (Apache strips ``url_prefix`` before it proxies,
  so the listener's own paths have none): CRITICAL otherwise (the service is down or hung;
  Apache in front of it would answer 502).
- The console's database: the gateways' last reports (``console_gateway_status``) and the
  open requests (``console_requests``) are read with the console's own configuration; an
  unreachable database is CRITICAL (every page needs it).
- A gateway whose last report is older than ``stale`` (3 minutes: the fleet page's "stale")
  is WARNING, older than ``critical`` CRITICAL: its gateway-sync timer stopped, so nothing it
  quarantines reaches the console and the console's requests to it wait. No gateway reported
  at all is WARNING.
- A request (release, delete, rescan, outbreak, whitelist, unblock) still open (pending or
  claimed) after ``request_age`` is WARNING: no gateway carries it out.

The decision (``console_result``) is pure; the probes around it take their addresses,
timeouts and clock as arguments.
"""

from __future__ import annotations

import http.client
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from passerelle.supervision.checks import CRITICAL, OK, UNKNOWN, WARNING, Result

STALE = 180.0  # seconds: the fleet page's "stale" (3 passes of the minutely timer)
CRITICAL_STALE = 900.0
REQUEST_AGE = 300.0
HTTP_TIMEOUT = 10.0
NAMES_SHOWN = 5  # gateways named in the status line


@dataclass(frozen=True)
class Observed:
    """What the probes found: the login page's HTTP status (or why there was none), each
    gateway's report time, and the open requests (count, oldest request time)."""

    http: int | str
    reports: Sequence[tuple[str, float]] = ()
    open_requests: int = 0
    oldest_open: float | None = None
    database: str = ""  # why the database could not be read ("": it was)


def _names(items: Sequence[str]) -> str:
    shown = ", ".join(items[:NAMES_SHOWN])
    more = len(items) - NAMES_SHOWN
    return f"{shown} and {more} more" if more > 0 else shown


def _age(seconds: float) -> str:
    s = int(max(0.0, seconds))
    return f"{s // 60} min" if s >= 120 else f"{s} s"


def console_result(
    seen: Observed,
    now: float,
    stale: float = STALE,
    critical: float = CRITICAL_STALE,
    request_age: float = REQUEST_AGE,
) -> Result:
    """The Nagios state of the console from what the probes found."""
    if not 0 < stale <= critical:
        return Result(
            UNKNOWN, f"stale ({stale}) must be positive and at most critical ({critical})"
        )
    problems: list[tuple[int, str]] = []
    if seen.http != 200:
        why = f"HTTP {seen.http}" if isinstance(seen.http, int) else seen.http
        problems.append((CRITICAL, f"the console does not answer its login page ({why})"))
    if seen.database:
        problems.append((CRITICAL, f"its database cannot be read ({seen.database})"))
    else:
        ages = [(gw, now - at) for gw, at in seen.reports]
        dead = [gw for gw, age in ages if age > critical]
        late = [gw for gw, age in ages if stale < age <= critical]
        if not ages:
            problems.append((WARNING, "no gateway has reported yet"))
        if dead:
            problems.append((CRITICAL, f"no report for over {_age(critical)} from {_names(dead)}"))
        if late:
            problems.append((WARNING, f"no report for over {_age(stale)} from {_names(late)}"))
        if seen.open_requests and seen.oldest_open is not None:
            waiting = now - seen.oldest_open
            if waiting > request_age:
                problems.append(
                    (
                        WARNING,
                        f"{seen.open_requests} request(s) open, the oldest for {_age(waiting)}",
                    )
                )
    fresh = sum(1 for _gw, at in seen.reports if now - at <= stale)
    perf = (
        f"gateways={len(seen.reports)} fresh={fresh} open_requests={seen.open_requests}"
        if not seen.database
        else ""
    )
    if problems:
        state = max(s for s, _t in problems)
        return Result(state, "; ".join(t for _s, t in problems), perf)
    return Result(
        OK,
        f"answering; {fresh} gateway(s) reporting; {seen.open_requests} request(s) open",
        perf,
    )


def probe_http(host: str, port: int, path: str, timeout: float = HTTP_TIMEOUT) -> int | str:
    """The HTTP status of ``GET path`` on the console's listener, or why there is none."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"User-Agent": "passerelle check console"})
        resp = conn.getresponse()
        resp.read(65536)
        return int(resp.status)
    except (OSError, http.client.HTTPException) as exc:
        return f"{exc.__class__.__name__}: {exc}"[:200]
    finally:
        conn.close()


def read_database(connect: Callable[[], Any]) -> tuple[list[tuple[str, float]], int, float | None]:
    """The gateways' report times and the open requests (count, oldest) from the console's
    database; raises what the driver raises when it cannot be read."""
    from passerelle.console.gateway_status import GatewayStatusTable
    from passerelle.console.requests import RequestTable

    conn = connect()
    try:
        count, oldest = RequestTable(conn).open_requests()
        return GatewayStatusTable(conn).report_times(), count, oldest
    finally:
        conn.close()


def check_console(
    config_path: str,
    now: Callable[[], float],
    stale: float = STALE,
    critical: float = CRITICAL_STALE,
    request_age: float = REQUEST_AGE,
    timeout: float = HTTP_TIMEOUT,
) -> Result:
    """Probe the console of this configuration file and judge it."""
    from passerelle.config import ConfigError
    from passerelle.console.server import connection_factory, load_config

    try:
        cfg = load_config(config_path)
    except (ConfigError, OSError) as exc:
        return Result(UNKNOWN, f"configuration: {exc}")
    status = probe_http(cfg.host, cfg.port, "/login", timeout)
    try:
        reports, count, oldest = read_database(connection_factory(cfg.database, timeout))
        seen = Observed(status, reports, count, oldest)
    except Exception as exc:  # the driver's errors: unreachable, refused, no such table
        seen = Observed(status, database=f"{exc.__class__.__name__}: {exc}"[:200])
    return console_result(seen, now(), stale, critical, request_age)


__all__ = ["OK", "Observed", "check_console", "console_result", "probe_http", "read_database"]
