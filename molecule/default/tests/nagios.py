"""Reading Nagios's own view of the lab (status.dat on mon1) and forcing checks."""

from __future__ import annotations

import time

from labsmtp import podman_exec

MON = "mon1"
STATUS = "/var/lib/nagios4/status.dat"
CMD = "/var/lib/nagios4/rw/nagios.cmd"


def parse_status(text: str) -> tuple[dict[str, dict], dict[tuple[str, str], dict]]:
    """status.dat -> (hosts by name, services by (host, description))."""
    hosts: dict[str, dict] = {}
    services: dict[tuple[str, str], dict] = {}
    block: dict[str, str] | None = None
    kind = ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.endswith("{"):
            kind, block = line[:-1].strip(), {}
        elif line == "}" and block is not None:
            if kind == "hoststatus":
                hosts[block["host_name"]] = block
            elif kind == "servicestatus":
                services[(block["host_name"], block["service_description"])] = block
            block = None
        elif block is not None and "=" in line:
            k, v = line.split("=", 1)
            block[k] = v
    return hosts, services


def status() -> tuple[dict[str, dict], dict[tuple[str, str], dict]]:
    return parse_status(podman_exec(MON, "cat", STATUS))


def external_command(cmd: str) -> None:
    line = f"[{int(time.time())}] {cmd}\n"
    podman_exec(MON, "sh", "-c", f"cat > {CMD}", stdin=line)


def force_host_checks(host: str) -> float:
    """Schedule every service of ``host`` and the host itself now; returns the time asked."""
    now = time.time()
    external_command(f"SCHEDULE_FORCED_HOST_SVC_CHECKS;{host};{int(now)}")
    external_command(f"SCHEDULE_FORCED_HOST_CHECK;{host};{int(now)}")
    return now


def force_service_check(host: str, service: str) -> float:
    now = time.time()
    external_command(f"SCHEDULE_FORCED_SVC_CHECK;{host};{service};{int(now)}")
    return now


def wait_service(
    host: str, service: str, want: set[int], since: float, timeout: float = 120
) -> dict:
    """Wait for a check of (host, service) done after ``since`` with a state in ``want``
    (0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN); re-forces the check while waiting."""
    deadline = time.monotonic() + timeout
    last: dict = {}
    while time.monotonic() < deadline:
        _, services = status()
        last = services.get((host, service), {})
        if last and int(last.get("last_check", 0)) >= int(since):
            if int(last["current_state"]) in want:
                return last
            # A fresh result, not the one wanted yet: ask again.
            since = force_service_check(host, service)
        time.sleep(3)
    raise AssertionError(
        f"{host}/{service}: state {last.get('current_state')} "
        f"({last.get('plugin_output')!r}), wanted {want} within {timeout} s"
    )
