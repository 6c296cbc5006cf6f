"""Every mail host runs the sendmail the role built, under systemd, listening on port 25."""

import pytest
import testinfra
from labsmtp import PREFIX, podman_exec, present, unix_socket_answers

MAIL_HOSTS = present("gw1", "gw2", "smtpx1", "mailstore1", "mailstore2", "outside")


@pytest.fixture(params=MAIL_HOSTS)
def lab_host(request):
    return testinfra.get_host(f"podman://{PREFIX}{request.param}"), request.param


def test_sendmail_running_and_enabled(lab_host):
    host, _ = lab_host
    svc = host.service("sendmail")
    assert svc.is_running
    assert svc.is_enabled


def test_listens_on_smtp(lab_host):
    host, _ = lab_host
    assert host.socket("tcp://0.0.0.0:25").is_listening


def test_cf_is_built_from_passerelle_mc(lab_host):
    host, name = lab_host
    kind = {"gw1": "gateway", "gw2": "gateway", "smtpx1": "smtpx"}.get(name, "mailstore")
    cf = host.file("/etc/mail/sendmail.cf")
    assert cf.contains(f"Passerelle {kind}")
    assert host.run("/usr/local/sbin/passerelle-sendmail-check /etc/mail/sendmail.cf").rc == 0


def test_maps_are_built(lab_host):
    host, name = lab_host
    assert host.file("/etc/mail/access.db").exists
    if name in ("gw1", "gw2", "smtpx1"):
        assert host.file("/etc/mail/mailertable.db").exists
        assert (
            host.file("/etc/mail/mailertable.db").mtime >= host.file("/etc/mail/mailertable").mtime
        )


def test_sizing_from_profile():
    # The lab uses the small-2024 profile (2 cores, 4 GB): formulas in docs/sizing.md. On a
    # gateway sendmail gets 3/12 of the 2390 MB left after the fixed parts: 74 processes of
    # 8 MB, 8 of them queue runners.
    host = testinfra.get_host(f"podman://{PREFIX}gw1")
    cf = host.file("/etc/mail/sendmail.cf").content_string
    assert "O MaxDaemonChildren=66" in cf
    # Load thresholds: overridden in the lab (its containers share the machine's load).
    assert "O QueueLA=100" in cf
    assert "O RefuseLA=150" in cf
    assert "O ConnectionRateThrottle=100" in cf
    # A burst of connections waits in the listen queue (sendmail's default is 10).
    listen = host.check_output("ss -Hltn 'sport = :25'").split()
    assert listen[0] == "LISTEN" and listen[2] == "256", listen


# Run in gw1: connect to 127.0.0.1 on the port given, send the (hex-coded) bytes if any, and
# print the first line of the answer (or the error).
FIRST_LINE_PROBE = """
import socket, sys
try:
    with socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10) as s:
        s.sendall(bytes.fromhex(sys.argv[2]))
        print(s.makefile("rb").readline().decode("latin-1").strip())
except OSError as exc:
    print("error:", exc)
"""

# The daemons that reload by executing themselves again on SIGHUP: the port they answer on,
# what they are sent there, the first line they answer, where they log and what says reloaded.
REEXEC_DAEMONS = {
    "sendmail": (25, b"", "220 ", ["-t", "sm-mta"], "due to signal"),
    "spamd": (783, b"PING SPAMC/1.5\r\n\r\n", "SPAMD/1.5 0 PONG", ["-u", "spamd"], "hit by SIGHUP"),
}


@pytest.mark.parametrize("unit", list(REEXEC_DAEMONS))
def test_a_reload_right_after_a_restart_keeps_the_daemon_serving(unit):
    """sendmail and spamd handle SIGHUP only once they serve: a reload in a start's first
    moments (a restart handler, then the resolver's reload in the same run) ended them, systemd
    took that for a clean exit, and they stayed down until the process watch (60 to 120 s).
    Their reload now waits until they handle the signal, and returns once the daemon, executed
    again, listens again: even two reloads in a row keep it serving."""
    port, send, greeting, journal, reloaded = REEXEC_DAEMONS[unit]
    cursor = (
        podman_exec("gw1", "journalctl", "-n", "0", "--show-cursor", "-q")
        .split("cursor:", 1)[1]
        .strip()
    )
    restarts = podman_exec("gw1", "systemctl", "show", "-p", "NRestarts", "--value", unit).strip()
    podman_exec(
        "gw1",
        "sh",
        "-c",
        f"systemctl restart {unit} && systemctl reload {unit} && systemctl reload {unit}",
    )
    shown = podman_exec("gw1", "systemctl", "show", "-p", "ActiveState,NRestarts", unit)
    state = dict(line.split("=", 1) for line in shown.split())
    assert state == {"ActiveState": "active", "NRestarts": restarts}, shown
    answer = podman_exec("gw1", "python3", "-c", FIRST_LINE_PROBE, str(port), send.hex())
    assert answer.startswith(greeting), f"{unit} right after its reloads: {answer}"
    log = podman_exec("gw1", "journalctl", f"--after-cursor={cursor}", *journal, "-o", "cat")
    # (the connection guard's timer may reload sendmail too meanwhile)
    assert log.count(reloaded) >= 2, f"{unit} not reloaded twice: {log}"


# The Passerelle daemons sendmail asks on a gateway, and the socket each listens on. The
# route daemon runs where a domain is LDAP-routed: the fleets with the directory (ldap1; the
# trixie scenario's gateway has only a static domain, and no such unit).
GATEWAY_DAEMONS = {
    "passerelle-greylist": "/run/passerelle/greylist.sock",
    "passerelle-antivirus": "/run/passerelle/antivirus.sock",
    "passerelle-spam": "/run/passerelle/spam.sock",
}
if present("ldap1"):
    GATEWAY_DAEMONS["passerelle-route"] = "/run/passerelle/route.sock"


@pytest.mark.parametrize("unit", list(GATEWAY_DAEMONS))
def test_a_daemon_answers_as_soon_as_systemd_says_started(unit):
    """Type=notify: the daemon tells systemd READY=1 once its socket listens, so sendmail
    (ordered after it) starts when it answers, and a restart returns when it answers again:
    no probe, no wait, right after ``systemctl restart``."""
    assert podman_exec("gw1", "systemctl", "show", "-p", "Type", "--value", unit).strip() == (
        "notify"
    )
    podman_exec("gw1", "systemctl", "restart", unit)
    assert unix_socket_answers("gw1", GATEWAY_DAEMONS[unit]), f"{unit} started but not answering"
