"""Lab connection: containers.podman.podman with pipelining, entering the container directly.

The collection's plugin turns pipelining off because ``podman exec`` without ``-i`` does not
pass standard input; it also runs ``podman mount`` for every task. Each ``podman`` call costs
about 0.35 s on these 2-core machines (measured: 20 ``podman exec ... true`` in 7.3 s, 20
``nsenter ... true`` in 0.13 s), and a converge of the lab makes a few thousand of them.

So this plugin runs a module with ``nsenter`` into the namespaces (mount and root, UTS, IPC,
network, PID) of the container's init process, with that process's environment (what
``podman exec`` gives), under ``setpriv`` for another user (``ansible_user``: the lab's gw2
reached as ``deploy`` with sudo); files go through ``/proc/<pid>/root``. The init process is
found once with ``podman inspect`` and remembered in a small file, trusted only while that
process is still the init (PID 1 in its namespace) of the same container (its
``container_uuid``); a recreated container is looked up again. Where ``nsenter`` is missing or
the container does not run, it falls back to ``podman exec -i`` (the previous behaviour; also
with ``PASSERELLE_LAB_PODMAN_EXEC=1`` in the environment, to compare).

The modules' processes are not in the container's cgroup (resource limits and accounting):
the lab's convergence only, the services are started by the container's systemd as before.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from ansible.errors import AnsibleError
from ansible.module_utils.common.text.converters import to_bytes, to_native
from ansible_collections.containers.podman.plugins.connection.podman import (
    DOCUMENTATION as _PODMAN_DOCUMENTATION,
)
from ansible_collections.containers.podman.plugins.connection.podman import (
    Connection as PodmanConnection,
)

DOCUMENTATION = _PODMAN_DOCUMENTATION.replace("name: podman", "name: podman_lab", 1).replace(
    "short_description: Interact with an existing podman container",
    "short_description: Podman container connection with pipelining (Passerelle lab)",
    1,
)

NSENTER_NAMESPACES = ("--mount", "--uts", "--ipc", "--net", "--pid")


def _cache_dir() -> Path:
    return Path(tempfile.gettempdir()) / f"passerelle-lab-{os.getuid()}"


def init_matches(pid: int, container_id: str) -> bool:
    """Whether ``pid`` is still the init process (PID 1 inside) of container ``container_id``."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False
    nspid = [line.split()[1:] for line in status.splitlines() if line.startswith("NSpid:")]
    if not nspid or nspid[0][-1] != "1":
        return False
    return f"container_uuid={container_id[:32]}".encode() in environ


class Connection(PodmanConnection):
    transport = "podman_lab"
    has_pipelining = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._init_pid: int | None = None

    # -- finding the container's init process ---------------------------------------------
    def _cached_pid(self) -> int | None:
        cache = _cache_dir() / f"init-{self._container_id}"
        try:
            pid_text, container_id = cache.read_text().split()
            if init_matches(int(pid_text), container_id):
                return int(pid_text)
        except (OSError, ValueError):
            pass
        rc, out, _ = self._podman(
            "inspect", ["--format", "{{.State.Pid}} {{.Id}}"], use_container_id=True
        )
        try:
            pid_text, container_id = to_native(out).split()
            pid = int(pid_text)
        except ValueError:
            return None
        if rc != 0 or pid <= 0 or not init_matches(pid, container_id):
            return None
        cache.parent.mkdir(mode=0o700, exist_ok=True)
        tmp = cache.with_name(f"{cache.name}.{os.getpid()}")
        tmp.write_text(f"{pid} {container_id}\n")
        tmp.replace(cache)
        return pid

    def _connect(self) -> None:
        if self._connected:
            return
        if shutil.which("nsenter") and not os.environ.get("PASSERELLE_LAB_PODMAN_EXEC"):
            self._init_pid = self._cached_pid()
        if self._init_pid is None:
            super()._connect()  # podman mount, then podman exec for each command
            return
        self._mount_point = f"/proc/{self._init_pid}/root".encode()  # bytes, as the parent's
        self._connected = True

    # -- running commands -----------------------------------------------------------------
    def _nsenter(
        self, args: list[str], in_data: bytes | None, as_root: bool = False
    ) -> tuple[int, bytes, bytes]:
        pid = self._init_pid
        user_name = None if as_root else self.user
        environ = [
            to_native(e)
            for e in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            if e and not e.startswith(b"HOME=")
        ]
        home = "/root"
        user = []
        if user_name:
            user = ["setpriv", f"--reuid={user_name}", f"--regid={user_name}", "--init-groups"]
            home = self._home_of(user_name)
        cmd = [
            "nsenter",
            f"--target={pid}",
            *NSENTER_NAMESPACES,
            "--root",
            "--wd",
            "--",
            "env",
            "-i",
            *environ,
            f"HOME={home}",
            *([f"USER={user_name}", f"LOGNAME={user_name}"] if user_name else []),
            *user,
            *args,
        ]
        p = subprocess.run(
            [to_bytes(c, errors="surrogate_or_strict") for c in cmd],
            input=in_data,
            capture_output=True,
            check=False,
        )
        return p.returncode, p.stdout, p.stderr

    def _home_of(self, user: str) -> str:
        try:
            for line in Path(f"/proc/{self._init_pid}/root/etc/passwd").read_text().splitlines():
                fields = line.split(":")
                if len(fields) >= 6 and fields[0] == user:
                    return fields[5]
        except OSError:
            pass
        return "/"

    def exec_command(
        self, cmd: str, in_data: bytes | None = None, sudoable: bool = False
    ) -> tuple[int, bytes, bytes]:
        if not self._connected:
            self._connect()
        # ConnectionBase.exec_command only logs; skip the parent's stdin-less exec.
        args = shlex.split(to_native(cmd, errors="surrogate_or_strict"))
        if self._init_pid is not None:
            return self._nsenter(args, in_data)
        exec_args: list[Any] = ["exec"]
        if in_data is not None:
            exec_args.append("-i")
        if self.user:
            exec_args.extend(("--user", self.user))
        return self._podman(exec_args, args, in_data)

    # -- files: the parent copies through _mount_point (here /proc/<pid>/root) -------------
    def put_file(self, in_path: str, out_path: str) -> None:
        if not self._connected:
            self._connect()
        if self._init_pid is None or not self.user:
            super().put_file(in_path, out_path)
            return
        # Another user: the parent would use podman cp and chown; the same through /proc.
        target = f"/proc/{self._init_pid}/root{out_path}"
        shutil.copyfile(in_path, target)
        rc, _, err = self._nsenter(["chown", self.user, out_path], None, as_root=True)
        if rc != 0:
            raise AnsibleError(f"Failed to chown {out_path} for {self.user}: {to_native(err)}")
