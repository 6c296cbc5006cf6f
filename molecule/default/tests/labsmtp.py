"""Helpers for the molecule verify step: run commands and SMTP dialogs in lab containers.

The containers are named ``<PASSERELLE_LAB_PREFIX><host>`` (``mol-gw1``...). SMTP dialogs run
*inside* a container (``outside`` plays the internet) with Python's smtplib, so what is tested
is what a real client on that network sees.
"""

from __future__ import annotations

import email
import email.message
import email.policy
import functools
import json
import mailbox
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import testinfra.backend.podman
import yaml

PREFIX = os.environ.get("PASSERELLE_LAB_PREFIX", "mol-")
NET = os.environ.get("PASSERELLE_LAB_NET", "10.89.78")
LAB_DOMAIN = "lab.passerelle.test"
PROJECT = Path(__file__).resolve().parents[3]
# The hosts of the scenario under test, as its molecule.yml names them (PASSERELLE_LAB_HOSTS,
# comma-separated); unset: the whole lab. A leaner scenario (trixie) runs the same test files:
# their host lists keep the hosts it has (present), and a test that needs a host it does not
# have is skipped with the reason shown in the report (needs; the scenario runs pytest -rs).
SCENARIO_HOSTS = frozenset(h for h in os.environ.get("PASSERELLE_LAB_HOSTS", "").split(",") if h)


def present(*hosts: str) -> list[str]:
    """The given hosts that this scenario has, in their order."""
    return [h for h in hosts if not SCENARIO_HOSTS or h in SCENARIO_HOSTS]


def needs(*hosts: str) -> pytest.MarkDecorator:
    """Skip (visibly) a test that needs a host this scenario does not have."""
    missing = sorted(set(hosts) - set(present(*hosts)))
    return pytest.mark.skipif(
        bool(missing), reason=f"needs {', '.join(missing)}: not in this scenario's fleet"
    )


# Runs inside a container: one SMTP dialog, every reply recorded, stops at the first 4xx/5xx.
# Its arguments come as JSON on stdin (a message can be larger than one argv string may be).
DIALOG = r"""
import json, smtplib, sys
a = json.loads(sys.stdin.read())
out = {"steps": []}
def step(name, code, msg):
    if isinstance(msg, bytes):
        msg = msg.decode("utf-8", "replace")
    out["steps"].append([name, code, msg])
    return code < 400
try:
    s = smtplib.SMTP(timeout=30, source_address=(a["source"], 0) if a.get("source") else None)
    code, msg = s.connect(a["server"], 25)
    if step("banner", code, msg):
        code, msg = s.ehlo(a.get("helo", "client.internet.test"))
        if step("ehlo", code, msg):
            code, msg = s.docmd("MAIL FROM:<%s>" % a["mail_from"])
            if step("mail", code, msg):
                ok_rcpt = 0
                for r in a["rcpts"]:
                    code, msg = s.docmd("RCPT TO:%s" % (r if r.startswith("<") else "<%s>" % r))
                    ok_rcpt += step("rcpt " + r, code, msg)
                if ok_rcpt and a.get("data") is not None:
                    code, msg = s.docmd("DATA")
                    if step("data", code, msg):
                        body = a["data"].replace("\r\n", "\n").replace("\n.", "\n..")
                        s.send(body.replace("\n", "\r\n").encode() + b"\r\n.\r\n")
                        code, msg = s.getreply()
                        step("eom", code, msg)
    try:
        s.quit()
    except Exception:
        pass
except Exception as exc:
    out["error"] = repr(exc)
print(json.dumps(out))
"""


@dataclass
class Dialog:
    steps: list[list]
    error: str | None = None

    def reply(self, name: str) -> tuple[int, str] | None:
        for step, code, msg in self.steps:
            if step == name or step.startswith(name + " "):
                return code, msg
        return None

    @property
    def last(self) -> tuple[str, int, str]:
        return tuple(self.steps[-1]) if self.steps else ("none", 0, self.error or "")

    @property
    def transcript(self) -> str:
        return "\n".join(f"{s}: {c} {m}" for s, c, m in self.steps) + (
            f"\nerror: {self.error}" if self.error else ""
        )


# Commands in the containers: entered with nsenter, as the lab's connection plugin does
# (connection_plugins/podman_lab.py: a `podman exec` costs about 0.35 s of CPU on these
# machines, and the verify steps make thousands: every testinfra command, every poll of a
# mailbox), with `podman exec` as the fallback (no nsenter, a container not running, or
# PASSERELLE_LAB_PODMAN_EXEC=1 in the environment).
_INIT: dict[str, tuple[int, str]] = {}  # container -> (init pid, container id)


@functools.cache
def _podman_lab() -> ModuleType:
    """The lab's connection plugin (its init-process check and namespaces: one definition)."""
    sys.path.insert(0, str(PROJECT / "tests"))
    from plugins import load

    return load(PROJECT / "connection_plugins" / "podman_lab.py")


def _init_pid(container: str) -> int | None:
    if os.environ.get("PASSERELLE_LAB_PODMAN_EXEC") or not shutil.which("nsenter"):
        return None
    plugin = _podman_lab()
    known = _INIT.get(container)
    if known and plugin.init_matches(*known):
        return known[0]
    res = subprocess.run(
        ["podman", "inspect", "--format", "{{.State.Pid}} {{.Id}}", container],
        capture_output=True,
        text=True,
        check=False,
    )
    try:
        pid_text, container_id = res.stdout.split()
        pid = int(pid_text)
    except ValueError:
        return None
    if res.returncode != 0 or pid <= 0 or not plugin.init_matches(pid, container_id):
        return None
    _INIT[container] = (pid, container_id)
    return pid


def container_run(
    container: str, argv: list[str], stdin: bytes | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[bytes]:
    """Run ``argv`` as root in ``container`` (what ``podman exec -i`` does, without its cost)."""
    pid = _init_pid(container)
    if pid is None:
        full = ["podman", "exec", "-i", container, *argv]
    else:
        environ = [
            e.decode("utf-8", "replace")
            for e in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            if e and not e.startswith(b"HOME=")
        ]
        namespaces = _podman_lab().NSENTER_NAMESPACES
        full = ["nsenter", f"--target={pid}", *namespaces, "--root", "--wd", "--"]
        full += ["env", "-i", *environ, "HOME=/root", *argv]
    return subprocess.run(
        full,
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        capture_output=True,
        timeout=timeout,
        check=False,
    )


class _LabPodmanBackend(testinfra.backend.podman.PodmanBackend):
    """testinfra's ``podman://`` hosts, through container_run (as root; another user: podman)."""

    def run(self, command: str, *args: str, **kwargs: Any) -> Any:
        if self.user is not None:
            return super().run(command, *args, **kwargs)
        cmd = self.get_command(command, *args)
        res = container_run(self.name, ["/bin/sh", "-c", cmd])
        out = self.result(res.returncode, self.encode(cmd), res.stdout, res.stderr)
        out.command = self.encode(cmd)
        return out


testinfra.backend.podman.PodmanBackend.run = _LabPodmanBackend.run  # type: ignore[method-assign]


def podman_exec(host: str, *cmd: str, stdin: str | None = None, check: bool = True) -> str:
    res = container_run(PREFIX + host, list(cmd), None if stdin is None else stdin.encode())
    if check and res.returncode != 0:
        err = res.stderr.decode("utf-8", "replace")
        raise AssertionError(f"{host}: {' '.join(cmd)} failed ({res.returncode}): {err}")
    return res.stdout.decode("utf-8", "replace")


def smtp(
    client: str,
    server: str,
    mail_from: str,
    rcpts: list[str],
    data: str | None = None,
    source: str | None = None,
    helo: str | None = None,
) -> Dialog:
    args = {"server": server, "mail_from": mail_from, "rcpts": rcpts, "data": data}
    if source:
        args["source"] = source
    if helo:
        args["helo"] = helo
    out = podman_exec(client, "python3", "-c", DIALOG, stdin=json.dumps(args))
    parsed = json.loads(out)
    return Dialog(parsed["steps"], parsed.get("error"))


def message(
    mail_from: str, to: str, tag: str | None = None, body: str = "Hello."
) -> tuple[str, str]:
    tag = tag or f"molecule-{uuid.uuid4().hex[:12]}"
    text = (
        f"From: <{mail_from}>\nTo: <{to}>\nSubject: Passerelle test {tag}\n"
        f"Message-ID: <{tag}@internet.test>\n\n{body}\n{tag}\n"
    )
    return tag, text


def mailbox_has(host: str, user: str, tag: str) -> bool:
    out = podman_exec(host, "sh", "-c", f"cat /var/mail/{user} 2>/dev/null || true")
    return tag in out


def wait_for_mail(host: str, user: str, tag: str, timeout: float = 90) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = podman_exec(host, "sh", "-c", f"cat /var/mail/{user} 2>/dev/null || true")
        if tag in out:
            return out
        time.sleep(1)
    raise AssertionError(f"{tag} not delivered to {user} on {host} within {timeout} s")


def delivered_message(
    host: str, user: str, tag: str, timeout: float = 120
) -> email.message.EmailMessage:
    """The message carrying ``tag`` in ``user``'s mailbox on ``host``, once delivered."""
    box = wait_for_mail(host, user, tag, timeout=timeout)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mbox"
        path.write_text(box)
        for msg in mailbox.mbox(path, create=False):
            raw = msg.as_bytes()
            if tag.encode() in raw:
                return email.message_from_bytes(raw, policy=email.policy.default)
    raise AssertionError(f"{tag} not found in the mailbox of {user}")


def main_pid(host: str, unit: str = "sendmail") -> int:
    return int(podman_exec(host, "systemctl", "show", "-p", "MainPID", "--value", unit).strip())


# Run in a lab host by unix_socket_answers: connect to a unix socket, send the hex-coded
# bytes if any, print what comes back (or "connected"); any error is printed, never raised.
SOCKET_PROBE = """
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(3)
try:
    s.connect(sys.argv[1])
    if sys.argv[2]:
        s.sendall(bytes.fromhex(sys.argv[2]))
        print(s.recv(64).decode("latin-1"))
    else:
        print("connected")
except OSError as exc:
    print("error:", exc)
"""


def unix_socket_answers(host: str, path: str, send: bytes = b"", expect: str = "connected") -> bool:
    """Whether a daemon on ``host`` accepts a connection on the unix socket ``path`` now (and,
    with ``send``, answers it with ``expect`` in its reply).

    A socket file left by a crashed daemon is still there, and a daemon restarted by systemd
    after a crash (Restart=on-failure) is "activating" until it answers: a connection is the
    only sure sign.
    """
    out = podman_exec(host, "python3", "-c", SOCKET_PROBE, path, send.hex(), check=False)
    return expect in out


def wait_unix_socket(
    host: str,
    path: str,
    send: bytes = b"",
    expect: str = "connected",
    timeout: float = 60,
    interval: float = 0.5,
) -> None:
    """Wait until ``unix_socket_answers`` (same arguments) is true, at most ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not unix_socket_answers(host, path, send, expect):
        if time.monotonic() > deadline:
            raise AssertionError(f"nothing answers on {path} in {host} within {timeout} s")
        time.sleep(interval)


def wait_ldap_answers(host: str = "ldap1", timeout: float = 60) -> None:
    """Wait until slapd on ``host`` answers a search and listens on the LDAP port."""
    deadline = time.monotonic() + timeout
    search = ["ldapsearch", "-Q", "-LLL", "-Y", "EXTERNAL", "-H", "ldapi:///", "-s", "base"]
    while True:
        out = podman_exec(host, *search, "-b", "", "namingContexts", check=False)
        listening = podman_exec(host, "ss", "-Hltn", "sport = :389", check=False)
        if "namingContexts:" in out and "LISTEN" in listening:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"slapd on {host} does not answer: {out} {listening}")
        time.sleep(1)


def lab_playbook(
    limit: str,
    extra: dict,
    tmp_path: Path,
    *args: str,
    inventory: Path = PROJECT / "inventory/lab",
    playbook: str = "playbooks/lab/site.yml",
) -> tuple[dict, float]:
    """Run the lab's ``playbook`` (site.yml) on ``limit`` with ``extra`` vars (and ``args``) as
    an operator would; its JSON result (ansible.posix.json) and how long it took."""
    extra_file = tmp_path / f"extra-{limit.replace(',', '_').replace(':', '_')}.yml"
    extra_file.write_text(yaml.safe_dump(extra))
    env = dict(os.environ)
    env.pop("ANSIBLE_CALLBACKS_ENABLED", None)
    env.update(
        ANSIBLE_CONFIG=str(PROJECT / "ansible.cfg"),
        ANSIBLE_STDOUT_CALLBACK="ansible.posix.json",
    )
    t0 = time.monotonic()
    res = subprocess.run(
        [
            str(PROJECT / ".venv/bin/ansible-playbook"),
            "-i",
            str(inventory),
            str(PROJECT / playbook),
            "--limit",
            limit,
            "-e",
            f"@{extra_file}",
            *args,
        ],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    elapsed = time.monotonic() - t0
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return json.loads(res.stdout), elapsed


def changed_tasks(run: dict) -> dict[str, set[str]]:
    """The names of the tasks (and handlers) a run changed, per host."""
    changed: dict[str, set[str]] = {}
    for play in run["plays"]:
        for task in play["tasks"]:
            for host, result in task["hosts"].items():
                if result.get("changed"):
                    changed.setdefault(host, set()).add(task["task"]["name"])
    return changed
