"""The gateway's side of the console's connection-guard page: publish this gateway's
connection-guard state, carry out ``unblock`` requests.

Blocks are per gateway (each gateway's state file and sendmail map), so the console files an
``unblock`` for each gateway that published a block of the address, and that gateway carries
it out with the guard's own ``connwatch.guard.unblock`` (state file under its lock, map
rebuilt, sendmail reloaded), as ``passerelle connwatch unblock IP`` does.

Published (row ``connguard:GATEWAY``): the blocks read with the guard's own
``connwatch.blocks.load_state``, the thresholds and window of its configuration
(``connwatch.guard.load_config``), the last run's status line (the Nagios line of
``connwatch.alerts``), and ``over``: the clients over the alert threshold in the last run, as
that run wrote them (``connwatch.over``: ip, count, decision; the run's time, window and
whether the counts are the fleet's), read bounded; ``{"not_yet": true}`` while no run has
written the file (after an install or an upgrade, until the guard's next run); when it cannot
be read (unreadable, too large, of another shape) ``{"unknown": why}``. Either way the rest is
published all the same.
"""

from __future__ import annotations

import logging
from typing import Any

from passerelle.console.gateway import Refused
from passerelle.console.published import PublishedState
from passerelle.console.requests import Request
from passerelle.console.targets import unblock_target

log = logging.getLogger("passerelle.console.connguard_side")

PREFIX = "connguard:"
STATUS_MAX = 4096  # bytes of the status file read


class UnblockRefused(Refused):
    """An unblock this gateway cannot carry out; the message is its result."""


def _status_line(path: str) -> str:
    try:
        with open(path, "rb") as fh:
            lines = fh.read(STATUS_MAX).decode("utf-8", "replace").splitlines()
    except OSError:
        return ""
    return lines[0] if lines else ""


def _over(path: str) -> dict[str, Any]:
    """The last run's over file, ``{"not_yet": True}`` when no run wrote it yet, or
    ``{"unknown": why}``; never raises."""
    from passerelle.connwatch.over import OverFileError, OverFileMissing, read_over

    try:
        return read_over(path)
    except OverFileMissing:
        return {"not_yet": True}
    except OverFileError as exc:
        return {"unknown": str(exc)}
    except Exception as exc:  # contained: the blocks are still published
        log.exception("connection guard: %s not read", path)
        return {"unknown": f"{path}: not read ({type(exc).__name__})"}


def connguard_body(cfg: Any) -> dict[str, Any]:
    """This gateway's guard state (``cfg``: a ``connwatch.guard.Config``); raises
    ``connwatch.blocks.BlockError`` when the state file cannot be read."""
    from passerelle.connwatch.blocks import load_state

    blocks = sorted(load_state(cfg.state).values(), key=lambda b: b.expires)
    return {
        "direction": cfg.direction,
        "window": cfg.window,
        "alert_threshold": cfg.alert_threshold,
        "block_threshold": cfg.block_threshold,
        "block_for": cfg.block_for,
        "blocking": cfg.block,
        "status": _status_line(cfg.status_file),
        "over": _over(cfg.over_file),
        "blocks": [
            {
                "ip": b.ip,
                "count": b.count,
                "since": b.since,
                "expires": b.expires,
                "reason": b.reason,
            }
            for b in blocks
        ],
    }


def publish_connguard(cfg: Any, state: PublishedState, gateway: str, now: float) -> None:
    state.publish(PREFIX + gateway, gateway, connguard_body(cfg), now)


def unblock_request(cfg: Any, req: Request, deps: Any = None) -> str:
    """Carry out one ``unblock`` with the guard's own ``unblock``; the result text."""
    from passerelle.connwatch.blocks import BlockError
    from passerelle.connwatch.guard import unblock

    try:
        ip = unblock_target(req.target)
    except ValueError as exc:
        raise UnblockRefused(str(exc)) from None
    try:
        done = unblock(cfg, ip, deps)
    except BlockError as exc:
        raise UnblockRefused(f"{ip} not unblocked: {exc}") from None
    if not done:
        raise UnblockRefused(f"{ip} is not blocked on this gateway")
    return f"ok: {ip} unblocked"
